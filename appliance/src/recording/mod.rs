//! Encrypted call recording on the box: the tokio side of `callgate_media::recording`.
//!
//! Owns: the `[recording]` settings ([`RecordingSettings`]), writing sealed segments to the
//! recordings directory crash-safely ([`CallRecorder`]: write `.part`, fsync, rename, fsync
//! the directory, then list it), and the SQLite segment list ([`SqliteSegmentStore`], table
//! `recording_segments`), legal holds and retention ([`apply_retention`]) and the disk guard
//! ([`check_disk`]). Talks to: the media engine (which hands it each call's two channels
//! of audio) and the store's pool. Must not: hold or accept any key that decrypts, or list a
//! segment before its file is durable.

mod retention;
mod store;
mod upkeep;
mod writer;

pub use retention::{apply_retention, check_disk, filesystem_usage, RetentionReport};
pub use store::SqliteSegmentStore;
pub use upkeep::{recover_at_start, RecordingUpkeep, UpkeepRhythm};
pub use writer::{
    record_test_tone, record_tone_command, CallRecorder, TEST_TONE_LEFT_HZ, TEST_TONE_RIGHT_HZ,
};

use callgate_common::observe::ConfigError;
use callgate_media::recording::{parse_recipients, RecordingError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The `[recording]` table of the appliance config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingSettings {
    /// The organisation's age X25519 recipients (`age1...`). Public keys only.
    pub recipients: Vec<String>,
    /// Length of each sealed segment, seconds.
    pub segment_seconds: u32,
    /// Where segments go; `<data_dir>/recordings` when absent.
    pub directory: Option<PathBuf>,
    /// Days a segment is kept unless its call is on legal hold.
    pub retention_days: u32,
    /// Percent of the recordings filesystem used at which the alarm is raised.
    pub disk_alarm_percent: u8,
    /// Percent used at which no new call starts (calls in progress keep recording); at most
    /// 100, which leaves the decision to `disk_refuse_free_mb` alone.
    pub disk_refuse_percent: u8,
    /// No new call starts while less than this many megabytes (1 MB = 1,000,000 bytes) are
    /// free on the recordings filesystem, whatever its percentage; the alarm is raised below
    /// twice this. 0 turns the floor off. About 1 MB holds a minute of one recorded call.
    pub disk_refuse_free_mb: u64,
    /// The recording-consent announcement (8 kHz WAV: µ-law, A-law or 16-bit PCM) played to
    /// the customer of every call whose campaign asks for it, before recording starts. The
    /// announcement itself is not in the recording. A campaign that asks for it does not
    /// dial on a box without it.
    pub consent_prompt: Option<PathBuf>,
}

impl Default for RecordingSettings {
    fn default() -> Self {
        RecordingSettings {
            recipients: Vec::new(),
            segment_seconds: 60,
            directory: None,
            retention_days: 90,
            disk_alarm_percent: 85,
            disk_refuse_percent: 95,
            disk_refuse_free_mb: 512,
            consent_prompt: None,
        }
    }
}

/// Checked recording settings.
#[derive(Debug, Clone)]
pub struct ValidRecording {
    pub recipients: Vec<callgate_media::age::x25519::Recipient>,
    pub segment_seconds: u32,
    pub directory: PathBuf,
    pub retention_days: u32,
    pub disk: callgate_media::recording::DiskThresholds,
    /// The recording-consent announcement, loaded.
    pub consent: Option<std::sync::Arc<callgate_media::prompt::Prompt>>,
}

impl RecordingSettings {
    /// Validates the settings, naming the key at fault.
    pub fn validate(&self, data_dir: &std::path::Path) -> Result<ValidRecording, ConfigError> {
        let recipients = parse_recipients(&self.recipients).map_err(|e| {
            let key = match &e {
                RecordingError::BadRecipient { index, .. }
                | RecordingError::IdentityNotAllowed { index } => {
                    format!("recording.recipients[{index}]")
                }
                _ => "recording.recipients".to_owned(),
            };
            ConfigError::invalid(key, e.to_string())
        })?;
        if !(5..=600).contains(&self.segment_seconds) {
            return Err(ConfigError::invalid(
                "recording.segment_seconds",
                format!("{} is outside 5..=600", self.segment_seconds),
            ));
        }
        if self.retention_days == 0 {
            return Err(ConfigError::invalid(
                "recording.retention_days",
                "must be at least 1 day",
            ));
        }
        if !(self.disk_alarm_percent < self.disk_refuse_percent && self.disk_refuse_percent <= 100)
        {
            return Err(ConfigError::invalid(
                "recording.disk_refuse_percent",
                format!(
                    "{} must be above disk_alarm_percent ({}) and at most 100",
                    self.disk_refuse_percent, self.disk_alarm_percent
                ),
            ));
        }
        let consent = match &self.consent_prompt {
            Some(path) => {
                let bad = |reason: String| {
                    ConfigError::invalid(
                        "recording.consent_prompt",
                        format!("{}: {reason}", path.display()),
                    )
                };
                let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
                let prompt = callgate_media::prompt::Prompt::from_wav(&bytes)
                    .map_err(|e| bad(e.to_string()))?;
                if prompt.is_empty() {
                    return Err(bad("the prompt holds no audio".into()));
                }
                Some(std::sync::Arc::new(prompt))
            }
            None => None,
        };
        Ok(ValidRecording {
            consent,
            recipients,
            retention_days: self.retention_days,
            disk: callgate_media::recording::DiskThresholds {
                alarm_at: f64::from(self.disk_alarm_percent) / 100.0,
                refuse_at: f64::from(self.disk_refuse_percent) / 100.0,
                hysteresis: 0.02,
                refuse_below_free_bytes: self.disk_refuse_free_mb.saturating_mul(1_000_000),
            },
            segment_seconds: self.segment_seconds,
            directory: self
                .directory
                .clone()
                .unwrap_or_else(|| data_dir.join("recordings")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const RECIPIENT: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

    #[test]
    fn defaults_to_one_minute_segments_under_the_data_dir() {
        let s = RecordingSettings {
            recipients: vec![RECIPIENT.into()],
            ..RecordingSettings::default()
        };
        let v = s.validate(Path::new("/var/lib/cg")).unwrap();
        assert_eq!(v.segment_seconds, 60);
        assert_eq!(v.directory, Path::new("/var/lib/cg/recordings"));
    }

    #[test]
    fn a_consent_prompt_that_is_missing_or_not_a_wav_is_refused_naming_the_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("consent.wav");
        let s = RecordingSettings {
            recipients: vec![RECIPIENT.into()],
            consent_prompt: Some(path.clone()),
            ..RecordingSettings::default()
        };
        let err = s.validate(dir.path()).unwrap_err().to_string();
        assert!(err.contains("recording.consent_prompt"), "{err}");
        assert!(err.contains("consent.wav"), "{err}");
        std::fs::write(&path, b"not a wav file").unwrap();
        let err = s.validate(dir.path()).unwrap_err().to_string();
        assert!(err.contains("recording.consent_prompt"), "{err}");
        let mut wav = callgate_media::wav::pcm16_header(1, 800).to_vec();
        wav.extend(std::iter::repeat_n([0x10u8, 0x00], 800).flatten());
        std::fs::write(&path, wav).unwrap();
        let v = s.validate(dir.path()).unwrap();
        assert_eq!(v.consent.map(|p| p.len()), Some(800));
    }

    #[test]
    fn a_secret_key_in_the_recipients_is_refused_naming_its_position() {
        let s = RecordingSettings {
            recipients: vec![
                RECIPIENT.into(),
                "AGE-SECRET-KEY-1GQ9778VQXMMJVE8SK7J6VT8UJ4HDQAJUVSFCWCM02D8GEWQ72PVQ2Y5J33".into(),
            ],
            ..RecordingSettings::default()
        };
        let err = s.validate(Path::new("d")).unwrap_err().to_string();
        assert!(err.contains("recording.recipients[1]"), "{err}");
        assert!(err.contains("secret"), "{err}");
    }

    #[test]
    fn no_recipients_and_silly_segment_lengths_are_refused() {
        let err = RecordingSettings::default()
            .validate(Path::new("d"))
            .unwrap_err();
        assert!(err.to_string().contains("recording.recipients"), "{err}");
        let s = RecordingSettings {
            recipients: vec![RECIPIENT.into()],
            segment_seconds: 1,
            ..RecordingSettings::default()
        };
        let err = s.validate(Path::new("d")).unwrap_err();
        assert!(
            err.to_string().contains("recording.segment_seconds"),
            "{err}"
        );
        let s = RecordingSettings {
            recipients: vec![RECIPIENT.into()],
            disk_alarm_percent: 95,
            disk_refuse_percent: 90,
            ..RecordingSettings::default()
        };
        let err = s.validate(Path::new("d")).unwrap_err();
        assert!(
            err.to_string().contains("recording.disk_refuse_percent"),
            "{err}"
        );
        let over = RecordingSettings {
            recipients: vec![RECIPIENT.into()],
            disk_alarm_percent: 99,
            disk_refuse_percent: 101,
            ..RecordingSettings::default()
        };
        let err = over.validate(Path::new("d")).unwrap_err().to_string();
        assert!(err.contains("at most 100"), "{err}");
        let floor_only = RecordingSettings {
            recipients: vec![RECIPIENT.into()],
            disk_alarm_percent: 99,
            disk_refuse_percent: 100,
            disk_refuse_free_mb: 2_000,
            ..RecordingSettings::default()
        };
        let valid = floor_only.validate(Path::new("d")).unwrap();
        assert_eq!(valid.disk.refuse_at, 1.0);
        assert_eq!(valid.disk.refuse_below_free_bytes, 2_000_000_000);
    }
}
