//! A whole robot call in virtual time with the real espeak-ng: a script loaded from disk with
//! a WAV prompt, `say` steps synthesised and "played" frame by frame (20 ms each), and a
//! caller who presses keys at given moments — the way the daemon's driver will run it.

use callgate_common::ids::AgentGroupId;
use callgate_common::time::UnixMillis;
use callgate_media::dtmf::Digit;
use callgate_media::wav::pcm16_header;
use callgate_robot::tts::FRAME_SAMPLES;
use callgate_robot::{
    EspeakNg, RobotAction, RobotCall, RobotOutcome, RobotScript, SpeechStyle, TextToSpeech,
};
use std::sync::Arc;

const SCRIPT: &str = r#"
format = 1
name = "delivery"
version = 1
start = "chime"
voice = "en-us"

[steps.chime]
kind = "play"
file = "chime.wav"
next = "greet"

[steps.greet]
kind = "say"
text = "Hello {{first_name}}, your parcel arrives tomorrow."
next = "ask"

[steps.ask]
kind = "collect"
prompt = { say = "Press 1 to speak to someone, or 2 to end the call." }
max_digits = 1
timeout_ms = 3000
retries = 1
valid = ["1", "2"]
no_input_prompt = { say = "Sorry, I did not get that." }
next = "route"
on_no_input = "bye"
on_invalid = "bye"

[steps.route]
kind = "branch"
on = "input"
cases = { "1" = "agent" }
default = "bye"

[steps.agent]
kind = "transfer"
group = 4

[steps.bye]
kind = "hangup"
disposition = "informed"
"#;

/// One playing audio item: its id and how many frames are left.
struct Playing {
    playback: callgate_robot::PlaybackId,
    frames_left: usize,
}

/// Runs the call; `presses` are (ms after start, key) the caller makes. Returns the outcome,
/// the texts spoken and the call's length in ms.
fn run(presses: &[(i64, char)]) -> (RobotOutcome, Vec<String>, i64) {
    let dir = tempfile::tempdir().unwrap();
    // 0.5 s chime.
    let tone = callgate_media::tone::ToneGenerator::new(880.0, 6_000).next_samples(4_000);
    let mut wav = pcm16_header(1, tone.len() as u32).to_vec();
    for s in &tone {
        wav.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(dir.path().join("chime.wav"), wav).unwrap();
    std::fs::write(dir.path().join("delivery.toml"), SCRIPT).unwrap();
    let script = Arc::new(RobotScript::load(&dir.path().join("delivery.toml")).unwrap());

    let tts = EspeakNg::default();
    let start = UnixMillis(1_700_000_000_000);
    let mut call = RobotCall::start(start, script, [("first_name".to_owned(), "Ada".to_owned())]);
    let mut playing: Option<Playing> = None;
    let mut spoken = Vec::new();
    let mut presses = presses.to_vec();
    let mut now = start;
    for _ in 0..5_000 {
        while let Some(action) = call.poll_action() {
            match action {
                RobotAction::Play {
                    playback, prompt, ..
                } => {
                    playing = Some(Playing {
                        playback,
                        frames_left: prompt.len().div_ceil(FRAME_SAMPLES),
                    })
                }
                RobotAction::Say {
                    playback,
                    text,
                    voice,
                    ..
                } => {
                    let speech = tts
                        .synthesize(
                            &text,
                            &SpeechStyle {
                                voice,
                                ..SpeechStyle::default()
                            },
                        )
                        .unwrap();
                    spoken.push(text);
                    playing = Some(Playing {
                        playback,
                        frames_left: speech.samples().len().div_ceil(FRAME_SAMPLES),
                    });
                }
                RobotAction::StopPlayback { playback } => {
                    assert_eq!(playing.as_ref().map(|p| p.playback), Some(playback));
                    playing = None;
                }
                RobotAction::StartCollecting { .. } | RobotAction::StopCollecting { .. } => {}
                RobotAction::Transfer { .. } | RobotAction::Hangup { .. } => {
                    let outcome = call.outcome().cloned().unwrap();
                    return (outcome, spoken, now.millis_since(start));
                }
            }
        }
        // 20 ms pass.
        now = now.plus_millis(20);
        if let Some(p) = &mut playing {
            p.frames_left = p.frames_left.saturating_sub(1);
            if p.frames_left == 0 {
                let id = p.playback;
                playing = None;
                call.handle_playback_finished(now, id);
            }
        }
        if let Some(&(at, key)) = presses.first() {
            if now.millis_since(start) >= at {
                presses.remove(0);
                call.handle_digit(now, Digit::from_char(key).unwrap());
            }
        }
        if call.poll_timeout().is_some_and(|deadline| deadline <= now) {
            call.handle_timeout(now);
        }
    }
    panic!("the call never ended");
}

#[test]
fn a_caller_pressing_1_over_the_question_is_transferred() {
    // The chime and greeting take a few seconds; the key comes during the question.
    let (outcome, spoken, _) = run(&[(5_500, '1')]);
    assert_eq!(
        outcome,
        RobotOutcome::Transferred {
            step: "agent".into(),
            group: AgentGroupId(4)
        }
    );
    assert_eq!(spoken[0], "Hello Ada, your parcel arrives tomorrow.");
}

#[test]
fn a_silent_caller_hears_the_question_twice_and_is_hung_up() {
    let (outcome, spoken, length_ms) = run(&[]);
    assert_eq!(outcome.disposition(), "informed");
    assert_eq!(
        spoken.iter().filter(|s| s.starts_with("Press 1")).count(),
        2,
        "{spoken:?}"
    );
    assert!(spoken.iter().any(|s| s == "Sorry, I did not get that."));
    // Chime, greeting, question, 3 s, notice, question, 3 s: well over 10 s of call.
    assert!(length_ms > 10_000, "{length_ms} ms");
}
