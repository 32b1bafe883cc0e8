//! Answering-machine detection on speech from the real espeak-ng (installed by
//! `scripts/setup`): clear-cut openings are classified right, and the labelled-set generator
//! behind `callgate-amd-eval` is deterministic.

use callgate_media::tone::ToneGenerator;
use callgate_robot::amd::corpus::{CorpusGenerator, Truth, CALL_SAMPLES};
use callgate_robot::amd::{detect, AmdReason, AmdVerdict, CadenceDetector};
use callgate_robot::{EspeakNg, SpeechStyle, TextToSpeech};

fn spoken(text: &str, voice: &str) -> Vec<i16> {
    EspeakNg::default()
        .synthesize(text, &SpeechStyle::voice(voice))
        .expect("espeak-ng is installed by scripts/setup")
        .into_samples()
}

fn opening(parts: &[Vec<i16>]) -> Vec<i16> {
    let mut audio = vec![0; 2_400];
    for p in parts {
        audio.extend(p);
    }
    audio.resize(CALL_SAMPLES, 0);
    audio
}

#[test]
fn a_person_saying_hello_then_waiting_is_human() {
    for voice in ["en-us", "en-gb+f3"] {
        let audio = opening(&[spoken("Hello?", voice)]);
        let d = detect(&mut CadenceDetector::default(), &audio);
        assert_eq!(d.verdict, AmdVerdict::Human, "{voice}: {d:?}");
        assert_eq!(d.reason, AmdReason::ShortGreetingThenSilence);
        assert!(
            d.after_ms < 2_500,
            "{voice}: decided after {} ms",
            d.after_ms
        );
    }
}

#[test]
fn a_voicemail_greeting_is_a_machine_before_it_ends() {
    let greeting = spoken(
        "Hi, you've reached John. I can't come to the phone right now, please leave a message after the tone.",
        "en-us+m3",
    );
    let beep = ToneGenerator::new(1_000.0, 8_000).next_samples(4_000);
    let audio = opening(&[greeting.clone(), vec![0; 3_200], beep]);
    let d = detect(&mut CadenceDetector::default(), &audio);
    assert_eq!(d.verdict, AmdVerdict::Machine, "{d:?}");
    let greeting_ms = greeting.len() as u32 / 8;
    assert!(d.after_ms < 300 + greeting_ms, "{} ms", d.after_ms);
}

#[test]
fn a_beep_alone_is_a_machine() {
    let beep = ToneGenerator::new(1_400.0, 6_000).next_samples(3_200);
    let d = detect(&mut CadenceDetector::default(), &opening(&[beep]));
    assert_eq!(
        (d.verdict, d.reason),
        (AmdVerdict::Machine, AmdReason::Beep)
    );
}

#[test]
fn the_labelled_set_is_the_same_for_the_same_seed() {
    let tts = EspeakNg::default();
    let a = CorpusGenerator::new(&tts).generate(4, 11).unwrap();
    let b = CorpusGenerator::new(&tts).generate(4, 11).unwrap();
    assert_eq!(a, b);
    let truths: Vec<Truth> = a.iter().map(|c| c.truth).collect();
    assert_eq!(
        truths,
        [Truth::Human, Truth::Machine, Truth::Human, Truth::Machine]
    );
    assert!(a.iter().all(|c| c.audio.len() == CALL_SAMPLES));
    assert!(a[1].beep_hz.is_some() && a[0].beep_hz.is_none());
    let other = CorpusGenerator::new(&tts).generate(4, 12).unwrap();
    assert_ne!(a, other, "another seed gives another set");
}
