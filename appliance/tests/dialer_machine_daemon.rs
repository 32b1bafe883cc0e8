//! Answering-machine detection on the daemon's live campaign calls (`[dialer]
//! machine_detection = "agentless"`): the real binary dials an agentless campaign through two
//! SIPp callees, one playing an espeak-ng machine greeting ending in a beep, the other a
//! short "Hello?". The machine's call ends as `AnsweredMachine`, the person's reaches the
//! campaign's placement (the announcement) as `AnsweredHuman`, and the executor hears each
//! answer with the screen's verdict (`callgate_dialer_answers_total{by}`), not a person's
//! answer at the 200 OK.

mod dialer_support;
mod robot_support;

use callgate_appliance::dialer::store;
use callgate_appliance::store::Store;
use callgate_common::time::UnixMillis;
use callgate_common::wire::{CallOutcome, Uplink};
use callgate_media::tone::ToneGenerator;
use callgate_robot::{EspeakNg, SpeechStyle, TextToSpeech};
use dialer_support::*;
use robot_support::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spoken(text: &str, voice: &str) -> Vec<i16> {
    EspeakNg::default()
        .synthesize(text, &SpeechStyle::voice(voice))
        .expect("espeak-ng is installed by scripts/setup")
        .into_samples()
}

/// 0.3 s of quiet line, `parts`, then quiet line up to `total_ms`.
fn opening(parts: &[Vec<i16>], total_ms: u32) -> Vec<i16> {
    let mut audio = line_noise(300);
    for p in parts {
        audio.extend(p);
    }
    let rest = (total_ms as usize * 8).saturating_sub(audio.len());
    audio.extend(line_noise(rest as u32 / 8));
    audio
}

/// The daemon process, stopped however the test ends.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn metric(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name_and_labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_screens_live_calls_and_its_executor_hears_the_machine_verdict() {
    let machine = Callee::start(
        "robot_callee.xml",
        &callee_pcap(
            &opening(
                &[
                    spoken(
                        "Hi, you have reached the Smiths. We cannot take your call right now. Please leave a message after the tone.",
                        "en-us+m3",
                    ),
                    line_noise(400),
                    ToneGenerator::new(1_000.0, 8_000).next_samples(4_000),
                ],
                14_000,
            ),
            &[],
            KeyStyle::Rfc4733,
        ),
    );
    let person = Callee::start(
        "robot_callee.xml",
        &callee_pcap(
            &opening(&[spoken("Hello?", "en-us")], 12_000),
            &[],
            KeyStyle::Rfc4733,
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hour = UnixMillis::now().plus_millis(3_600_000);
    {
        let store = Store::open(&data).await.unwrap();
        for body in [
            agentless_brief(all_day()),
            lease(1, 0..2, hour, |_| false),
            grant(2, hour),
        ] {
            assert!(store::apply_now(store.pool(), &body).await.unwrap());
        }
        store.pool().close().await;
    }
    let (ops, sip) = (free_tcp_port(), free_udp_port());
    let rtp = (free_udp_port() & !1).min(60_000);
    // One channel per callee: the two calls go one to each.
    let config = format!(
        "[appliance]\nid = \"branch-amd\"\ndata_dir = \"data\"\n[log]\nlevel = \"callgate_appliance=debug,info\"\n\
         [ops]\nlisten = \"127.0.0.1:{ops}\"\n\
         [web]\nenabled = false\n\
         [board]\nkind = \"none\"\n\
         [sip]\nlisten = \"127.0.0.1:{sip}\"\n\
         [[sip.trunks]]\nname = \"machine\"\naddress = \"{machine}\"\nmax_channels = 1\nmax_cps = 50\npriority = 1\n\
         [[sip.trunks]]\nname = \"person\"\naddress = \"{person}\"\nmax_channels = 1\nmax_cps = 50\npriority = 2\n\
         [dialer]\nrtp_first_port = {rtp}\nrtp_last_port = {last}\nring_timeout_seconds = 5\n\
         machine_detection = \"agentless\"\n",
        machine = machine.addr,
        person = person.addr,
        last = rtp + 99,
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
    let deadline = Instant::now() + Duration::from_secs(120);
    let records = loop {
        let rows: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT body FROM sync_outbox")
            .fetch_all(store.pool())
            .await
            .unwrap();
        let records: Vec<_> = rows
            .iter()
            .filter_map(|(b,)| match postcard::from_bytes(b) {
                Ok(Uplink::CallRecord(r)) => Some(r),
                _ => None,
            })
            .collect();
        if records.len() == 2 {
            break records;
        }
        assert!(
            Instant::now() < deadline,
            "{} of 2 calls recorded; daemon log:\n{}\nmachine callee: {}\nperson callee: {}",
            records.len(),
            log(),
            machine.errors(),
            person.errors()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for r in &records {
        let trunk = r.trunk.as_ref().map(|t| t.as_str().to_string());
        match trunk.as_deref() {
            Some("machine") => {
                assert_eq!(r.outcome, CallOutcome::AnsweredMachine, "{r:?}");
                assert_eq!(r.disposition.as_deref(), Some("answering_machine"));
            }
            Some("person") => assert_eq!(r.outcome, CallOutcome::AnsweredHuman, "{r:?}"),
            other => panic!("a call on trunk {other:?}: {r:?}"),
        }
    }
    // The executor heard each answer with its verdict: one machine, one person.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = reqwest::get(format!("http://127.0.0.1:{ops}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let by_machine = metric(&metrics, "callgate_dialer_answers_total{by=\"machine\"}");
        let by_person = metric(&metrics, "callgate_dialer_answers_total{by=\"person\"}");
        if by_machine == 1.0 && by_person == 1.0 {
            assert_eq!(
                metric(&metrics, "callgate_robot_amd_total{verdict=\"machine\"}"),
                1.0
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "answers reported to the executor: machine {by_machine}, person {by_person}\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
