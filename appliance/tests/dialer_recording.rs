//! With `[recording]` configured, answered campaign calls are recorded while the
//! announcement plays: the call record counts the segments, and each decrypts with `age`
//! into a stereo WAV carrying the announcement (right) and what the carrier sent back (left).

mod dialer_support;

use callgate_appliance::recording::RecordingSettings;
use callgate_common::time::UnixMillis;
use callgate_common::wire::{CallOutcome, Uplink};
use dialer_support::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn age_identity(dir: &Path) -> (PathBuf, String) {
    let id = dir.join("identity.txt");
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&id)
        .output()
        .expect("age-keygen must be installed (scripts/setup installs package `age`)");
    assert!(out.status.success(), "age-keygen failed: {out:?}");
    let out = Command::new("age-keygen")
        .arg("-y")
        .arg(&id)
        .output()
        .unwrap();
    (id, String::from_utf8(out.stdout).unwrap().trim().to_owned())
}

fn rms(samples: impl Iterator<Item = i16>) -> f64 {
    let (mut sum, mut n) = (0.0, 0usize);
    for s in samples {
        sum += f64::from(s) * f64::from(s);
        n += 1;
    }
    (sum / n.max(1) as f64).sqrt()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_calls_are_recorded_and_decrypt_with_age() {
    let carrier = Carrier::start();
    let mut rig = Rig::new().await;
    let (identity, recipient) = age_identity(rig.dir.path());
    let recordings = rig.dir.path().join("recordings");
    rig.recording = Some(
        RecordingSettings {
            recipients: vec![recipient],
            directory: Some(recordings.clone()),
            ..RecordingSettings::default()
        }
        .validate(rig.dir.path())
        .unwrap(),
    );
    let hour = UnixMillis::now().plus_millis(3_600_000);
    rig.feed(agentless_brief(all_day())).await;
    rig.feed(lease(1, 0..30, hour, |_| false)).await;
    rig.feed(grant(10, hour)).await;
    rig.start_dialer(carrier.addr, Duration::from_millis(2_500))
        .await;
    rig.settled(Duration::from_secs(60)).await;

    let records: Vec<_> = rig
        .uplinks()
        .await
        .into_iter()
        .filter_map(|u| match u {
            Uplink::CallRecord(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(records.len(), 30);
    let answered: Vec<_> = records
        .iter()
        .filter(|r| r.outcome == CallOutcome::AnsweredHuman)
        .collect();
    assert!(!answered.is_empty(), "the carrier answered some calls");
    for r in &records {
        let (listed,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM recording_segments WHERE call_id = $1")
                .bind(r.call.to_string())
                .fetch_one(rig.store.pool())
                .await
                .unwrap();
        assert_eq!(listed, i64::from(r.recording_segments), "{:?}", r.outcome);
        if r.outcome != CallOutcome::AnsweredHuman {
            assert_eq!(r.recording_segments, 0, "unanswered calls are not recorded");
        }
    }
    // Calls the customer did not cut short played the whole announcement: decrypt one.
    let full = answered
        .iter()
        .max_by_key(|r| r.ended_at.0 - r.answered_at.unwrap().0)
        .unwrap();
    assert!(full.recording_segments >= 1);
    let (file,): (String,) = sqlx::query_as(
        "SELECT file_name FROM recording_segments WHERE call_id = $1 ORDER BY segment_index",
    )
    .bind(full.call.to_string())
    .fetch_one(rig.store.pool())
    .await
    .unwrap();
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&identity)
        .arg(recordings.join(&file))
        .output()
        .expect("age must be installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wav = out.stdout;
    assert_eq!(&wav[..4], b"RIFF");
    let samples: Vec<i16> = wav[44..]
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    // 0.7 s of tone at amplitude 8000 in 0.8 s: right-channel RMS well above 1000.
    let right = rms(samples.iter().skip(1).step_by(2).copied());
    let left = rms(samples.iter().step_by(2).copied());
    assert!(right > 1_000.0, "announcement channel RMS {right}");
    assert!(
        left > 100.0,
        "the echoed customer channel is not silent: RMS {left}"
    );
    rig.dialer.take().unwrap().stop().await;
}
