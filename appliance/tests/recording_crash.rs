//! `kill -9` of the appliance in the middle of a recording: every segment the store lists, and
//! every finished segment file on disk, still decrypts with the real `age` tool.

use callgate_appliance::recording::{SqliteSegmentStore, TEST_TONE_LEFT_HZ, TEST_TONE_RIGHT_HZ};
use callgate_appliance::store::Store;
use callgate_media::recording::SegmentStore;
use callgate_media::tone::tone_correlation;
use callgate_media::wav;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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

fn age_decrypt(identity: &Path, file: &Path) -> Result<Vec<u8>, String> {
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(identity)
        .arg(file)
        .output()
        .expect("age must be installed (scripts/setup installs package `age`)");
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test]
async fn every_finished_segment_decrypts_after_sigkill_mid_recording() {
    let dir = tempfile::tempdir().unwrap();
    let (identity, recipient) = age_identity(dir.path());
    let data = dir.path().join("data");
    let config = dir.path().join("appliance.toml");
    std::fs::write(
        &config,
        format!("[appliance]\ndata_dir = {:?}\n", data.display().to_string()),
    )
    .unwrap();

    // An hour of audio in 5 s segments: far more than it can write before the kill.
    let mut child = Command::new(env!("CARGO_BIN_EXE_callgate-appliance"))
        .arg("--config")
        .arg(&config)
        .args(["record-tone", "--seconds", "3600", "--segment-seconds", "5"])
        .args(["--recipient", &recipient])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut announced = Vec::new();
    while announced.len() < 3 {
        let line = lines.next().expect("the recorder exited early").unwrap();
        announced.push(line);
    }
    // SIGKILL, while it is sealing or writing a later segment.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed, not finished: {status:?}");

    let call_id = announced[0]
        .split_whitespace()
        .nth(2)
        .and_then(|f| f.split('/').next())
        .unwrap()
        .to_owned();
    let store = Store::open(&data).await.unwrap();
    let listed = SqliteSegmentStore::new(store.pool().clone())
        .segments(&call_id)
        .await
        .unwrap();
    assert!(
        listed.len() >= 3,
        "the announced segments are listed: {listed:?}"
    );
    let recordings = data.join("recordings");
    for (i, record) in listed.iter().enumerate() {
        assert_eq!(record.index, i as u32, "no gaps in the list");
        let file = recordings.join(&record.file_name);
        let bytes = std::fs::read(&file).unwrap();
        assert_eq!(bytes.len() as u64, record.ciphertext_bytes);
        let sha: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(sha, record.sha256_hex);
        let plain = age_decrypt(&identity, &file)
            .unwrap_or_else(|e| panic!("{} does not decrypt: {e}", record.file_name));
        let w = wav::read(&plain).unwrap();
        assert_eq!(w.samples.len(), 2 * 5 * 8_000, "a full 5 s stereo segment");
        assert!(tone_correlation(&w.channel(0), TEST_TONE_LEFT_HZ) > 0.99);
        assert!(tone_correlation(&w.channel(1), TEST_TONE_RIGHT_HZ) > 0.99);
    }

    // Files on disk: every finished `.wav.age` decrypts (at most one may have been renamed
    // into place just before the kill, ahead of its store row); `.part` files are never listed.
    let mut unlisted = 0;
    for entry in std::fs::read_dir(recordings.join(&call_id)).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let is_listed = listed.iter().any(|r| r.file_name.ends_with(&name));
        if name.ends_with(".part") {
            assert!(
                !is_listed,
                "{name} is a partial file and must not be listed"
            );
            continue;
        }
        if !is_listed {
            unlisted += 1;
            age_decrypt(&identity, &path)
                .unwrap_or_else(|e| panic!("unlisted {name} is not complete: {e}"));
        }
    }
    assert!(unlisted <= 1, "{unlisted} finished files were never listed");

    // The daemon's start-up scan. Make the crash's worst case certain: the last listed
    // segment loses its row (renamed into place, killed before the commit), and a `.part`
    // file is left behind.
    let last = listed.last().unwrap().clone();
    sqlx::query("DELETE FROM recording_segments WHERE call_id = ? AND segment_index = ?")
        .bind(&last.call_id)
        .bind(i64::from(last.index))
        .execute(store.pool())
        .await
        .unwrap();
    let part = recordings.join(&call_id).join("seg-99999.wav.age.part");
    std::fs::write(&part, b"age-encryption.org/v1\ncut short").unwrap();
    store.pool().close().await;
    let ops = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &config,
        format!(
            "[appliance]\ndata_dir = {:?}\n[ops]\nlisten = \"127.0.0.1:{ops}\"\n\
             [web]\nenabled = false\n[board]\nkind = \"none\"\n\
             [recording]\nrecipients = [{recipient:?}]\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let log = dir.path().join("daemon.log");
    let daemon = Command::new(env!("CARGO_BIN_EXE_callgate-appliance"))
        .arg("--config")
        .arg(&config)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _daemon = Killed(daemon);
    let store = Store::open(&data).await.unwrap();
    let segments = SqliteSegmentStore::new(store.pool().clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let now_listed = segments.segments(&call_id).await.unwrap();
        if now_listed.iter().any(|r| r.index == last.index) && !part.exists() {
            let again = now_listed.iter().find(|r| r.index == last.index).unwrap();
            assert_eq!(again.sha256_hex, last.sha256_hex, "the same file is listed");
            assert_eq!(again.ciphertext_bytes, last.ciphertext_bytes);
            assert_eq!(again.duration_ms, last.duration_ms);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon's start-up scan did not list {} and delete the .part file; log:\n{}",
            last.file_name,
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
