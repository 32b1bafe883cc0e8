//! The daemon (`callgate-appliance run`) dials an agentless campaign through SIPp, which
//! answers some calls and echoes their RTP (`-rtp_echo`): every answered call's customer leg
//! has its quality (loss, jitter, round trip, R-factor, MOS) stored in `call_leg_quality`,
//! with figures that fit a clean loopback echo and agree with the call record's summary.

mod dialer_support;

use callgate_appliance::media::quality_log::leg_quality;
use callgate_appliance::store::Store;
use callgate_common::time::UnixMillis;
use callgate_common::wire::{CallOutcome, Uplink};
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

struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_calls_store_each_legs_quality_with_plausible_figures() {
    const CONTACTS: u64 = 12;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hour = UnixMillis::now().plus_millis(3_600_000);
    {
        let store = Store::open(&data).await.unwrap();
        for body in [
            agentless_brief(all_day()),
            lease(1, 0..CONTACTS, hour, |_| false),
            grant(4, hour),
        ] {
            assert!(
                callgate_appliance::dialer::store::apply_now(store.pool(), &body)
                    .await
                    .unwrap()
            );
        }
        store.pool().close().await;
    }
    let carrier = Carrier::start();
    let (ops, sip) = (free_tcp_port(), free_udp_port());
    let rtp = (free_udp_port() & !1).min(60_000);
    let config = format!(
        "[appliance]\nid = \"branch-quality\"\ndata_dir = \"data\"\n\
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
    let _daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_callgate-appliance"))
            .args(["--config", "config.toml", "run"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("daemon.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let log = || std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
    let store = Store::open(&data).await.unwrap();
    // Every contact settled (generous: a loaded 2-core machine).
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
        assert!(
            Instant::now() < deadline,
            "{n} contacts not settled; daemon log:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT body FROM sync_outbox")
        .fetch_all(store.pool())
        .await
        .unwrap();
    let answered: Vec<_> = rows
        .iter()
        .filter_map(|(b,)| match postcard::from_bytes(b) {
            Ok(Uplink::CallRecord(r)) if r.outcome == CallOutcome::AnsweredHuman => Some(r),
            _ => None,
        })
        .collect();
    assert!(
        !answered.is_empty(),
        "the carrier answers about 45 % of calls; none of {CONTACTS} was answered"
    );
    let mut longest = 0;
    for record in &answered {
        let legs = leg_quality(store.pool(), &record.call.to_string())
            .await
            .unwrap();
        assert_eq!(
            legs.len(),
            1,
            "one leg (the customer's) for {}",
            record.call
        );
        let q = &legs[0];
        assert_eq!((q.leg_index, q.role.as_str()), (0, "customer"));
        // A clean loopback echo: little loss, little jitter, a near-perfect G.711 rating.
        assert!(q.loss_ppm <= 50_000, "{q:?}");
        assert!(q.jitter_us < 40_000, "{q:?}");
        assert!((70.0..=93.3).contains(&q.r_factor), "{q:?}");
        assert!((3.6..=4.5).contains(&q.mos), "{q:?}");
        assert!(q.packets_received <= q.packets_expected + 2, "{q:?}");
        if let Some(rtt) = q.rtt_us {
            assert!(rtt < 1_000_000, "loopback round trip: {q:?}");
        }
        // The call record's summary is the same leg.
        let summary = record
            .quality
            .expect("an answered call carries its quality");
        assert_eq!(summary.mos_x100, (q.mos * 100.0).round() as u16, "{q:?}");
        assert_eq!(summary.loss_ppm, q.loss_ppm);
        assert_eq!(summary.jitter_us, q.jitter_us);
        longest = longest.max(q.packets_received);
    }
    assert!(
        longest >= 25,
        "a customer who listened echoed at least half a second of audio: {longest} packets"
    );
}
