//! Desk phones over TLS: the agents' user agent started as the daemon starts it (the
//! appliance config loaded from a file, `[agents] sip_tls_listen` serving the box's
//! `[sip.tls]` certificate, `start_agent_sip_on` with `ValidAgents::phone_listeners`)
//! takes a phone's REGISTER over TLS and calls it back on that TLS connection.
//!
//! The phone is SIPp over TCP (Debian builds SIPp without TLS) behind socat, which speaks
//! TLS to us and checks our certificate against the test's CA. socat's TLS connection
//! leaves from a fixed port that the phone names in Via and Contact, as a TLS phone names
//! its own. Nothing listens for plain TCP or UDP there, so a call that went out over
//! anything but the phone's TLS connection would not reach it; and the phone checks that
//! the INVITE says TLS (top Via `SIP/2.0/TLS`, Contact `transport=tls`).

mod sip_support;

use callgate_appliance::agents::lines::start_agent_sip_on;
use callgate_appliance::config::ApplianceConfig;
use callgate_sip::agent::{AgentEvent, CallSpec};
use callgate_sip::uri::Uri;
use sip_support::{scenario, Sipp};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::Command;

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    sip_support::free_udp_port()
}

/// Waits until a socket listens on 127.0.0.1:`port`, without connecting to it (socat
/// serves one connection, which must be SIPp's).
async fn wait_listening_quietly(port: u16) {
    let needle = format!("0100007F:{port:04X} 00000000:0000 0A");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        if table.contains(&needle) {
            return;
        }
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const OFFER: &[u8] = b"v=0\r\no=branch 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_registered_over_tls_is_called_back_over_tls_on_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    // The box's certificate, which the test's socat trusts as its only CA.
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let agents_tls = free_tcp_port();
    let config = dir.path().join("appliance.toml");
    std::fs::write(
        &config,
        format!(
            "[sip]\nlisten = \"127.0.0.1:{}\"\n\
             [[sip.trunks]]\nname = \"carrier\"\naddress = \"127.0.0.1:5999\"\n\
             max_channels = 1\nmax_cps = 1\n\
             [[sip.phones]]\nusername = \"desk1\"\npassword = \"password1\"\n\
             [sip.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n\
             [agents]\nsip_listen = \"127.0.0.1:{}\"\nsip_tls_listen = \"127.0.0.1:{agents_tls}\"\n",
            free_udp_port(),
            cert.display(),
            key.display(),
            free_udp_port(),
        ),
    )
    .unwrap();
    let loaded = ApplianceConfig::load(Some(&config)).unwrap();
    let sip = loaded.sip.unwrap();
    let agents = loaded.agents.unwrap();
    let mut ua = start_agent_sip_on(
        &sip,
        agents.phone_listeners(),
        // SIPp's digest answers MD5 only.
        vec!["MD5".into()],
    )
    .await
    .unwrap();

    // SIPp (TCP) → socat :plain (one connection) → TLS from 127.0.0.1:phone_port → us.
    let plain = free_tcp_port();
    let phone_port = free_tcp_port();
    let _socat = Command::new("socat")
        .arg(format!("TCP-LISTEN:{plain},bind=127.0.0.1,reuseaddr"))
        .arg(format!(
            "OPENSSL:127.0.0.1:{agents_tls},bind=127.0.0.1:{phone_port},cafile={},commonname=localhost,verify=1",
            cert.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("socat is installed by scripts/setup");
    wait_listening_quietly(plain).await;
    let phone_port_text = phone_port.to_string();
    let phone = Sipp::start_on(
        free_tcp_port(),
        &[
            "-sf",
            &scenario("phone_tls_register.xml"),
            "-oocsf",
            &scenario("phone_tls_answer.xml"),
            &format!("127.0.0.1:{plain}"),
        ],
        &[
            "-t",
            "t1",
            "-s",
            "desk1",
            "-au",
            "desk1",
            "-ap",
            "password1",
            "-key",
            "tls_port",
            &phone_port_text,
            "-m",
            "1",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let (contact, source) = loop {
        if let Some(b) = ua.bindings("desk1").await.unwrap().into_iter().next() {
            break b;
        }
        assert!(Instant::now() < deadline, "the phone never registered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        source,
        SocketAddr::from(([127, 0, 0, 1], phone_port)),
        "registered from socat's TLS connection"
    );
    let leg = ua
        .place_call(CallSpec {
            ring_timeout: Some(Duration::from_secs(30)),
            ..CallSpec::new(Uri::parse(&contact).unwrap(), source, OFFER.to_vec())
        })
        .await
        .unwrap();
    let answered = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match ua.next_event().await {
                Some(AgentEvent::Answered { leg: l, .. }) if l == leg => return Ok(()),
                Some(AgentEvent::Failed {
                    leg: l,
                    status,
                    reason,
                }) if l == leg => return Err(format!("{status} {reason}")),
                Some(_) => {}
                None => return Err("the agent stopped".into()),
            }
        }
    })
    .await
    .expect("the phone answers within a minute");
    assert_eq!(answered, Ok(()), "the phone took the call over TLS");
    ua.hang_up(leg).unwrap();
    let (ok, errors) = phone.passed().await;
    assert!(
        ok && only_out_of_call_notices(&errors),
        "the phone registered, answered an INVITE that said TLS and saw our BYE: {errors}"
    );
}

/// Whether SIPp's errors.log holds nothing but its notices that the out-of-call scenario
/// took a request (a failed `check_it` match or anything else is written there too).
fn only_out_of_call_notices(errors: &str) -> bool {
    errors
        .replace("The following events occurred:", "")
        .replace(
            "Received out-of-call INVITE message, using the out-of-call scenario",
            "",
        )
        // What is left are the events' timestamps.
        .chars()
        .all(|c| c.is_ascii_digit() || c.is_whitespace() || "-:.".contains(c))
}
