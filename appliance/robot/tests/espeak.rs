//! The local TTS engine against the real espeak-ng (installed by `scripts/setup`).

use callgate_media::g711::Codec;
use callgate_robot::tts::FRAME_SAMPLES;
use callgate_robot::{EspeakNg, SpeechStyle, TextToSpeech, TtsError};

#[test]
fn say_produces_audible_8khz_speech_of_plausible_duration() {
    let tts = EspeakNg::default();
    let text = "Hello, this is Acme Energy calling about your account.";
    let speech = tts
        .synthesize(text, &SpeechStyle::voice("en-us"))
        .expect("espeak-ng is installed by scripts/setup");
    // Nine words at espeak-ng's default 175 words per minute: about three seconds.
    let ms = speech.duration_ms();
    assert!((1_500..=6_000).contains(&ms), "duration {ms} ms");
    assert!(speech.rms() > 500.0, "rms {}", speech.rms());
    let loud = speech
        .samples()
        .iter()
        .filter(|s| s.unsigned_abs() > 2_000)
        .count();
    assert!(loud > speech.samples().len() / 20, "mostly silence");
    // Ready for RTP: whole 20 ms frames of G.711.
    let frames = speech.g711_frames(Codec::Pcma);
    assert_eq!(frames.len(), speech.samples().len().div_ceil(FRAME_SAMPLES));
}

#[test]
fn a_faster_rate_speaks_the_same_text_in_less_time() {
    let tts = EspeakNg::default();
    let text = "Please leave a message after the tone.";
    let style = |wpm| SpeechStyle {
        voice: Some("en-gb".into()),
        words_per_minute: Some(wpm),
        pitch: None,
    };
    let slow = tts.synthesize(text, &style(120)).unwrap();
    let fast = tts.synthesize(text, &style(240)).unwrap();
    assert!(
        fast.duration_ms() * 3 < slow.duration_ms() * 2,
        "{} ms at 240 wpm vs {} ms at 120",
        fast.duration_ms(),
        slow.duration_ms()
    );
}

#[test]
fn the_same_request_gives_the_same_audio() {
    let tts = EspeakNg::default();
    let style = SpeechStyle::voice("en-us+f3");
    assert_eq!(
        tts.synthesize("yes, speaking", &style).unwrap(),
        tts.synthesize("yes, speaking", &style).unwrap()
    );
}

#[test]
fn a_missing_voice_is_a_typed_error() {
    let tts = EspeakNg::default();
    assert_eq!(
        tts.synthesize("hello", &SpeechStyle::voice("xx-nosuchvoice")),
        Err(TtsError::VoiceNotFound {
            voice: "xx-nosuchvoice".into()
        })
    );
}

#[test]
fn text_starting_with_a_dash_is_spoken_not_taken_as_an_option() {
    let tts = EspeakNg::default();
    let speech = tts
        .synthesize("--version is not an option here", &SpeechStyle::default())
        .unwrap();
    assert!(speech.duration_ms() > 1_000);
}

#[test]
fn an_engine_that_exits_with_an_error_is_engine_failed() {
    // `false` stands in for an espeak-ng that crashes.
    let tts = EspeakNg::new("false");
    assert!(matches!(
        tts.synthesize("hello", &SpeechStyle::default()),
        Err(TtsError::EngineFailed { .. })
    ));
}

#[test]
fn an_engine_that_prints_something_other_than_a_wav_is_bad_audio() {
    // `echo` exits cleanly but prints its arguments, not audio.
    let tts = EspeakNg::new("echo");
    assert!(matches!(
        tts.synthesize("hello", &SpeechStyle::default()),
        Err(TtsError::BadAudio { .. })
    ));
}
