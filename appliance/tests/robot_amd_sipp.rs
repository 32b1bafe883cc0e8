//! Answering-machine detection in the call path, against SIPp as the called party playing
//! espeak-ng speech: `MachineScreen` in front of a placement ends machine answers as
//! `AnsweredMachine` (or leaves the script's message after the greeting), hands people to
//! the inner placement, and tells the dialer every verdict. The last test runs a small
//! labelled set (the robot crate's generator) through real calls and prints its accuracy.

mod dialer_support;
mod robot_support;

use callgate_appliance::dialer::placement::{Announcement, AnsweredCallPlacement};
use callgate_appliance::robot_call::{
    EndMachineCalls, MachineScreen, RobotPlacement, ScreenSettings, ScreenedAnswer, SpeechCache,
};
use callgate_common::wire::{CallOutcome, CallRecord};
use callgate_media::prompt::Prompt;
use callgate_media::tone::ToneGenerator;
use callgate_robot::amd::corpus::{CorpusGenerator, Truth};
use callgate_robot::amd::detect;
use callgate_robot::{AmdVerdict, CadenceDetector, EspeakNg, SpeechStyle, TextToSpeech};
use dialer_support::Rig;
use robot_support::*;
use std::sync::Arc;
use tokio::sync::mpsc;

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

fn machine_greeting() -> Vec<i16> {
    let greeting = spoken(
        "Hi, you have reached the Smiths. We cannot take your call right now. Please leave a message after the tone.",
        "en-us+m3",
    );
    let beep = ToneGenerator::new(1_000.0, 8_000).next_samples(4_000);
    opening(&[greeting, line_noise(400), beep], 14_000)
}

fn the_announcement() -> Announcement {
    Announcement::new(
        Prompt::tones(&[(440.0, 600, 100)], 8_000),
        CallOutcome::AnsweredHuman,
    )
}

/// One call to SIPp playing `audio` through `screen`; the record and the screen's verdict.
async fn screened_call<P: AnsweredCallPlacement>(
    audio: &[i16],
    contact: u64,
    screen: MachineScreen<P>,
    script: Option<&str>,
    robot: Option<&RobotPlacement>,
) -> (CallRecord, ScreenedAnswer) {
    screened_call_to("robot_callee.xml", audio, contact, screen, script, robot).await
}

/// As [`screened_call`], SIPp running `scenario`.
async fn screened_call_to<P: AnsweredCallPlacement>(
    scenario: &str,
    audio: &[i16],
    contact: u64,
    screen: MachineScreen<P>,
    script: Option<&str>,
    robot: Option<&RobotPlacement>,
) -> (CallRecord, ScreenedAnswer) {
    let callee = Callee::start(scenario, &callee_pcap(audio, &[], KeyStyle::Rfc4733));
    let mut rig = Rig::new().await;
    let (tx, mut verdicts) = mpsc::unbounded_channel();
    let brief = robot_brief(script);
    if let Some(r) = robot {
        r.set_campaign(brief_of(&brief)).unwrap();
    }
    let record = one_call(
        &mut rig,
        &callee,
        Arc::new(screen.with_verdicts(tx)),
        brief,
        one_contact(contact, &[("first_name", "Ada")]),
    )
    .await;
    let verdict = verdicts
        .try_recv()
        .expect("the screen reported its verdict");
    assert_eq!(verdict.call, record.call);
    (record, verdict)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_greeting_is_screened_as_a_machine_and_the_call_ends() {
    let screen = MachineScreen::new(
        the_announcement(),
        Arc::new(EndMachineCalls),
        ScreenSettings::default(),
    );
    let (record, verdict) = screened_call(&machine_greeting(), 1, screen, None, None).await;
    assert_eq!(verdict.decision.verdict, AmdVerdict::Machine, "{verdict:?}");
    assert_eq!(record.outcome, CallOutcome::AnsweredMachine);
    assert_eq!(record.disposition.as_deref(), Some("answering_machine"));
    println!(
        "machine: decided on {} ms of audio ({:?}), {} ms after the answer reached the screen",
        verdict.decision.after_ms, verdict.decision.reason, verdict.waited_ms
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_hello_is_screened_as_a_person_and_reaches_the_inner_placement() {
    let screen = MachineScreen::new(
        the_announcement(),
        Arc::new(EndMachineCalls),
        ScreenSettings::default(),
    );
    let audio = opening(&[spoken("Hello?", "en-us")], 10_000);
    let (record, verdict) = screened_call(&audio, 2, screen, None, None).await;
    assert_eq!(verdict.decision.verdict, AmdVerdict::Human, "{verdict:?}");
    assert_eq!(record.outcome, CallOutcome::AnsweredHuman);
    assert_eq!(
        record.disposition, None,
        "the inner announcement took the call"
    );
    let talked = record.ended_at.0 - record.answered_at.unwrap().0;
    assert!(
        talked >= i64::from(verdict.waited_ms) + 600,
        "the announcement played after the screen: {talked} ms in all, screen {} ms",
        verdict.waited_ms
    );
    println!(
        "connect delay added by the screen for a person: {} ms (decided on {} ms of audio)",
        verdict.waited_ms, verdict.decision.after_ms
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callee_hanging_up_during_screening_is_reported_without_a_verdict() {
    let screen = MachineScreen::new(
        the_announcement(),
        Arc::new(EndMachineCalls),
        ScreenSettings::default(),
    );
    let (record, verdict) = screened_call_to(
        "robot_callee_hangs_up.xml",
        &line_noise(3_000),
        4,
        screen,
        None,
        None,
    )
    .await;
    assert!(verdict.caller_hung_up, "{verdict:?}");
    assert_eq!(verdict.decision.verdict, AmdVerdict::Unknown);
    assert!(!verdict.machine());
    assert_eq!(record.outcome, CallOutcome::AnsweredHuman);
    assert_eq!(record.disposition.as_deref(), Some("caller_hangup"));
    let talked = record.ended_at.0 - record.answered_at.unwrap().0;
    assert!(
        talked < 2_500,
        "ended at the customer's BYE after 1 s: {talked} ms"
    );
}

const MESSAGE: &str = r#"
format = 1
name = "reminder"
version = 1
start = "hello"
on_machine = "message"

[steps.hello]
kind = "say"
text = "Hello {{first_name}}."
next = "bye"

[steps.bye]
kind = "hangup"
disposition = "greeted"

[steps.message]
kind = "say"
text = "This is Acme Energy for {{first_name}}. Please call us back."
next = "left"

[steps.left]
kind = "hangup"
disposition = "machine_message_left"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_gets_the_scripts_message_after_its_greeting() {
    let robot = RobotPlacement::new(
        Arc::new(SpeechCache::new(Arc::new(EspeakNg::default()), 16)),
        std::env::temp_dir(),
        the_announcement(),
    );
    let screen = MachineScreen::new(
        robot.clone(),
        Arc::new(robot.clone()),
        ScreenSettings::default(),
    );
    let greeting = machine_greeting();
    let (record, verdict) = screened_call(&greeting, 3, screen, Some(MESSAGE), Some(&robot)).await;
    assert_eq!(verdict.decision.verdict, AmdVerdict::Machine);
    assert_eq!(record.outcome, CallOutcome::AnsweredMachine);
    assert_eq!(record.disposition.as_deref(), Some("machine_message_left"));
    // The message starts after the greeting and beep (about 7.5 s of speech and tone here)
    // and lasts a few seconds.
    let talked = record.ended_at.0 - record.answered_at.unwrap().0;
    assert!(
        talked > 8_000,
        "the message followed the greeting: {talked} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_labelled_set_over_sipp_reports_its_accuracy() {
    let engine = EspeakNg::default();
    let calls = CorpusGenerator::new(&engine)
        .generate(12, 41)
        .expect("espeak-ng is installed by scripts/setup");
    let mut results = Vec::new();
    for (batch, chunk) in calls.chunks(4).enumerate() {
        let runs = chunk.iter().enumerate().map(|(i, c)| {
            let screen = MachineScreen::new(
                the_announcement(),
                Arc::new(EndMachineCalls),
                ScreenSettings::default(),
            );
            // As generated: the call's own line noise from the first sample.
            let audio = c.audio.clone();
            async move {
                let n = (batch * 4 + i) as u64;
                screened_call(&audio, 10 + n, screen, None, None).await
            }
        });
        for (c, (record, verdict)) in chunk.iter().zip(futures_util::future::join_all(runs).await) {
            results.push((c.truth, record, verdict));
        }
    }
    let mut right = 0;
    let mut same_as_offline = 0;
    println!("truth    offline  verdict  reason                      audio ms  waited ms  outcome");
    for ((truth, record, v), c) in results.iter().zip(&calls) {
        let offline = detect(&mut CadenceDetector::default(), &c.audio).verdict;
        if offline == v.decision.verdict {
            same_as_offline += 1;
        }
        let expected = match truth {
            Truth::Human => CallOutcome::AnsweredHuman,
            Truth::Machine => CallOutcome::AnsweredMachine,
        };
        // Unknown goes to the inner placement like a person: wrong for a machine.
        assert_eq!(
            record.outcome,
            if v.decision.verdict == AmdVerdict::Machine {
                CallOutcome::AnsweredMachine
            } else {
                CallOutcome::AnsweredHuman
            },
            "the record follows the verdict"
        );
        if record.outcome == expected {
            right += 1;
        }
        println!(
            "{:<8} {:<8} {:<8} {:<27} {:>8}  {:>9}  {:?}",
            format!("{truth:?}"),
            format!("{offline:?}"),
            format!("{:?}", v.decision.verdict),
            format!("{:?}", v.decision.reason),
            v.decision.after_ms,
            v.waited_ms,
            record.outcome
        );
    }
    let accuracy = f64::from(right) / results.len() as f64;
    println!(
        "labelled set over SIPp: {right}/{} right ({:.1} %); {same_as_offline} verdicts as the offline detector's",
        results.len(),
        accuracy * 100.0
    );
    assert_eq!(results.len(), 12);
    assert!(
        accuracy >= 0.75,
        "accuracy over real calls fell to {accuracy:.2}"
    );
}
