//! Trunk host names through the system resolver (getaddrinfo: /etc/hosts, then DNS).

use callgate_sip::header::Transport;
use callgate_sip_net::{default_port, resolve, TransportError};
use std::net::SocketAddr;

#[tokio::test]
async fn a_name_resolves_to_its_addresses_with_the_given_or_default_port() {
    let addrs = resolve("localhost:5070", 5060).await.unwrap();
    assert!(
        addrs.contains(&"127.0.0.1:5070".parse::<SocketAddr>().unwrap()),
        "{addrs:?}"
    );
    let addrs = resolve("localhost", default_port(&Transport::Tls))
        .await
        .unwrap();
    assert!(addrs.iter().all(|a| a.port() == 5061), "{addrs:?}");
}

#[tokio::test]
async fn ip_literals_need_no_lookup() {
    assert_eq!(
        resolve("[::1]:5080", 5060).await.unwrap(),
        vec!["[::1]:5080".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(
        resolve("192.0.2.7", 5060).await.unwrap(),
        vec!["192.0.2.7:5060".parse::<SocketAddr>().unwrap()]
    );
}

#[tokio::test]
async fn a_name_that_does_not_resolve_is_a_clear_error_naming_it() {
    let e = resolve("no-such-carrier.invalid:5060", 5060)
        .await
        .unwrap_err();
    assert!(matches!(e, TransportError::Unresolved { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("\"no-such-carrier.invalid\"") && text.contains("does not resolve"),
        "{text}"
    );
}
