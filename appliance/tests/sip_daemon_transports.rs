//! The daemon (`callgate-appliance run`) places its dialer's calls over the transport each
//! `[[sip.trunks]]` names: SIPp as the carrier over TCP (`-t t1`), over TLS (SIPp behind
//! socat's OpenSSL: the packaged SIPp has no TLS, `sipp -v` shows no TLS build), and a TCP
//! trunk that refuses connections failing over to a UDP trunk. Each call's result in the
//! outbox says which trunk carried it. The campaign's caller ID reaches the carrier per
//! the trunk's presentation settings (SIPp checks From and P-Asserted-Identity).

mod dialer_support;

use callgate_appliance::dialer::store;
use callgate_appliance::store::Store;
use callgate_common::ids::TrunkId;
use callgate_common::time::UnixMillis;
use callgate_common::wire::{AttemptResult, CallOutcome, Uplink};
use dialer_support::{agentless_brief, all_day, free_udp_port, grant, lease};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CONTACTS: u64 = 3;

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when dropped, with its temp dir.
struct Peer {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    /// SIPp's built-in UAS (180, 200, waits for our BYE) on `port` over `transport`
    /// (`u1` or `t1`).
    fn sipp_uas(transport: &str, port: u16) -> Peer {
        Peer::sipp(&["-sn", "uas"], transport, port)
    }

    /// SIPp running `tests/sipp/<scenario>` on `port` over `transport`.
    fn sipp_scenario(scenario: &str, transport: &str, port: u16) -> Peer {
        let path = format!("{}/tests/sipp/{scenario}", env!("CARGO_MANIFEST_DIR"));
        Peer::sipp(&["-sf", &path], transport, port)
    }

    fn sipp(scenario: &[&str], transport: &str, port: u16) -> Peer {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("sipp")
            .args(scenario)
            .args(["-t", transport, "-i", "127.0.0.1"])
            .args(["-p", &port.to_string(), "-mp", &free_udp_port().to_string()])
            .args(["-nostdin", "-timeout", "180", "-trace_err"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp is installed by scripts/setup (package sip-tester)");
        Peer { child, dir }
    }

    /// socat terminating TLS on `port` (certificate `cert`/`key`) in front of `backend`.
    fn tls_terminator(port: u16, cert: &Path, key: &Path, backend: SocketAddr) -> Peer {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
                cert.display(),
                key.display()
            ))
            .arg(format!("TCP:{backend}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat is installed by scripts/setup");
        Peer { child, dir }
    }

    fn errors(&self) -> String {
        let mut errors = String::new();
        for e in std::fs::read_dir(self.dir.path()).unwrap() {
            let p = e.unwrap().path();
            if p.to_string_lossy().ends_with("errors.log") {
                errors.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
            }
        }
        errors
    }
}

async fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the daemon with `trunks` (TOML `[[sip.trunks]]` tables, `[sip.tls]` included) over
/// a store holding an agentless campaign of `CONTACTS` contacts, waits until every contact
/// is settled, stops it with SIGTERM, and returns the attempt results from its outbox.
async fn dial_through_the_daemon(sip_extra: &str, peers: &[&Peer]) -> Vec<AttemptResult> {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hour = UnixMillis::now().plus_millis(3_600_000);
    {
        let store = Store::open(&data).await.unwrap();
        for body in [
            agentless_brief(all_day()),
            lease(1, 0..CONTACTS, hour, |_| false),
            grant(1, hour),
        ] {
            assert!(store::apply_now(store.pool(), &body).await.unwrap());
        }
        store.pool().close().await;
    }
    let (ops, sip) = (free_tcp_port(), free_udp_port());
    let rtp = (free_udp_port() & !1).min(60_000);
    let config = format!(
        "[appliance]\nid = \"branch-transports\"\ndata_dir = \"data\"\n\
         [log]\nlevel = \"callgate_appliance=debug,callgate_sip_net=debug,info\"\n\
         [ops]\nlisten = \"127.0.0.1:{ops}\"\n\
         [web]\nenabled = false\n\
         [board]\nkind = \"none\"\n\
         [sip]\nlisten = \"127.0.0.1:{sip}\"\nanswer_wait_ms = 20000\n{sip_extra}\n\
         [dialer]\nrtp_first_port = {rtp}\nrtp_last_port = {last}\nring_timeout_seconds = 20\n",
        last = rtp + 99,
    );
    std::fs::write(dir.path().join("config.toml"), config).unwrap();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_callgate-appliance"))
        .args(["--config", "config.toml", "run"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
    let errors = || peers.iter().map(|p| p.errors()).collect::<String>();
    let store = Store::open(&data).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM dialer_contacts WHERE state IN ('pending', 'dialling')",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        if n == 0 {
            break;
        }
        if let Ok(Some(status)) = daemon.try_wait() {
            panic!("the daemon stopped ({status}); log:\n{}", log());
        }
        assert!(
            Instant::now() < deadline,
            "{n} contacts not settled; daemon log:\n{}\nSIPp errors:\n{}",
            log(),
            errors()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kill = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = daemon.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status:?}\n{}", log());
    let rows: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT body FROM sync_outbox")
        .fetch_all(store.pool())
        .await
        .unwrap();
    let results: Vec<AttemptResult> = rows
        .iter()
        .filter_map(|(b,)| match postcard::from_bytes(b) {
            Ok(Uplink::AttemptResult(r)) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(results.len(), CONTACTS as usize, "{results:?}\n{}", log());
    for r in &results {
        assert!(
            matches!(
                r.outcome,
                CallOutcome::AnsweredHuman | CallOutcome::AnsweredMachine
            ),
            "{r:?}\ndaemon log:\n{}\nSIPp errors:\n{}",
            log(),
            errors()
        );
    }
    results
}

fn trunk_names(results: &[AttemptResult]) -> Vec<Option<TrunkId>> {
    results.iter().map(|r| r.trunk.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_dials_a_tcp_trunk_over_tcp() {
    let port = free_tcp_port();
    let carrier = Peer::sipp_uas("t1", port);
    wait_listening(SocketAddr::from(([127, 0, 0, 1], port))).await;
    let trunk = format!(
        "[[sip.trunks]]\nname = \"tcp-carrier\"\nhost = \"localhost\"\nport = {port}\n\
         transport = \"tcp\"\nmax_channels = 5\nmax_cps = 50\n"
    );
    let results = dial_through_the_daemon(&trunk, &[&carrier]).await;
    let want = Some(TrunkId::new("tcp-carrier").unwrap());
    assert!(
        trunk_names(&results).iter().all(|t| *t == want),
        "{results:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_dials_a_tls_trunk_over_tls_checking_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let sipp_port = free_tcp_port();
    let carrier = Peer::sipp_uas("t1", sipp_port);
    let backend = SocketAddr::from(([127, 0, 0, 1], sipp_port));
    wait_listening(backend).await;
    let tls_port = free_tcp_port();
    let terminator = Peer::tls_terminator(tls_port, &cert, &key, backend);
    wait_listening(SocketAddr::from(([127, 0, 0, 1], tls_port))).await;
    // The certificate names `localhost`; the trunk's host is that name, so it is checked
    // against it, with our test CA (the certificate itself) as the only root.
    let trunk = format!(
        "[sip.tls]\nca_file = \"{ca}\"\n\
         [[sip.trunks]]\nname = \"tls-carrier\"\nhost = \"localhost\"\nport = {tls_port}\n\
         transport = \"tls\"\nmax_channels = 5\nmax_cps = 50\n",
        ca = cert.display()
    );
    let results = dial_through_the_daemon(&trunk, &[&carrier, &terminator]).await;
    let want = Some(TrunkId::new("tls-carrier").unwrap());
    assert!(
        trunk_names(&results).iter().all(|t| *t == want),
        "{results:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_trunk_refusing_connections_fails_over_to_a_udp_trunk() {
    // Nothing listens on the TCP trunk's port; the UDP trunk is SIPp. The answer wait is
    // 20 s, so a call answered within it failed over on the transport error, not on time.
    let dead = free_tcp_port();
    let udp_port = free_udp_port();
    let backup = Peer::sipp_uas("u1", udp_port);
    let trunks = format!(
        "[[sip.trunks]]\nname = \"tcp-first\"\nhost = \"127.0.0.1\"\nport = {dead}\n\
         transport = \"tcp\"\nmax_channels = 5\nmax_cps = 50\npriority = 0\n\
         [[sip.trunks]]\nname = \"udp-backup\"\naddress = \"127.0.0.1:{udp_port}\"\n\
         max_channels = 5\nmax_cps = 50\npriority = 1\n"
    );
    let results = dial_through_the_daemon(&trunks, &[&backup]).await;
    let want = Some(TrunkId::new("udp-backup").unwrap());
    assert!(
        trunk_names(&results).iter().all(|t| *t == want),
        "{results:?}"
    );
    // Post-dial delay runs from the dialer's INVITE: under the answer wait.
    for r in &results {
        assert!(
            r.post_dial_delay_ms.is_some_and(|pdd| pdd < 20_000),
            "{r:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_campaign_caller_id_reaches_the_failover_trunk_in_from_and_p_asserted_identity() {
    // The first trunk refuses connections; the call fails over to SIPp, whose scenario
    // checks that From and P-Asserted-Identity both carry the campaign's caller ID
    // (+442079460000, dialer_support's brief) as that trunk presents it, and writes any
    // mismatch to its errors.log.
    let dead = free_tcp_port();
    let udp_port = free_udp_port();
    let carrier = Peer::sipp_scenario("uas_caller_id.xml", "u1", udp_port);
    let trunks = format!(
        "[[sip.trunks]]\nname = \"tcp-first\"\nhost = \"127.0.0.1\"\nport = {dead}\n\
         transport = \"tcp\"\nmax_channels = 5\nmax_cps = 50\npriority = 0\n\
         [[sip.trunks]]\nname = \"pai-carrier\"\naddress = \"127.0.0.1:{udp_port}\"\n\
         max_channels = 5\nmax_cps = 50\npriority = 1\ncaller_id_header = \"both\"\n\
         from_domain = \"callgate.example\"\ncaller_id_user_phone = true\n"
    );
    let results = dial_through_the_daemon(&trunks, &[&carrier]).await;
    let want = Some(TrunkId::new("pai-carrier").unwrap());
    assert!(
        trunk_names(&results).iter().all(|t| *t == want),
        "{results:?}"
    );
    assert_eq!(
        carrier.errors(),
        "",
        "SIPp found a caller ID it did not expect"
    );
}
