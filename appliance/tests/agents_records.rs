//! Call records of inbound calls against real SIPp peers: a SIPp caller with an E.164 number
//! dials the number the route table sends to the agent's group; the agents' lines answer it
//! and bridge it to the agent's SIPp desk phone (nailed-up leg) or queue it. Each call
//! leaves exactly one `CallRecord` in the outbox: the agent and the disposition saved in
//! wrap-up (after the hang-up) for a call an agent took; `Abandoned` for a caller who hung
//! up while queued; `Rejected` with the status for a call refused while new calls are held.

mod agents_support;
mod sip_support;

use agents_support::{phone_logged_in, rig, wait_for_state, AGENT};
use callgate_appliance::agents::desk::DeskSettings;
use callgate_appliance::store::Store;
use callgate_common::wire::{CallOutcome, CallRecord, Direction, Uplink};
use sip_support::{free_udp_port, scenario, Sipp};
use std::time::{Duration, Instant};

/// The call records in the outbox, in order.
async fn call_records(store: &Store) -> Vec<CallRecord> {
    let rows: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT body FROM sync_outbox ORDER BY id")
        .fetch_all(store.pool())
        .await
        .unwrap();
    rows.into_iter()
        .filter_map(|(b,)| match postcard::from_bytes::<Uplink>(&b).unwrap() {
            Uplink::CallRecord(r) => Some(r),
            _ => None,
        })
        .collect()
}

/// Waits (generously: a loaded machine) until the outbox holds `n` call records.
async fn wait_for_records(store: &Store, n: usize) -> Vec<CallRecord> {
    let start = Instant::now();
    loop {
        let records = call_records(store).await;
        if records.len() >= n || start.elapsed() > Duration::from_secs(60) {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Records kept for a wrap-up, not yet sent.
async fn kept_for_wrap_up(store: &Store) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM dialer_wrap_ups")
        .fetch_one(store.pool())
        .await
        .unwrap();
    n
}

/// A SIPp caller (`+442079460123`) dialling `service` and hanging up `hold_ms` after the answer.
fn caller(box_addr: &str, hold_ms: u32) -> Sipp {
    Sipp::start_on(
        free_udp_port(),
        &["-sf", &scenario("inbound_caller_hangs_up.xml"), box_addr],
        &[
            "-m",
            "1",
            "-s",
            "service",
            "-d",
            &hold_ms.to_string(),
            "-mp",
            &agents_support::free_even_port().to_string(),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_call_an_agent_took_has_one_record_with_the_agent_and_the_disposition_saved_in_wrap_up(
) {
    let rig = rig(DeskSettings {
        inbound_wrap_up_ms: 60_000,
        ..DeskSettings::default()
    })
    .await;
    let phone = phone_logged_in(&rig, 30_000).await;

    let caller = caller(&rig.box_addr, 1_500);
    wait_for_state(&rig.desk, "talking", Duration::from_secs(30)).await;
    let call = rig.desk.view(AGENT).unwrap().call.unwrap().call;
    let (ok, errors) = caller.passed().await;
    assert!(ok, "the caller was answered and hung up cleanly: {errors}");
    wait_for_state(&rig.desk, "wrap_up", Duration::from_secs(30)).await;

    // In wrap-up: the record is kept (durable), not sent, while the agent has not saved.
    let start = Instant::now();
    while kept_for_wrap_up(&rig.store).await == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the record was never kept for the wrap-up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        call_records(&rig.store).await.is_empty(),
        "no record before the disposition"
    );

    // Saved 3 s into the wrap-up: the record goes out with it, once.
    rig.desk.dispose(AGENT, "resolved").await.unwrap();
    let records = wait_for_records(&rig.store, 1).await;
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(r.call.to_string(), call);
    assert_eq!(r.direction, Direction::Inbound);
    assert_eq!((r.attempt, r.campaign, r.contact), (None, None, None));
    assert_eq!(r.outcome, CallOutcome::AnsweredHuman);
    assert_eq!(r.agent, Some(AGENT));
    assert_eq!(
        r.trunk.as_ref().map(|t| t.as_str()),
        Some("carrier"),
        "the trunk named by the INVITE's source address"
    );
    assert_eq!(r.disposition.as_deref(), Some("resolved"));
    assert_eq!(
        r.remote.as_ref().map(|n| n.e164()),
        Some("+442079460123".to_string())
    );
    let answered = r.answered_at.expect("answered");
    assert!(r.started_at <= answered && answered <= r.ended_at, "{r:?}");
    assert!(
        r.ended_at.millis_since(answered) >= 1_400,
        "the call lasted the caller's 1.5 s: {r:?}"
    );
    assert!(r.quality.is_some(), "the caller leg's quality: {r:?}");
    assert_eq!(kept_for_wrap_up(&rig.store).await, 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(call_records(&rig.store).await.len(), 1, "sent once");
    drop(phone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_caller_who_hangs_up_has_one_abandoned_record() {
    let rig = rig(DeskSettings::default()).await;
    let phone = phone_logged_in(&rig, 30_000).await;
    rig.desk.pause(AGENT, "coffee").await.unwrap();

    let caller = caller(&rig.box_addr, 1_500);
    let (ok, errors) = caller.passed().await;
    assert!(ok, "the caller was answered, queued and hung up: {errors}");
    let records = wait_for_records(&rig.store, 1).await;
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(r.direction, Direction::Inbound);
    assert_eq!(r.outcome, CallOutcome::Abandoned);
    assert_eq!((r.agent, r.disposition.as_deref()), (None, None));
    assert_eq!(
        r.remote.as_ref().map(|n| n.e164()),
        Some("+442079460123".to_string())
    );
    let answered = r.answered_at.expect("answered (queued)");
    assert!(r.ended_at.millis_since(answered) >= 1_400, "{r:?}");
    assert_eq!(rig.desk.pacing_counts().inbound_waiting, 0);
    assert_eq!(rig.desk.view(AGENT).unwrap().state, "paused");
    drop(phone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_refused_while_new_calls_are_held_has_a_rejected_record_with_the_status() {
    let rig = rig(DeskSettings::default()).await;
    let (_held_tx, held) = tokio::sync::watch::channel(Some("recordings disk full".to_string()));
    rig.lines.as_ref().unwrap().hold_new_calls(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = Sipp::start_on(
        free_udp_port(),
        &[
            "-sf",
            &scenario("uac_expect_unavailable.xml"),
            &rig.box_addr,
        ],
        &["-m", "1", "-s", "service"],
    );
    let (ok, errors) = refused.passed().await;
    assert!(ok, "the caller got 503: {errors}");
    let records = wait_for_records(&rig.store, 1).await;
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(r.direction, Direction::Inbound);
    assert_eq!(
        (r.outcome, r.sip_status, r.answered_at),
        (CallOutcome::Rejected, Some(503), None)
    );
    assert_eq!(r.trunk.as_ref().map(|t| t.as_str()), Some("carrier"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disposition_saved_after_the_box_restarted_during_the_wrap_up_reaches_the_inbound_record_once(
) {
    use callgate_appliance::agents::service::AgentDeskService;
    use callgate_appliance::dialer::store;
    use callgate_appliance::sync::outbox_store::UplinkOutbox;
    use callgate_common::time::UnixMillis;
    use std::sync::Arc;

    let rig = rig(DeskSettings {
        inbound_wrap_up_ms: 60_000,
        ..DeskSettings::default()
    })
    .await;
    let phone = phone_logged_in(&rig, 30_000).await;
    let caller = caller(&rig.box_addr, 1_500);
    wait_for_state(&rig.desk, "talking", Duration::from_secs(30)).await;
    let call = rig.desk.view(AGENT).unwrap().call.unwrap().call;
    let (ok, errors) = caller.passed().await;
    assert!(ok, "{errors}");
    wait_for_state(&rig.desk, "wrap_up", Duration::from_secs(30)).await;
    let start = Instant::now();
    while kept_for_wrap_up(&rig.store).await == 0 {
        assert!(start.elapsed() < Duration::from_secs(60), "never kept");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The box stops mid wrap-up: the record stays kept, nothing is sent.
    rig.stop.send(true).unwrap();
    drop(phone);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(call_records(&rig.store).await.is_empty());
    assert_eq!(kept_for_wrap_up(&rig.store).await, 1);

    // It starts again on the same store: the desk, then the dialer's start-up settle (which
    // leaves the running wrap-up to a task that waits for the agent's code).
    let outbox = Arc::new(tokio::sync::RwLock::new(Arc::new(
        UplinkOutbox::open(rig.store.pool().clone(), Default::default())
            .await
            .unwrap(),
    )));
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let (desk, _calls) = AgentDeskService::start(
        rig.store.pool().clone(),
        Some(outbox.clone()),
        DeskSettings {
            nailed_up: false,
            ..DeskSettings::default()
        },
        stop_rx,
    )
    .await
    .unwrap();
    let current = outbox.read().await.clone();
    let (sent, running) = store::settle_wrap_ups(
        rig.store.pool(),
        &current,
        UnixMillis::now(),
        callgate_appliance::dialer::wrap_up::is_waiting,
    )
    .await
    .unwrap();
    assert_eq!((sent, running.len()), (0, 1), "the wrap-up still runs");
    let completing = {
        let (pool, outbox) = (rig.store.pool().clone(), outbox.clone());
        let kept = running.into_iter().next().unwrap();
        tokio::spawn(async move { store::complete_wrap_up(&pool, &outbox, kept).await })
    };

    // The agent logs in again: back in the call's wrap-up, saves the code.
    assert!(desk.log_in(AGENT).await.unwrap());
    let view = desk.view(AGENT).unwrap();
    assert_eq!(view.state, "wrap_up");
    assert_eq!(
        view.call.as_ref().map(|c| c.call.clone()),
        Some(call.clone())
    );
    desk.dispose(AGENT, "callback").await.unwrap();
    assert!(completing.await.unwrap().unwrap(), "sent by the completion");
    let records = wait_for_records(&rig.store, 1).await;
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(r.call.to_string(), call);
    assert_eq!(r.direction, Direction::Inbound);
    assert_eq!(r.agent, Some(AGENT));
    assert_eq!(r.disposition.as_deref(), Some("callback"));
    assert_eq!(kept_for_wrap_up(&rig.store).await, 0);
    // A later start finds nothing left to send.
    let (sent, running) =
        store::settle_wrap_ups(rig.store.pool(), &current, UnixMillis::now(), |_| false)
            .await
            .unwrap();
    assert_eq!((sent, running.len()), (0, 0));
    assert_eq!(call_records(&rig.store).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_inbound_call_has_its_segments_in_the_record() {
    use callgate_appliance::recording::{RecordingSettings, SqliteSegmentStore};
    let rig = rig(DeskSettings::default()).await;
    let dir = rig.store_dir().to_path_buf();
    let id = dir.join("id.txt");
    assert!(std::process::Command::new("age-keygen")
        .arg("-o")
        .arg(&id)
        .output()
        .expect("age-keygen (package age) is installed by scripts/setup")
        .status
        .success());
    let recipient = String::from_utf8(
        std::process::Command::new("age-keygen")
            .arg("-y")
            .arg(&id)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let recording = RecordingSettings {
        recipients: vec![recipient.trim().to_owned()],
        directory: Some(dir.join("recordings")),
        ..RecordingSettings::default()
    }
    .validate(&dir)
    .unwrap();
    rig.lines
        .as_ref()
        .unwrap()
        .record_calls(recording, SqliteSegmentStore::new(rig.store.pool().clone()));
    let phone = phone_logged_in(&rig, 30_000).await;
    let caller = caller(&rig.box_addr, 1_500);
    wait_for_state(&rig.desk, "talking", Duration::from_secs(30)).await;
    let (ok, errors) = caller.passed().await;
    assert!(ok, "{errors}");
    wait_for_state(&rig.desk, "wrap_up", Duration::from_secs(30)).await;
    rig.desk.dispose(AGENT, "resolved").await.unwrap();
    let records = wait_for_records(&rig.store, 1).await;
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert!(r.recording_segments >= 1, "recorded: {r:?}");
    let (segments,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM recording_segments WHERE call_id = $1")
            .bind(r.call.to_string())
            .fetch_one(rig.store.pool())
            .await
            .unwrap();
    assert_eq!(segments, i64::from(r.recording_segments));
    drop(phone);
}
