//! A recorded call decrypts with the real `age` tool, and each channel carries the tone that
//! was sent on its leg: 440 Hz from the customer (PCMU), 1 kHz from the agent (PCMA), through
//! RTP packetisation and the jitter buffer, into segments listed in the SQLite store.

use callgate_appliance::recording::{CallRecorder, RecordingSettings, SqliteSegmentStore};
use callgate_appliance::store::Store;
use callgate_common::ids::CallId;
use callgate_media::g711::Codec;
use callgate_media::jitter::{JitterBuffer, JitterConfig};
use callgate_media::recording::SegmentStore;
use callgate_media::rtp::RtpSender;
use callgate_media::tone::{tone_correlation, ToneGenerator};
use callgate_media::wav;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Generates an identity with `age-keygen` in `dir` and returns (identity file, recipient).
fn age_identity(dir: &Path) -> (PathBuf, String) {
    std::fs::create_dir_all(dir).unwrap();
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
    assert!(out.status.success());
    (id, String::from_utf8(out.stdout).unwrap().trim().to_owned())
}

fn age_decrypt(identity: &Path, file: &Path) -> Vec<u8> {
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(identity)
        .arg(file)
        .output()
        .expect("age must be installed (scripts/setup installs package `age`)");
    assert!(
        out.status.success(),
        "age -d {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[tokio::test]
async fn a_recorded_call_decrypts_with_age_and_each_channel_carries_its_leg_tone() {
    let dir = tempfile::tempdir().unwrap();
    let (identity, recipient) = age_identity(dir.path());
    let data = dir.path().join("data");
    let settings = RecordingSettings {
        recipients: vec![recipient],
        ..RecordingSettings::default()
    }
    .validate(&data)
    .unwrap();
    let store = Store::open(&data).await.unwrap();
    let segments = SqliteSegmentStore::new(store.pool().clone());
    let call = CallId::new_v7();
    // One-second segments keep the test short; the daemon uses the configured length.
    let mut recorder =
        CallRecorder::start_with_segment_frames(call, &settings, 8_000, segments.clone()).unwrap();

    // Two legs: the customer's carrier speaks PCMU, the agent's phone PCMA.
    let mut customer_tone = ToneGenerator::new(440.0, 8_000);
    let mut agent_tone = ToneGenerator::new(1_000.0, 8_000);
    let mut customer_tx = RtpSender::new(0x1111, 100, 9_000);
    let mut agent_tx = RtpSender::new(0x2222, 60_000, 4_000_000_000);
    let mut customer_jb = JitterBuffer::new(JitterConfig::default());
    let mut agent_jb = JitterBuffer::new(JitterConfig::default());
    let t0 = Instant::now();
    let frames = 175; // 3.5 s
    for tick in 0..frames + 10 {
        let now = t0 + Duration::from_millis(20 * tick);
        if tick < frames {
            let mut payload = Vec::new();
            Codec::Pcmu.encode(&customer_tone.next_samples(160), &mut payload);
            customer_jb.push(now, &customer_tx.audio(0, payload), Codec::Pcmu);
            let mut payload = Vec::new();
            Codec::Pcma.encode(&agent_tone.next_samples(160), &mut payload);
            // The agent's packets arrive 7 ms later than the customer's.
            agent_jb.push(
                now + Duration::from_millis(7),
                &agent_tx.audio(8, payload),
                Codec::Pcma,
            );
        }
        let later = now + Duration::from_millis(7);
        if let (Some(c), Some(a)) = (customer_jb.pop(later), agent_jb.pop(later)) {
            recorder.push(&c.samples, &a.samples).await.unwrap();
        }
    }
    let written = recorder.finish().await.unwrap();
    assert!(written.len() >= 4, "3.5 s in 1 s segments: {written:?}");

    let listed = segments.segments(&call.to_string()).await.unwrap();
    assert_eq!(listed, written, "the store lists exactly what was written");
    let (mut left, mut right) = (Vec::new(), Vec::new());
    for record in &listed {
        let file = settings.directory.join(&record.file_name);
        let ciphertext = std::fs::read(&file).unwrap();
        assert_eq!(
            ciphertext.len() as u64,
            record.ciphertext_bytes,
            "{}",
            record.file_name
        );
        let sha: String = Sha256::digest(&ciphertext)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(sha, record.sha256_hex, "{}", record.file_name);
        let w = wav::read(&age_decrypt(&identity, &file)).unwrap();
        assert_eq!(w.channels, 2);
        left.extend(w.channel(0));
        right.extend(w.channel(1));
    }
    // Skip the jitter buffer's initial silence; the rest is the tones.
    let start = left.iter().position(|s| *s != 0).unwrap();
    let (left, right) = (&left[start..start + 24_000], &right[start..start + 24_000]);
    let (l440, l1k) = (
        tone_correlation(left, 440.0),
        tone_correlation(left, 1_000.0),
    );
    let (r440, r1k) = (
        tone_correlation(right, 440.0),
        tone_correlation(right, 1_000.0),
    );
    assert!(
        l440 > 0.95 && l1k < 0.05,
        "customer (left): 440 Hz {l440:.3}, 1 kHz {l1k:.3}"
    );
    assert!(
        r1k > 0.95 && r440 < 0.05,
        "agent (right): 440 Hz {r440:.3}, 1 kHz {r1k:.3}"
    );
}

#[tokio::test]
async fn a_segment_on_disk_is_ciphertext_only_its_recipient_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let (identity, recipient) = age_identity(dir.path());
    let (stranger, _) = age_identity(&dir.path().join("stranger"));
    let settings = RecordingSettings {
        recipients: vec![recipient],
        ..RecordingSettings::default()
    }
    .validate(dir.path())
    .unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    let mut recorder = CallRecorder::start_with_segment_frames(
        CallId::new_v7(),
        &settings,
        800,
        SqliteSegmentStore::new(store.pool().clone()),
    )
    .unwrap();
    recorder.push(&[1_000; 800], &[-1_000; 800]).await.unwrap();
    let written = recorder.finish().await.unwrap();
    assert_eq!(written.len(), 1);
    let file = settings.directory.join(&written[0].file_name);
    let raw = std::fs::read(&file).unwrap();
    assert!(raw.starts_with(b"age-encryption.org/v1\n"), "an age file");
    assert!(
        !raw.windows(4).any(|w| w == b"RIFF"),
        "no plaintext WAV on disk"
    );
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&stranger)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a stranger's identity must not decrypt"
    );
    let w = wav::read(&age_decrypt(&identity, &file)).unwrap();
    assert_eq!(w.channel(0), vec![1_000; 800]);
    assert_eq!(w.channel(1), vec![-1_000; 800]);
}
