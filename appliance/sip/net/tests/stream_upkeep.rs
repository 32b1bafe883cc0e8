//! Connection upkeep over real loopback sockets: RFC 5626 CRLF pings on an idle connection
//! we opened to a TCP trunk (and closing it as failed, failing its call, when a peer that
//! answered pings stops), closing an idle inbound connection, and the cap on inbound
//! connections per source address. The peers are plain TCP sockets driven by the test, so
//! it can see and withhold each keep-alive byte.

mod support;

use callgate_sip::agent::UserAgent;
use callgate_sip::framing::{StreamFramer, StreamItem};
use callgate_sip::header::Transport;
use callgate_sip::trunk::router::{DialEvent, OutboundRouter, RouterConfig};
use callgate_sip::trunk::TrunkGroup;
use callgate_sip_net::{EndpointConfig, SipEndpoint, StreamPolicy};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Generous: the machine may be loaded; nothing here asserts on speed.
const WAIT: Duration = Duration::from_secs(60);

/// Reads from `s` until the framer yields an item (or the peer closes: `None`).
async fn next_item(s: &mut TcpStream, framer: &mut StreamFramer) -> Option<StreamItem> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(item) = framer.next_item() {
            return Some(item.expect("the endpoint writes well-framed SIP"));
        }
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .expect("the endpoint writes or closes in time")
            .unwrap_or(0);
        if n == 0 {
            return None;
        }
        framer.push(&buf[..n]);
    }
}

#[tokio::test]
async fn an_idle_trunk_connection_is_pinged_and_closed_as_failed_when_its_pongs_stop() {
    let carrier = TcpListener::bind((v4(), 0)).await.unwrap();
    let trunk_addr = carrier.local_addr().unwrap();
    let cfg = EndpointConfig {
        udp: vec![SocketAddr::new(v4(), 0)],
        streams: StreamPolicy {
            ping_interval: Some(Duration::from_millis(300)),
            pong_timeout: Duration::from_millis(300),
            idle_timeout: None,
            max_per_source: 16,
        },
        ..EndpointConfig::default()
    };
    let router_cfg = RouterConfig {
        probe: None,
        answer_wait: Duration::from_secs(600),
        ..RouterConfig::default()
    };
    let mut ep = SipEndpoint::start(cfg, move |bound| {
        let ua = UserAgent::new(agent_config(bound.udp[0]));
        let group = TrunkGroup::new(vec![trunk("tcp", trunk_addr, 0)]);
        let mut r = OutboundRouter::new(ua, group, router_cfg, Instant::now(), 7);
        r.set_transport(trunk_addr, Transport::Tcp);
        r
    })
    .await
    .unwrap();
    let attempt = ep
        .with(|r, now| r.dial(now, "+15551230000", SDP.to_vec(), None))
        .await
        .unwrap();
    let (mut conn, _) = tokio::time::timeout(WAIT, carrier.accept())
        .await
        .unwrap()
        .unwrap();
    let mut framer = StreamFramer::new(65_535);
    // The INVITE, then (the carrier saying nothing) a ping.
    assert!(matches!(
        next_item(&mut conn, &mut framer).await,
        Some(StreamItem::Message(m)) if m.to_bytes().starts_with(b"INVITE ")
    ));
    assert_eq!(
        next_item(&mut conn, &mut framer).await,
        Some(StreamItem::Ping)
    );
    // A pong: the carrier has shown it answers pings; the connection stays.
    conn.write_all(b"\r\n").await.unwrap();
    assert_eq!(
        next_item(&mut conn, &mut framer).await,
        Some(StreamItem::Ping)
    );
    // This ping goes unanswered: the connection is closed and the call fails over (to no
    // other trunk, so it fails) without waiting the 600 s answer wait.
    assert_eq!(next_item(&mut conn, &mut framer).await, None);
    let event = tokio::time::timeout(WAIT, async {
        loop {
            match ep.next_event().await.expect("endpoint runs") {
                e @ DialEvent::Failed { .. } => return e,
                _ => continue,
            }
        }
    })
    .await
    .expect("the call fails once its connection is closed");
    assert!(
        matches!(&event, DialEvent::Failed { attempt: a, status: 503, .. } if *a == attempt),
        "{event:?}"
    );
    assert!(ep.connections().await.unwrap().is_empty());
}

async fn inbound_endpoint(streams: StreamPolicy) -> SipEndpoint<UserAgent> {
    let cfg = EndpointConfig {
        udp: vec![SocketAddr::new(v4(), 0)],
        tcp: vec![SocketAddr::new(v4(), 0)],
        streams,
        ..EndpointConfig::default()
    };
    SipEndpoint::start(cfg, |bound| UserAgent::new(agent_config(bound.udp[0])))
        .await
        .unwrap()
}

/// Pings the endpoint on `s` and reads its pong; false when the connection is closed.
async fn answers_ping(s: &mut TcpStream) -> bool {
    if s.write_all(b"\r\n\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 2];
    match tokio::time::timeout(WAIT, s.read_exact(&mut buf)).await {
        Ok(Ok(_)) => {
            assert_eq!(&buf, b"\r\n", "a pong");
            true
        }
        Ok(Err(_)) => false,
        Err(_) => panic!("no pong and no close within {WAIT:?}"),
    }
}

async fn closed_by_endpoint(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(WAIT, s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn an_idle_inbound_connection_is_closed_and_a_busy_one_is_kept() {
    let ep = inbound_endpoint(StreamPolicy {
        ping_interval: None,
        idle_timeout: Some(Duration::from_secs(2)),
        ..StreamPolicy::default()
    })
    .await;
    let listener = ep.bound().tcp[0];
    let mut idle = TcpStream::connect(listener).await.unwrap();
    let mut busy = TcpStream::connect(listener).await.unwrap();
    // The busy one pings every 100 ms for 5 s (2.5 idle timeouts): never closed.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        assert!(
            answers_ping(&mut busy).await,
            "a busy connection was closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(closed_by_endpoint(&mut idle).await);
    assert_eq!(ep.connections().await.unwrap().len(), 1);
}

#[tokio::test]
async fn inbound_connections_beyond_the_per_source_cap_are_refused_until_one_closes() {
    let ep = inbound_endpoint(StreamPolicy {
        max_per_source: 2,
        ..StreamPolicy::default()
    })
    .await;
    let listener = ep.bound().tcp[0];
    let mut first = TcpStream::connect(listener).await.unwrap();
    let mut second = TcpStream::connect(listener).await.unwrap();
    assert!(answers_ping(&mut first).await);
    assert!(answers_ping(&mut second).await);
    let mut third = TcpStream::connect(listener).await.unwrap();
    assert!(closed_by_endpoint(&mut third).await, "the third was kept");
    assert!(answers_ping(&mut first).await, "the first is not affected");
    drop(second);
    // Once the endpoint has seen the second close, a new one is admitted.
    let deadline = Instant::now() + WAIT;
    loop {
        let mut again = TcpStream::connect(listener).await.unwrap();
        if answers_ping(&mut again).await {
            break;
        }
        assert!(Instant::now() < deadline, "no room made by closing one");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
