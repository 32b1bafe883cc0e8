//! The receive paths (datagrams and framed stream messages are parsed on their own tasks,
//! beside the core): what they parse reaches the core, a request they cannot parse is still
//! answered 400 from its bytes (over UDP, and over TCP on its connection, which goes on),
//! and a dropped endpoint frees its port so a restart can bind it again.

mod support;

use callgate_sip::agent::UserAgent;
use callgate_sip_net::{EndpointConfig, SipEndpoint};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;
use support::*;

fn udp_on(port: u16) -> EndpointConfig {
    EndpointConfig {
        udp: vec![SocketAddr::new(v4(), port)],
        ..EndpointConfig::default()
    }
}

async fn agent_on(port: u16) -> SipEndpoint<UserAgent> {
    SipEndpoint::start(udp_on(port), |bound| {
        UserAgent::new(agent_config(bound.udp[0]))
    })
    .await
    .expect("the endpoint binds")
}

/// Sends `request` from a fresh socket to `to` and returns the first answer's start line.
fn ask(to: SocketAddr, request: &str) -> String {
    let client = UdpSocket::bind((v4(), 0)).expect("a client socket");
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a read timeout");
    let request = request.replace("CLIENT", &client.local_addr().unwrap().to_string());
    client.send_to(request.as_bytes(), to).expect("sent");
    let mut buf = [0u8; 4096];
    let (n, _) = client.recv_from(&mut buf).expect("an answer in time");
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    text.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parsed_options_is_answered_and_an_unparseable_request_gets_400() {
    let port = free_udp_port(v4());
    let ep = agent_on(port).await;
    let to = ep.bound().udp[0];
    let options = "OPTIONS sip:box@127.0.0.1 SIP/2.0\r\n\
        Via: SIP/2.0/UDP CLIENT;branch=z9hG4bK-reader-1\r\n\
        Max-Forwards: 70\r\n\
        From: <sip:tech@127.0.0.1>;tag=a1\r\n\
        To: <sip:box@127.0.0.1>\r\n\
        Call-ID: reader-1@test\r\n\
        CSeq: 1 OPTIONS\r\n\
        Content-Length: 0\r\n\r\n";
    let answer = tokio::task::spawn_blocking(move || ask(to, options))
        .await
        .unwrap();
    assert!(
        answer.starts_with("SIP/2.0 200"),
        "OPTIONS answered: {answer}"
    );
    // No CSeq: the reader's parse fails and the core answers from the bytes it was given.
    let broken = "OPTIONS sip:box@127.0.0.1 SIP/2.0\r\n\
        Via: SIP/2.0/UDP CLIENT;branch=z9hG4bK-reader-2\r\n\
        Max-Forwards: 70\r\n\
        From: <sip:tech@127.0.0.1>;tag=a2\r\n\
        To: <sip:box@127.0.0.1>\r\n\
        Call-ID: reader-2@test\r\n\
        Content-Length: 0\r\n\r\n";
    let answer = tokio::task::spawn_blocking(move || ask(to, broken))
        .await
        .unwrap();
    assert!(
        answer.starts_with("SIP/2.0 400"),
        "an unparseable request is answered 400: {answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_endpoint_frees_its_udp_port_at_once() {
    for _ in 0..3 {
        let port = free_udp_port(v4());
        let ep = agent_on(port).await;
        drop(ep);
        // The receive task and the driver task hold the socket; they go when the runtime
        // drops the aborted tasks, a moment later on a busy machine.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while let Err(e) = UdpSocket::bind((v4(), port)) {
            assert!(
                std::time::Instant::now() < deadline,
                "the port is still taken 10 s after the endpoint was dropped: {e}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // And an endpoint can start again on the port it had.
    let port = free_udp_port(v4());
    drop(agent_on(port).await);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let again = loop {
        let cfg = udp_on(port);
        match SipEndpoint::start(cfg, |b| UserAgent::new(agent_config(b.udp[0]))).await {
            Ok(ep) => break ep,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("no restart on port {port} within 10 s: {e}"),
        }
    };
    assert_eq!(again.bound().udp[0].port(), port);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unparseable_request_on_a_tcp_connection_gets_400_there_and_the_connection_goes_on() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let config = EndpointConfig {
        udp: vec![SocketAddr::new(v4(), free_udp_port(v4()))],
        tcp: vec![SocketAddr::new(v4(), free_tcp_port(v4()))],
        ..EndpointConfig::default()
    };
    let ep = SipEndpoint::start(config, |bound| UserAgent::new(agent_config(bound.udp[0])))
        .await
        .expect("the endpoint binds");
    let conn = tokio::net::TcpStream::connect(ep.bound().tcp[0])
        .await
        .expect("connected");
    let client = conn.local_addr().unwrap().to_string();
    let (read, mut write) = conn.into_split();
    let mut read = BufReader::new(read);
    // Reads one response: its status line, up to the end of its body.
    async fn response(read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> String {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(10), read.read_line(&mut line))
                .await
                .expect("an answer in time")
                .unwrap();
            assert!(n > 0, "the connection was closed; so far: {head}");
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        read.read_exact(&mut body).await.unwrap();
        head
    }
    let request = |n: u32, cseq: &str| {
        format!(
            "OPTIONS sip:box@127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/TCP {client};branch=z9hG4bK-tcp-{n}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:tech@127.0.0.1>;tag=t{n}\r\n\
             To: <sip:box@127.0.0.1>\r\n\
             Call-ID: tcp-{n}@test\r\n\
             CSeq: {cseq}\r\n\
             Content-Length: 0\r\n\r\n"
        )
    };
    write
        .write_all(request(1, "x OPTIONS").as_bytes())
        .await
        .unwrap();
    let answer = response(&mut read).await;
    assert!(
        answer.starts_with("SIP/2.0 400"),
        "a framed message that does not parse is answered 400: {answer}"
    );
    assert!(answer.contains("tcp-1@test"), "{answer}");
    write
        .write_all(request(2, "2 OPTIONS").as_bytes())
        .await
        .unwrap();
    let answer = response(&mut read).await;
    assert!(
        answer.starts_with("SIP/2.0 200"),
        "the next message on the connection is served: {answer}"
    );
}
