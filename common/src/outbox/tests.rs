//! Virtual-time tests of the outbox and inbox cores: no sockets, no sleeps.

use super::*;
use crate::time::UnixMillis;

fn record(size: u64) -> NewEntry {
    NewEntry {
        class: Class::Record,
        coalesce_key: None,
        size,
    }
}

fn telemetry(size: u64) -> NewEntry {
    NewEntry {
        class: Class::Telemetry,
        coalesce_key: Some("telemetry".into()),
        size,
    }
}

fn drain(outbox: &mut Outbox) -> Vec<Transmit> {
    std::iter::from_fn(|| outbox.poll_transmit()).collect()
}

#[test]
fn records_go_before_telemetry_and_sequence_numbers_follow_send_order() {
    let t0 = Instant::now();
    let mut o = Outbox::new(OutboxConfig::default(), 0);
    let tel = o.enqueue(telemetry(10)).unwrap().id;
    let r1 = o.enqueue(record(10)).unwrap().id;
    let r2 = o.enqueue(record(10)).unwrap().id;
    assert!(o.poll_transmit().is_none(), "nothing goes out while down");
    o.handle_connected(t0);
    let sent = drain(&mut o);
    let order: Vec<_> = sent.iter().map(|t| (t.id, t.seq)).collect();
    assert_eq!(order, vec![(r1, 1), (r2, 2), (tel, 3)]);
    assert!(sent.iter().all(|t| t.newly_sequenced));
}

#[test]
fn telemetry_is_coalesced_latest_wins_while_the_link_is_down() {
    let t0 = Instant::now();
    let mut o = Outbox::new(OutboxConfig::default(), 0);
    let first = o.enqueue(telemetry(100)).unwrap();
    assert_eq!(first.replaced, None);
    let mut last = first.id;
    // A week offline at one report a minute.
    for _ in 0..(7 * 24 * 60) {
        let e = o.enqueue(telemetry(100)).unwrap();
        assert_eq!(e.replaced, Some(last));
        last = e.id;
    }
    assert_eq!(o.depth(), 1);
    assert_eq!(o.used_bytes(), 100);
    o.handle_connected(t0);
    let sent = drain(&mut o);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].id, last);
    // Once sequenced it is never replaced: a new report queues behind it.
    let next = o.enqueue(telemetry(100)).unwrap();
    assert_eq!(next.replaced, None);
    assert_eq!(o.depth(), 2);
}

#[test]
fn a_cumulative_ack_releases_everything_up_to_it_and_repeats_are_harmless() {
    let t0 = Instant::now();
    let mut o = Outbox::new(OutboxConfig::default(), 0);
    let ids: Vec<_> = (0..5).map(|_| o.enqueue(record(7)).unwrap().id).collect();
    o.handle_connected(t0);
    drain(&mut o);
    assert_eq!(o.handle_ack(t0, 3).unwrap(), ids[..3].to_vec());
    assert_eq!(o.handle_ack(t0, 2).unwrap(), vec![]);
    assert_eq!(o.handle_ack(t0, 3).unwrap(), vec![]);
    assert_eq!(o.depth(), 2);
    assert_eq!(o.used_bytes(), 14);
    assert_eq!(
        o.handle_ack(t0, 9),
        Err(OutboxError::AckBeyondSent {
            up_to: 9,
            last_sent: 5
        })
    );
    assert_eq!(o.acked(), 3);
}

#[test]
fn reconnecting_resends_every_unacked_message_oldest_first_before_new_ones() {
    let t0 = Instant::now();
    let mut o = Outbox::new(OutboxConfig::default(), 0);
    for _ in 0..4 {
        o.enqueue(record(1)).unwrap();
    }
    o.handle_connected(t0);
    drain(&mut o);
    o.handle_ack(t0, 1).unwrap();
    o.handle_disconnected();
    let fresh = o.enqueue(record(1)).unwrap().id;
    o.handle_connected(t0);
    let sent = drain(&mut o);
    let seqs: Vec<_> = sent.iter().map(|t| (t.seq, t.newly_sequenced)).collect();
    assert_eq!(
        seqs,
        vec![(2, false), (3, false), (4, false), (5, true)],
        "the unacked three again, then the new one"
    );
    assert_eq!(sent[3].id, fresh);
}

#[test]
fn without_ack_progress_it_goes_back_to_the_oldest_after_resend_after() {
    let t0 = Instant::now();
    let config = OutboxConfig {
        resend_after: Duration::from_secs(5),
        ..OutboxConfig::default()
    };
    let mut o = Outbox::new(config, 0);
    for _ in 0..3 {
        o.enqueue(record(1)).unwrap();
    }
    o.handle_connected(t0);
    assert_eq!(drain(&mut o).len(), 3);
    assert_eq!(o.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    o.handle_timeout(t0 + Duration::from_secs(4));
    assert!(o.poll_transmit().is_none(), "not yet");
    o.handle_ack(t0 + Duration::from_secs(4), 1).unwrap();
    // Progress moved the deadline.
    o.handle_timeout(t0 + Duration::from_secs(6));
    assert!(o.poll_transmit().is_none());
    o.handle_timeout(t0 + Duration::from_secs(9));
    let again: Vec<_> = drain(&mut o).iter().map(|t| t.seq).collect();
    assert_eq!(again, vec![2, 3]);
    o.handle_ack(t0 + Duration::from_secs(9), 3).unwrap();
    assert_eq!(o.poll_timeout(), None, "nothing outstanding, no timer");
}

#[test]
fn each_resend_waits_twice_as_long_up_to_the_cap_until_everything_is_acked_or_it_reconnects() {
    let t0 = Instant::now();
    let base = Duration::from_secs(5);
    let config = OutboxConfig {
        resend_after: base,
        ..OutboxConfig::default()
    };
    let mut o = Outbox::new(config, 0);
    for _ in 0..3 {
        o.enqueue(record(1)).unwrap();
    }
    o.handle_connected(t0);
    assert_eq!(drain(&mut o).len(), 3);
    // No ack ever: resends at 5 s, then 10 s, 20 s, 40 s after the previous, then 40 s.
    let mut now = t0;
    for factor in [1, 2, 4, 8, 8] {
        let due = now + base * factor;
        assert_eq!(
            o.poll_timeout(),
            Some(due),
            "wait of {factor}× after the last"
        );
        o.handle_timeout(due - Duration::from_millis(1));
        assert!(o.poll_transmit().is_none(), "not before the wait is over");
        o.handle_timeout(due);
        let again: Vec<_> = drain(&mut o).iter().map(|t| t.seq).collect();
        assert_eq!(again, vec![1, 2, 3]);
        now = due;
    }
    // Partial progress moves the deadline but keeps the wait: acks that trickle in from a
    // slow receiver do not bring the resends back to every `resend_after`.
    o.handle_ack(now, 1).unwrap();
    assert_eq!(o.poll_timeout(), Some(now + base * 8));
    // A reconnect resets it.
    o.handle_disconnected();
    let later = now + base * 3;
    o.handle_connected(later);
    assert_eq!(drain(&mut o).len(), 2);
    assert_eq!(o.poll_timeout(), Some(later + base));
    o.handle_timeout(later + base);
    assert_eq!(drain(&mut o).len(), 2);
    assert_eq!(o.poll_timeout(), Some(later + base * 3));
    // So does an ack of everything outstanding: the next message starts at `resend_after`.
    o.handle_ack(later + base * 2, 3).unwrap();
    o.enqueue(record(1)).unwrap();
    assert_eq!(drain(&mut o).len(), 1);
    assert_eq!(o.poll_timeout(), Some(later + base * 3));
}

#[test]
fn the_window_bounds_sequenced_messages_so_later_ones_can_still_be_reordered() {
    let t0 = Instant::now();
    let config = OutboxConfig {
        window: 2,
        ..OutboxConfig::default()
    };
    let mut o = Outbox::new(config, 0);
    o.enqueue(telemetry(1)).unwrap();
    o.enqueue(record(1)).unwrap();
    o.enqueue(record(1)).unwrap();
    o.handle_connected(t0);
    assert_eq!(drain(&mut o).len(), 2);
    let late_record = o.enqueue(record(1)).unwrap().id;
    o.handle_ack(t0, 2).unwrap();
    let next = o.poll_transmit().unwrap();
    assert_eq!(
        (next.id, next.seq),
        (late_record, 3),
        "a record that arrived later still beats queued telemetry"
    );
}

#[test]
fn the_quota_alarm_rises_well_before_full_and_a_full_outbox_refuses_without_losing() {
    let t0 = Instant::now();
    let config = OutboxConfig {
        quota_bytes: 1000,
        alarm_percent: 80,
        ..OutboxConfig::default()
    };
    let mut o = Outbox::new(config, 0);
    for _ in 0..7 {
        o.enqueue(record(100)).unwrap();
    }
    assert_eq!(o.poll_event(), None);
    o.enqueue(record(100)).unwrap();
    assert_eq!(
        o.poll_event(),
        Some(OutboxEvent::QuotaAlarmRaised {
            used: 800,
            quota: 1000
        })
    );
    o.enqueue(record(200)).unwrap();
    let err = o.enqueue(record(1)).unwrap_err();
    assert_eq!(
        err,
        OutboxError::QuotaExceeded {
            used: 1000,
            quota: 1000,
            size: 1
        }
    );
    assert_eq!(
        o.depth(),
        9,
        "the refused message was never counted as stored"
    );
    // Telemetry that replaces an equal-sized unsent report still fits... but there is none
    // queued yet, so it is refused too.
    assert!(o.enqueue(telemetry(50)).is_err());
    o.handle_connected(t0);
    drain(&mut o);
    o.handle_ack(t0, 9).unwrap();
    assert_eq!(
        o.poll_event(),
        Some(OutboxEvent::QuotaAlarmCleared {
            used: 0,
            quota: 1000
        })
    );
    assert!(!o.alarm_raised());
}

#[test]
fn restoring_after_a_restart_keeps_sequence_numbers_and_releases_acked_rows() {
    let t0 = Instant::now();
    let stored = vec![
        StoredEntry {
            id: EntryId(1),
            class: Class::Record,
            coalesce_key: None,
            size: 5,
            seq: Some(4),
        },
        StoredEntry {
            id: EntryId(2),
            class: Class::Record,
            coalesce_key: None,
            size: 5,
            seq: Some(5),
        },
        StoredEntry {
            id: EntryId(3),
            class: Class::Telemetry,
            coalesce_key: Some("telemetry".into()),
            size: 5,
            seq: None,
        },
        StoredEntry {
            id: EntryId(6),
            class: Class::Telemetry,
            coalesce_key: Some("telemetry".into()),
            size: 5,
            seq: None,
        },
        StoredEntry {
            id: EntryId(7),
            class: Class::Record,
            coalesce_key: None,
            size: 5,
            seq: None,
        },
    ];
    let (mut o, delete) = Outbox::restore(OutboxConfig::default(), 4, stored).unwrap();
    assert_eq!(
        delete,
        vec![EntryId(1), EntryId(3)],
        "acked row and stale telemetry"
    );
    o.handle_connected(t0);
    let sent: Vec<_> = drain(&mut o).iter().map(|t| (t.id, t.seq)).collect();
    assert_eq!(
        sent,
        vec![(EntryId(2), 5), (EntryId(7), 6), (EntryId(6), 7)]
    );
    assert_eq!(o.enqueue(record(1)).unwrap().id, EntryId(8));
}

#[test]
fn a_store_with_two_rows_claiming_one_sequence_number_is_refused() {
    let row = |id| StoredEntry {
        id: EntryId(id),
        class: Class::Record,
        coalesce_key: None,
        size: 1,
        seq: Some(3),
    };
    let err = Outbox::restore(OutboxConfig::default(), 0, vec![row(1), row(2)]).unwrap_err();
    assert_eq!(err, OutboxError::CorruptStore(EntryId(2)));
}

#[test]
fn the_inbox_applies_in_order_drops_replays_and_gaps_and_batches_acks() {
    let t0 = Instant::now();
    let mut i = Inbox::new(10, Duration::from_millis(50), 3);
    assert_eq!(i.classify(t0, 0), Verdict::Unsequenced);
    assert_eq!(i.classify(t0, 12), Verdict::Gap { expected: 11 });
    assert_eq!(i.classify(t0, 11), Verdict::Apply);
    i.applied(t0, 11);
    assert_eq!(i.poll_ack(t0), None, "one message waits for the delay");
    assert_eq!(i.poll_timeout(), Some(t0 + Duration::from_millis(50)));
    assert_eq!(i.poll_ack(t0 + Duration::from_millis(50)), Some(11));
    for seq in 12..=14 {
        assert_eq!(i.classify(t0, seq), Verdict::Apply);
        i.applied(t0, seq);
    }
    assert_eq!(i.poll_ack(t0), Some(14), "three waiting: ack at once");
    assert_eq!(i.classify(t0, 13), Verdict::Duplicate);
    assert_eq!(i.poll_ack(t0), Some(14), "a replay is re-acked at once");
    assert_eq!(i.high_water(), 14);
}

#[test]
fn clock_skew_over_the_threshold_raises_the_alarm() {
    let local = UnixMillis(1_000_000);
    let ok = ClockSkew::measure(UnixMillis(1_001_000), local, Duration::from_secs(5));
    assert_eq!(
        ok,
        ClockSkew {
            skew_ms: 1000,
            alarm: false
        }
    );
    let behind = ClockSkew::measure(UnixMillis(990_000), local, Duration::from_secs(5));
    assert_eq!(behind.skew_ms, -10_000);
    assert!(behind.alarm);
}

/// A tiny deterministic generator, so the lossy-link scenario is the same on every run.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Two cores over an emulated link that drops, duplicates and disconnects, in virtual time;
/// the receiver must end with every record exactly once, in order.
#[test]
fn every_record_arrives_exactly_once_over_a_lossy_duplicating_flapping_link() {
    for seed in 1..=20u64 {
        let mut rng = Lcg(seed);
        let t0 = Instant::now();
        let mut now = t0;
        let config = OutboxConfig {
            window: 16,
            resend_after: Duration::from_secs(2),
            ..OutboxConfig::default()
        };
        let mut sender = Outbox::new(config, 0);
        let mut receiver = Inbox::new(0, Duration::from_millis(100), 8);
        let mut bodies: HashMap<EntryId, u64> = HashMap::new();
        let mut delivered: Vec<u64> = Vec::new();
        let total = 300u64;
        let mut produced = 0u64;
        let mut up = true;
        sender.handle_connected(now);
        let mut steps = 0;
        while (delivered.len() as u64) < total {
            steps += 1;
            assert!(steps < 200_000, "seed {seed}: no progress");
            now += Duration::from_millis(10);
            if produced < total && rng.chance(30) {
                let e = sender.enqueue(record(10)).unwrap();
                bodies.insert(e.id, produced);
                produced += 1;
            }
            if rng.chance(1) {
                up = !up;
                if up {
                    sender.handle_connected(now);
                    receiver.peer_reconnected(now);
                } else {
                    sender.handle_disconnected();
                }
            }
            sender.handle_timeout(now);
            while let Some(t) = sender.poll_transmit() {
                let copies = if rng.chance(10) {
                    0
                } else if rng.chance(10) {
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    if let Verdict::Apply = receiver.classify(now, t.seq) {
                        delivered.push(bodies[&t.id]);
                        receiver.applied(now, t.seq);
                    }
                }
            }
            if let Some(up_to) = receiver.poll_ack(now) {
                if up && !rng.chance(10) {
                    for id in sender.handle_ack(now, up_to).unwrap() {
                        bodies.remove(&id);
                    }
                }
            }
        }
        let expected: Vec<u64> = (0..total).collect();
        assert_eq!(delivered, expected, "seed {seed}");
    }
}
