//! A labelled set of answered-call openings for measuring answering-machine detection,
//! generated with a [`TextToSpeech`] engine (espeak-ng) and a seeded random generator: the same
//! seed and engine give the same set, sample for sample.
//!
//! Each call is six seconds of 8 kHz audio as the appliance would receive it:
//! - **human**: a short answer ("hello?", "yes, speaking", ...) after 0.15–0.9 s, then
//!   silence; in a third of them the person says "hello?" again after 1.2–2.5 s;
//! - **machine**: a greeting ("Hi, you've reached ..., please leave a message after the
//!   tone", a carrier voicemail, or a terse "leave a message"), 0.2–0.7 s of pause, then a beep
//!   (440–2 000 Hz, 250–800 ms), then silence;
//!
//! spoken by one of ten espeak-ng voices at 130–200 words a minute and pitch 30–70, at a line
//! level of −22 to −8 dBFS, with white noise 12–35 dB below the speech, and passed through a
//! G.711 round-trip (µ-law or A-law).
//!
//! Owns the scenarios and the mixing. Must not: judge a detector (see [`super::eval`]).

use super::FRAME_SAMPLES;
use crate::tts::{SpeechStyle, TextToSpeech, TtsError};
use callgate_media::g711::Codec;
use callgate_media::tone::ToneGenerator;
use std::collections::HashMap;

/// Samples in one generated call: six seconds.
pub const CALL_SAMPLES: usize = 6 * 8_000;

/// Who really answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Truth {
    /// A person.
    Human,
    /// An answering machine.
    Machine,
}

/// One labelled call opening.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledCall {
    /// Who answered.
    pub truth: Truth,
    /// What was said, for reports.
    pub text: String,
    /// How it was said.
    pub style: SpeechStyle,
    /// The beep's frequency, for machines.
    pub beep_hz: Option<f64>,
    /// Peak level of the speech, dBFS.
    pub level_dbfs: f64,
    /// Speech-to-noise ratio, dB.
    pub snr_db: f64,
    /// Six seconds of 8 kHz linear audio after a G.711 round-trip.
    pub audio: Vec<i16>,
}

const VOICES: [&str; 10] = [
    "en-us",
    "en-gb",
    "en-us+f3",
    "en+m3",
    "en-gb-x-rp+f2",
    "en+f4",
    "en-029",
    "en-gb-scotland+m2",
    "en-us+m5",
    "en+f1",
];

const HUMAN_ANSWERS: [&str; 12] = [
    "Hello?",
    "Hello.",
    "Yes, speaking.",
    "Hi, who's this?",
    "Yeah?",
    "Hello, this is Sam.",
    "Good afternoon.",
    "Hi there.",
    "Yes?",
    "Maria speaking.",
    "Hello, yes?",
    "Hi.",
];

const NAMES: [&str; 6] = [
    "John",
    "Maria Lopez",
    "the Smiths",
    "Doctor Patel",
    "Acme Plumbing",
    "Chris",
];

const MACHINE_GREETINGS: [&str; 8] = [
    "Hi, you've reached {name}. I can't come to the phone right now, please leave a message after the tone.",
    "Hello, this is {name}. Sorry I missed your call. Leave your name and number and I'll get back to you.",
    "You have reached the voicemail of {name}. Please leave a message after the beep.",
    "The person you are calling is not available. Please leave a message after the tone.",
    "Thanks for calling {name}. We're away right now, so leave a message and we'll call you back.",
    "Hey, it's {name}. Leave a message.",
    "Leave a message.",
    "{name} here. You know what to do.",
];

const BEEP_HZ: [f64; 6] = [440.0, 850.0, 1_000.0, 1_400.0, 2_000.0, 1_330.0];

/// SplitMix64: small, fast, and the same on every platform.
#[derive(Debug, Clone)]
pub struct SeededRandom(u64);

impl SeededRandom {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> SeededRandom {
        SeededRandom(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[low, high)`.
    pub fn range(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }

    /// Uniform integer in `low..=high`.
    pub fn between(&mut self, low: u32, high: u32) -> u32 {
        low + (self.next_u64() % u64::from(high - low + 1)) as u32
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next_u64() % items.len() as u64) as usize]
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(1e-300);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// Generates labelled calls with a TTS engine, caching what it has already synthesised.
pub struct CorpusGenerator<'a> {
    tts: &'a dyn TextToSpeech,
    cache: HashMap<(String, SpeechStyle), Vec<i16>>,
}

impl<'a> CorpusGenerator<'a> {
    /// A generator speaking through `tts`.
    pub fn new(tts: &'a dyn TextToSpeech) -> CorpusGenerator<'a> {
        CorpusGenerator {
            tts,
            cache: HashMap::new(),
        }
    }

    fn speak(&mut self, text: &str, style: &SpeechStyle) -> Result<Vec<i16>, TtsError> {
        let key = (text.to_owned(), style.clone());
        if let Some(s) = self.cache.get(&key) {
            return Ok(s.clone());
        }
        let samples = self.tts.synthesize(text, style)?.into_samples();
        self.cache.insert(key, samples.clone());
        Ok(samples)
    }

    /// `count` calls from `seed`: alternately human and machine, human first.
    pub fn generate(&mut self, count: usize, seed: u64) -> Result<Vec<LabelledCall>, TtsError> {
        let mut rng = SeededRandom::new(seed);
        (0..count)
            .map(|i| {
                let truth = if i % 2 == 0 {
                    Truth::Human
                } else {
                    Truth::Machine
                };
                self.call(truth, &mut rng)
            })
            .collect()
    }

    /// One call with `truth`, drawing everything else from `rng`.
    pub fn call(&mut self, truth: Truth, rng: &mut SeededRandom) -> Result<LabelledCall, TtsError> {
        let style = SpeechStyle {
            voice: Some((*rng.pick(&VOICES)).to_owned()),
            words_per_minute: Some(rng.between(130, 200)),
            pitch: Some(rng.between(30, 70) as u8),
        };
        // Line level of the speech (peak-normalised, then this gain) and the noise under it.
        let level_dbfs = rng.range(-22.0, -8.0);
        let snr_db = rng.range(12.0, 35.0);
        let codec = if rng.unit() < 0.5 {
            Codec::Pcmu
        } else {
            Codec::Pcma
        };
        let lead_ms = rng.between(150, 900) as usize;

        let mut timeline: Vec<f64> = vec![0.0; lead_ms * 8];
        let (text, beep_hz) = match truth {
            Truth::Human => {
                let answer = *rng.pick(&HUMAN_ANSWERS);
                let again = rng.unit() < 1.0 / 3.0;
                let pause_ms = rng.between(1_200, 2_500) as usize;
                let speech = self.speak(answer, &style)?;
                push_speech(&mut timeline, &speech, level_dbfs);
                if again {
                    timeline.extend(std::iter::repeat_n(0.0, pause_ms * 8));
                    let hello = self.speak("Hello?", &style)?;
                    push_speech(&mut timeline, &hello, level_dbfs);
                    (format!("{answer} … Hello?"), None)
                } else {
                    (answer.to_owned(), None)
                }
            }
            Truth::Machine => {
                let template = *rng.pick(&MACHINE_GREETINGS);
                let name = *rng.pick(&NAMES);
                let greeting = template.replace("{name}", name);
                let pause_ms = rng.between(200, 700) as usize;
                let hz = *rng.pick(&BEEP_HZ);
                let beep_ms = rng.between(250, 800) as usize;
                let beep_dbfs = rng.range(-20.0, -8.0);
                let speech = self.speak(&greeting, &style)?;
                push_speech(&mut timeline, &speech, level_dbfs);
                timeline.extend(std::iter::repeat_n(0.0, pause_ms * 8));
                let amplitude = 32_767.0 * 10f64.powf(beep_dbfs / 20.0);
                let beep = ToneGenerator::new(hz, amplitude as i16).next_samples(beep_ms * 8);
                timeline.extend(beep.iter().map(|&s| f64::from(s)));
                (greeting, Some(hz))
            }
        };
        timeline.resize(CALL_SAMPLES, 0.0);

        // Noise relative to the speech's level (a peak-normalised voice sits ~10 dB below
        // its peak in RMS).
        let speech_rms = 32_767.0 * 10f64.powf((level_dbfs - 10.0) / 20.0);
        let noise_rms = speech_rms / 10f64.powf(snr_db / 20.0);
        let linear: Vec<i16> = timeline
            .iter()
            .map(|&s| {
                (s + noise_rms * rng.normal())
                    .round()
                    .clamp(-32_768.0, 32_767.0) as i16
            })
            .collect();
        let mut encoded = Vec::with_capacity(linear.len());
        codec.encode(&linear, &mut encoded);
        let mut audio = Vec::with_capacity(encoded.len());
        codec.decode(&encoded, &mut audio);
        debug_assert_eq!(audio.len() % FRAME_SAMPLES, 0);
        Ok(LabelledCall {
            truth,
            text,
            style,
            beep_hz,
            level_dbfs,
            snr_db,
            audio,
        })
    }
}

/// Appends `speech`, scaled so its peak sits at `level_dbfs`, to `timeline`.
fn push_speech(timeline: &mut Vec<f64>, speech: &[i16], level_dbfs: f64) {
    let peak = speech
        .iter()
        .map(|s| s.unsigned_abs())
        .max()
        .unwrap_or(0)
        .max(1);
    let gain = 32_767.0 * 10f64.powf(level_dbfs / 20.0) / f64::from(peak);
    timeline.extend(speech.iter().map(|&s| f64::from(s) * gain));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_random_generator_is_fixed_by_its_seed() {
        let a: Vec<u64> = {
            let mut r = SeededRandom::new(1);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let mut r = SeededRandom::new(1);
        assert_eq!(a, (0..4).map(|_| r.next_u64()).collect::<Vec<_>>());
        assert_ne!(a[0], SeededRandom::new(2).next_u64());
        let mut r = SeededRandom::new(3);
        for _ in 0..1_000 {
            let x = r.between(5, 9);
            assert!((5..=9).contains(&x));
            assert!((0.0..1.0).contains(&r.unit()));
        }
    }

    #[test]
    fn normal_draws_have_unit_spread() {
        let mut r = SeededRandom::new(9);
        let draws: Vec<f64> = (0..20_000).map(|_| r.normal()).collect();
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        let var = draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / draws.len() as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
    }
}
