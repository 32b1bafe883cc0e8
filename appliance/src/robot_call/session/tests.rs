//! The robot session in virtual time: 20 ms frames, synthesis answered by the test, key
//! presses at chosen times. No sleeps, no sockets.

use super::*;
use callgate_media::dtmf::Digit;
use callgate_robot::RobotScript;
use std::sync::Arc;

const FRAME: usize = 160;

/// Press 1 to confirm, 2 to decline; one retry on silence or a wrong key; 1 s to answer.
const MENU: &str = r#"
format = 1
name = "confirm"
version = 1
start = "ask"

[steps.ask]
kind = "collect"
prompt = { say = "Hello {{first_name}}, press 1 to confirm or 2 to decline." }
max_digits = 1
timeout_ms = 1000
retries = 1
valid = ["1", "2"]
into = "answer"
next = "route"
on_no_input = "no_answer"
on_invalid = "no_answer"

[steps.route]
kind = "branch"
on = "answer"
cases = { "1" = "to_desk", "2" = "declined" }
default = "no_answer"

[steps.to_desk]
kind = "transfer"
group = 3
on_no_agent = "sorry"

[steps.sorry]
kind = "play"
file = "sorry.wav"
next = "confirmed"

[steps.confirmed]
kind = "hangup"
disposition = "confirmed"

[steps.declined]
kind = "hangup"
disposition = "declined"

[steps.no_answer]
kind = "hangup"
disposition = "no_response"
"#;

fn t(ms: i64) -> UnixMillis {
    UnixMillis(1_800_000_000_000 + ms)
}

/// 0.2 s of a loud square wave: easy to tell from silence.
fn tone(ms: usize) -> Prompt {
    Prompt::tones(&[(500.0, ms as u32, 0)], 8_000)
}

fn session(contact: &[(&str, &str)]) -> RobotSession {
    let dir = tempfile::tempdir().unwrap();
    let mut wav = callgate_media::wav::pcm16_header(1, 1_600).to_vec();
    for i in 0..1_600i32 {
        let s: i16 = if (i / 8) % 2 == 0 { 6_000 } else { -6_000 };
        wav.extend(s.to_le_bytes());
    }
    std::fs::write(dir.path().join("sorry.wav"), wav).unwrap();
    let script = Arc::new(RobotScript::parse(MENU, dir.path()).unwrap());
    let fields = contact.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    RobotSession::new(t(0), RobotCall::start(t(0), script, fields), FRAME)
}

fn loud(frame: &[i16]) -> bool {
    frame.iter().any(|s| s.unsigned_abs() > 1_000)
}

/// What happened in one frame.
#[derive(Debug, Default)]
struct Frame {
    at: i64,
    loud: bool,
}

/// Runs frames from `from` ms until the session is over or `until` ms; `step` is called
/// before each frame with the time and may act on the session.
fn run(
    s: &mut RobotSession,
    from: i64,
    until: i64,
    mut step: impl FnMut(&mut RobotSession, i64),
) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut now = from;
    while now < until && !s.is_over() {
        step(s, now);
        let f = s.next_frame(t(now));
        assert_eq!(f.len(), FRAME);
        frames.push(Frame {
            at: now,
            loud: loud(&f),
        });
        now += 20;
    }
    frames
}

/// Answers every synthesis request at once with `ms` of tone; returns the texts asked for.
fn synth_at_once(s: &mut RobotSession, now: i64, ms: usize, said: &mut Vec<String>) {
    while let Some(o) = s.poll_output() {
        match o {
            SessionOutput::Synthesize { playback, text, .. } => {
                said.push(text);
                s.handle_speech(t(now), playback, Ok(tone(ms)));
            }
            SessionOutput::Transfer { .. } => panic!("unexpected transfer"),
        }
    }
}

#[test]
fn the_question_is_synthesised_with_contact_fields_and_plays_after_silence() {
    let mut s = session(&[("first_name", "Ada")]);
    let Some(SessionOutput::Synthesize { playback, text, .. }) = s.poll_output() else {
        panic!("the first thing is speech to synthesise");
    };
    assert_eq!(text, "Hello Ada, press 1 to confirm or 2 to decline.");
    // Synthesis takes 300 ms: silence meanwhile, then the speech.
    let waiting = run(&mut s, 0, 300, |_, _| {});
    assert!(waiting.iter().all(|f| !f.loud));
    s.handle_speech(t(300), playback, Ok(tone(200)));
    let playing = run(&mut s, 300, 500, |_, _| {});
    assert!(
        playing.iter().all(|f| f.loud),
        "speech plays from the next frame"
    );
}

#[test]
fn silence_re_asks_once_then_ends_with_the_no_input_disposition() {
    let mut s = session(&[]);
    let mut said = Vec::new();
    let frames = run(&mut s, 0, 10_000, |s, now| {
        synth_at_once(s, now, 200, &mut said)
    });
    assert_eq!(said.len(), 2, "asked, then asked again: {said:?}");
    assert_eq!(said[0], said[1]);
    assert_eq!(s.outcome().unwrap().disposition(), "no_response");
    // Prompt 200 ms + 1 s timeout, twice: over at 2.4 s, to the frame.
    let end = frames.last().unwrap().at;
    assert!((2_380..=2_420).contains(&end), "ended at {end} ms");
    let loud_frames = frames.iter().filter(|f| f.loud).count();
    assert_eq!(loud_frames, 20, "two 200 ms prompts of 10 frames");
}

#[test]
fn a_key_over_the_question_stops_it_at_once_and_the_script_branches() {
    let mut s = session(&[]);
    let mut said = Vec::new();
    let mut pressed = false;
    let frames = run(&mut s, 0, 5_000, |s, now| {
        synth_at_once(s, now, 2_000, &mut said);
        if now == 400 {
            s.handle_dtmf(t(now), DtmfReport::Pressed(Digit::from_char('2').unwrap()));
            pressed = true;
        }
    });
    assert!(pressed);
    assert_eq!(s.outcome().unwrap().disposition(), "declined");
    assert_eq!(s.digits_taken(), 1);
    assert!(frames.iter().filter(|f| f.at < 400).all(|f| f.loud));
    assert!(
        frames.iter().filter(|f| f.at >= 400).all(|f| !f.loud),
        "the question stops on the press"
    );
}

#[test]
fn key_releases_are_not_input() {
    let mut s = session(&[]);
    let digit = Digit::from_char('1').unwrap();
    s.handle_dtmf(
        t(0),
        DtmfReport::Released {
            digit,
            duration_ms: 100,
        },
    );
    assert_eq!(s.digits_taken(), 0);
    assert!(!s.is_over());
}

#[test]
fn a_transfer_nobody_takes_goes_on_at_on_no_agent() {
    let mut s = session(&[]);
    let mut transfers = Vec::new();
    let frames = run(&mut s, 0, 5_000, |s, now| {
        while let Some(o) = s.poll_output() {
            match o {
                SessionOutput::Synthesize { playback, .. } => {
                    s.handle_speech(t(now), playback, Ok(tone(100)))
                }
                SessionOutput::Transfer { group } => transfers.push((now, group)),
            }
        }
        if now == 200 {
            s.handle_dtmf(t(now), DtmfReport::Pressed(Digit::from_char('1').unwrap()));
        }
        if now == 1_000 {
            assert_eq!(s.transferring(), Some(AgentGroupId(3)));
            s.handle_transfer_failed(t(now));
        }
    });
    assert_eq!(transfers, vec![(220, AgentGroupId(3))]);
    assert_eq!(s.outcome().unwrap().disposition(), "confirmed");
    // Silence while the desk is asked; then the 0.2 s apology.
    assert!(frames
        .iter()
        .filter(|f| (220..1_000).contains(&f.at))
        .all(|f| !f.loud));
    assert_eq!(
        frames.iter().filter(|f| f.at >= 1_000 && f.loud).count(),
        10
    );
}

#[test]
fn a_transfer_an_agent_takes_ends_the_script_as_transferred() {
    let mut s = session(&[]);
    run(&mut s, 0, 2_000, |s, now| {
        while let Some(o) = s.poll_output() {
            match o {
                SessionOutput::Synthesize { playback, .. } => {
                    s.handle_speech(t(now), playback, Ok(tone(100)))
                }
                SessionOutput::Transfer { .. } => s.handle_transferred(t(now)),
            }
        }
        if now == 40 {
            s.handle_dtmf(t(now), DtmfReport::Pressed(Digit::from_char('1').unwrap()));
        }
    });
    assert!(s.is_over());
    assert_eq!(s.outcome().unwrap().disposition(), "transferred");
}

#[test]
fn speech_arriving_after_a_barge_in_is_dropped() {
    let mut s = session(&[]);
    let Some(SessionOutput::Synthesize { playback, .. }) = s.poll_output() else {
        panic!("speech first");
    };
    // The caller answers before the question was even synthesised.
    s.handle_dtmf(t(100), DtmfReport::Pressed(Digit::from_char('2').unwrap()));
    assert!(s.is_over());
    s.handle_speech(t(300), playback, Ok(tone(500)));
    assert!(!loud(&s.next_frame(t(320))));
    assert_eq!(s.outcome().unwrap().disposition(), "declined");
}

#[test]
fn failed_synthesis_ends_the_call_with_the_playback_failure_disposition() {
    let mut s = session(&[]);
    let Some(SessionOutput::Synthesize { playback, .. }) = s.poll_output() else {
        panic!("speech first");
    };
    s.handle_speech(t(50), playback, Err("espeak-ng: voice not found".into()));
    assert!(s.is_over());
    assert_eq!(
        s.outcome().unwrap().disposition(),
        callgate_robot::call::DISPOSITION_PLAYBACK_FAILED
    );
}

#[test]
fn the_caller_hanging_up_ends_the_session_where_it_was() {
    let mut s = session(&[]);
    let mut said = Vec::new();
    run(&mut s, 0, 100, |s, now| {
        synth_at_once(s, now, 1_000, &mut said)
    });
    s.handle_caller_hangup(t(100));
    assert!(s.is_over());
    assert_eq!(s.outcome().unwrap().disposition(), "caller_hangup");
    assert!(!loud(&s.next_frame(t(120))));
    assert!(s.poll_output().is_none());
}
