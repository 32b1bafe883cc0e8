//! Desk phones over TCP: the agents' user agent started as the daemon starts it
//! (`start_agent_sip_on` with `[agents] sip_tcp_listen`) takes a SIPp phone's REGISTER
//! over TCP (`-t t1`, digest) and calls it back — the nailed-up leg — over TCP: the SIPp
//! phone has no UDP socket for SIP, so an answered call proves the transport.

mod sip_support;

use callgate_appliance::agents::lines::{start_agent_sip_on, PhoneListeners};
use callgate_appliance::sip::config::SipConfig;
use callgate_sip::agent::{AgentEvent, CallSpec};
use callgate_sip::uri::Uri;
use sip_support::{free_udp_port, scenario, Sipp};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const OFFER: &[u8] = b"v=0\r\no=branch 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_registered_over_tcp_is_called_over_tcp() {
    let settings = SipConfig::parse(
        "[sip]\nlisten = \"127.0.0.1:0\"\n\
         [[sip.trunks]]\nname = \"carrier\"\naddress = \"127.0.0.1:5999\"\n\
         max_channels = 1\nmax_cps = 1\n\
         [[sip.phones]]\nusername = \"desk1\"\npassword = \"password1\"\n",
    )
    .unwrap();
    let tcp = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let mut ua = start_agent_sip_on(
        &settings,
        PhoneListeners {
            tcp: Some(tcp),
            ..PhoneListeners::udp("127.0.0.1:0".parse().unwrap())
        },
        // SIPp's digest answers MD5 only.
        vec!["MD5".into()],
    )
    .await
    .unwrap();
    // The phone registers over TCP from its port, then answers there (over TCP only).
    let phone_port = free_udp_port();
    let register = Sipp::start_on(
        phone_port,
        &[
            "-sf",
            &scenario("agent_phone_register.xml"),
            &tcp.to_string(),
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
            "-m",
            "1",
        ],
    );
    let (ok, errors) = register.passed().await;
    assert!(ok, "the phone registered over TCP: {errors}");
    let phone = Sipp::start_on(
        phone_port,
        &["-sf", &scenario("phone_tcp.xml")],
        &["-t", "t1", "-s", "desk1", "-m", "1"],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let (contact, source) = loop {
        if let Some(b) = ua.bindings("desk1").await.unwrap().into_iter().next() {
            break b;
        }
        assert!(Instant::now() < deadline, "the phone's binding is gone");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        source.port(),
        phone_port,
        "registered from the phone's port"
    );
    // Give the answering SIPp time to listen.
    wait_listening(source).await;
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
    assert_eq!(answered, Ok(()), "the phone took the call over TCP");
    ua.hang_up(leg).unwrap();
    let (ok, errors) = phone.passed().await;
    assert!(
        ok,
        "the phone registered, answered and saw our BYE over TCP: {errors}"
    );
}
