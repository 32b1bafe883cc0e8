//! The daemon itself (`callgate-appliance run`) with `[sip]` configured starts the SIP
//! engine and the campaign executor: holdings already in its store are dialled through SIPp,
//! every attempt lands in the outbox, the metrics count them, and SIGTERM stops it cleanly.

mod dialer_support;

use callgate_appliance::dialer::store;
use callgate_appliance::store::Store;
use callgate_common::time::UnixMillis;
use callgate_common::wire::Uplink;
use dialer_support::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_dials_the_campaigns_in_its_store_through_its_sip_trunks() {
    const CONTACTS: u64 = 20;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hour = UnixMillis::now().plus_millis(3_600_000);
    {
        let store = Store::open(&data).await.unwrap();
        for body in [
            agentless_brief(all_day()),
            lease(1, 0..CONTACTS, hour, |_| false),
            grant(5, hour),
        ] {
            assert!(store::apply_now(store.pool(), &body).await.unwrap());
        }
        store.pool().close().await;
    }
    // Counted on the daemon's side: see dialer_campaign.rs on SIPp's call limit.
    let carrier = Carrier::start();
    let (ops, sip) = (free_tcp_port(), free_udp_port());
    let rtp = (free_udp_port() & !1).min(60_000);
    let config = format!(
        "[appliance]\nid = \"branch-dialer\"\ndata_dir = \"data\"\n[log]\nlevel = \"callgate_appliance=debug,info\"\n\
         [ops]\nlisten = \"127.0.0.1:{ops}\"\n\
         [web]\nenabled = false\n\
         [board]\nkind = \"none\"\n\
         [sip]\nlisten = \"127.0.0.1:{sip}\"\n\
         [[sip.trunks]]\nname = \"carrier\"\naddress = \"{carrier}\"\nmax_channels = 10\nmax_cps = 50\n\
         [dialer]\nrtp_first_port = {rtp}\nrtp_last_port = {last}\nring_timeout_seconds = 3\n",
        carrier = carrier.addr,
        last = rtp + 199,
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
    // Every contact settled in the daemon's store.
    let store = Store::open(&data).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
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
        assert!(
            Instant::now() < deadline,
            "{n} contacts not settled; daemon log:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = reqwest::get(format!("http://127.0.0.1:{ops}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let outcomes: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("callgate_dialer_outcomes_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(outcomes, CONTACTS as f64, "{metrics}");
    let kill = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(20);
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
    assert!(status.success(), "{status:?}");
    let rows: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT body FROM sync_outbox")
        .fetch_all(store.pool())
        .await
        .unwrap();
    let results = rows
        .iter()
        .filter(|(b,)| matches!(postcard::from_bytes(b), Ok(Uplink::AttemptResult(_))))
        .count();
    assert_eq!(results, CONTACTS as usize);
}
