//! Speech-like audio for simulated people and answering machines, sans-IO: 8 kHz samples
//! in 20-ms frames, drawn from a seeded generator. Not speech, but shaped like it for
//! anything that listens to cadence and energy (voice activity, answering-machine
//! detection, recordings): syllables of a voiced tone (a pitch with harmonics weighted by
//! two formants, with a little noise) under a syllable envelope, grouped in talk spurts
//! separated by pauses.
//!
//! - A person says a short "hello", waits, then talks in spurts of 0.8–3 s with pauses of
//!   0.3–1.5 s.
//! - A machine talks almost without pause for its whole greeting, beeps (1 kHz, 0.5 s), then
//!   is silent while it records.
//!
//! Owns no I/O and no clock: the caller asks for frames at its own pace.

use crate::dist::SimRng;
use std::f64::consts::TAU;
use std::time::Duration;

/// Samples per second.
pub const RATE: u32 = 8_000;
/// Samples per 20-ms frame.
pub const FRAME: usize = 160;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Person,
    Machine,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Segment {
    /// Talking for this many more samples.
    Talk(u32),
    /// Silent for this many more samples.
    Pause(u32),
    /// The machine's beep, this many more samples.
    Beep(u32),
    /// Silent for good.
    Quiet,
}

#[derive(Debug, Clone)]
struct Syllable {
    left: u32,
    len: u32,
    pitch: f64,
    glide: f64,
    formants: (f64, f64),
}

/// A source of speech-like audio.
#[derive(Debug, Clone)]
pub struct Voice {
    kind: Kind,
    rng: SimRng,
    level: f64,
    segment: Segment,
    syllable: Option<Syllable>,
    /// The machine's greeting still to speak, in samples.
    greeting_left: u32,
    phases: [f64; 8],
    spurts: u32,
    /// Samples produced so far.
    at: u64,
}

fn samples(d: f64) -> u32 {
    (d * f64::from(RATE)) as u32
}

impl Voice {
    /// A person who answered: "hello", a pause, then conversation.
    pub fn person(seed: u64, level: i16) -> Voice {
        let mut rng = SimRng::new(seed);
        let hello = samples(rng.range(0.4, 0.7));
        Voice::new(Kind::Person, rng, level, Segment::Talk(hello), 0)
    }

    /// An answering machine with a greeting of `greeting`, then a beep, then silence.
    pub fn machine(seed: u64, level: i16, greeting: Duration) -> Voice {
        let mut rng = SimRng::new(seed);
        let total = samples(greeting.as_secs_f64()).max(FRAME as u32);
        let first = samples(rng.range(1.5, 3.0)).min(total);
        Voice::new(
            Kind::Machine,
            rng,
            level,
            Segment::Talk(first),
            total - first,
        )
    }

    fn new(kind: Kind, rng: SimRng, level: i16, segment: Segment, greeting_left: u32) -> Voice {
        Voice {
            kind,
            rng,
            level: f64::from(level.max(1)),
            segment,
            syllable: None,
            greeting_left,
            phases: [0.0; 8],
            spurts: 0,
            at: 0,
        }
    }

    /// Whether the voice is silent for good (a machine after its beep).
    pub fn finished(&self) -> bool {
        self.segment == Segment::Quiet
    }

    /// How long the voice has spoken so far.
    pub fn elapsed(&self) -> Duration {
        Duration::from_secs_f64(self.at as f64 / f64::from(RATE))
    }

    fn next_segment(&mut self) -> Segment {
        match (self.kind, self.segment) {
            (Kind::Person, Segment::Talk(_)) => {
                self.spurts += 1;
                // After "hello" the person waits for an answer.
                let pause = if self.spurts == 1 {
                    self.rng.range(1.0, 1.8)
                } else {
                    self.rng.range(0.3, 1.5)
                };
                Segment::Pause(samples(pause))
            }
            (Kind::Person, _) => Segment::Talk(samples(self.rng.range(0.8, 3.0))),
            (Kind::Machine, Segment::Talk(_)) if self.greeting_left == 0 => {
                Segment::Beep(samples(0.5))
            }
            (Kind::Machine, Segment::Talk(_)) => {
                let pause = samples(self.rng.range(0.15, 0.3)).min(self.greeting_left);
                self.greeting_left -= pause;
                Segment::Pause(pause)
            }
            (Kind::Machine, Segment::Pause(_)) if self.greeting_left == 0 => {
                Segment::Beep(samples(0.5))
            }
            (Kind::Machine, Segment::Pause(_)) => {
                let talk = samples(self.rng.range(1.5, 3.0)).min(self.greeting_left);
                self.greeting_left -= talk;
                Segment::Talk(talk)
            }
            (Kind::Machine, _) => Segment::Quiet,
        }
    }

    fn new_syllable(&mut self) -> Syllable {
        let len = samples(self.rng.range(0.12, 0.26));
        Syllable {
            left: len,
            len,
            pitch: self.rng.range(100.0, 210.0),
            glide: self.rng.range(-0.25, 0.25),
            formants: (self.rng.range(300.0, 800.0), self.rng.range(900.0, 2_300.0)),
        }
    }

    fn talk_sample(&mut self) -> f64 {
        if self.syllable.as_ref().is_none_or(|s| s.left == 0) {
            self.syllable = Some(self.new_syllable());
        }
        let noise = self.rng.range(-1.0, 1.0);
        let Some(s) = self.syllable.as_mut() else {
            return 0.0;
        };
        let progress = 1.0 - f64::from(s.left) / f64::from(s.len);
        s.left -= 1;
        let envelope = (std::f64::consts::PI * progress).sin().powf(0.6);
        let pitch = s.pitch * (1.0 + s.glide * progress);
        let (f1, f2) = s.formants;
        let mut sum = 0.0;
        let mut weights = 0.0;
        for (k, phase) in self.phases.iter_mut().enumerate() {
            let f = pitch * (k as f64 + 1.0);
            let w = (-((f - f1) / 250.0).powi(2)).exp()
                + 0.6 * (-((f - f2) / 350.0).powi(2)).exp()
                + 0.15;
            *phase = (*phase + TAU * f / f64::from(RATE)) % TAU;
            sum += w * phase.sin();
            weights += w;
        }
        envelope * (0.92 * sum / weights + 0.08 * noise)
    }

    /// The next 20-ms frame.
    pub fn next_frame(&mut self) -> Vec<i16> {
        let mut out = Vec::with_capacity(FRAME);
        for _ in 0..FRAME {
            let v = match self.segment {
                Segment::Talk(_) => self.talk_sample(),
                Segment::Beep(_) => {
                    let t = self.at as f64 / f64::from(RATE);
                    0.8 * (TAU * 1_000.0 * t).sin()
                }
                Segment::Pause(_) | Segment::Quiet => 0.0,
            };
            out.push((v * self.level).clamp(-32_767.0, 32_767.0) as i16);
            self.at += 1;
            self.segment = match self.segment {
                Segment::Talk(1) | Segment::Pause(1) | Segment::Beep(1) => {
                    self.syllable = None;
                    self.next_segment()
                }
                Segment::Talk(0) | Segment::Pause(0) | Segment::Beep(0) => self.next_segment(),
                Segment::Talk(n) => Segment::Talk(n - 1),
                Segment::Pause(n) => Segment::Pause(n - 1),
                Segment::Beep(n) => Segment::Beep(n - 1),
                Segment::Quiet => Segment::Quiet,
            };
        }
        out
    }
}

/// Root-mean-square level of a frame.
pub fn rms(frame: &[i16]) -> f64 {
    if frame.is_empty() {
        return 0.0;
    }
    (frame.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / frame.len() as f64).sqrt()
}

/// Lengths of the talk spurts in `frames` (runs of frames above `threshold` RMS, allowing
/// gaps of up to 3 frames), in frames.
pub fn spurts(frames: &[Vec<i16>], threshold: f64) -> Vec<usize> {
    let mut out = Vec::new();
    let mut run = 0usize;
    let mut gap = 0usize;
    for f in frames {
        if rms(f) > threshold {
            run += 1 + gap;
            gap = 0;
        } else if run > 0 {
            gap += 1;
            if gap > 3 {
                out.push(run);
                run = 0;
                gap = 0;
            }
        }
    }
    if run > 0 {
        out.push(run);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(v: &mut Voice, seconds: u32) -> Vec<Vec<i16>> {
        (0..seconds * 50).map(|_| v.next_frame()).collect()
    }

    #[test]
    fn a_person_says_hello_waits_then_talks_in_spurts_with_pauses() {
        let mut v = Voice::person(3, 9000);
        let f = frames(&mut v, 30);
        let talk = spurts(&f, 300.0);
        // "hello" is short; then several spurts, none as long as a machine's greeting.
        assert!((15..=40).contains(&talk[0]), "hello frames {}", talk[0]);
        assert!(talk.len() >= 8, "{talk:?}");
        assert!(talk.iter().all(|&n| n <= 160), "{talk:?}");
        // About half to three quarters of the time is talk, the rest silence.
        let loud = f.iter().filter(|x| rms(x) > 300.0).count() as f64 / f.len() as f64;
        assert!((0.35..0.85).contains(&loud), "talk share {loud}");
        // The energy sits in the voice band, not at one pure tone.
        let all: Vec<i16> = f.concat();
        assert!(callgate_media::tone::tone_correlation(&all, 1_000.0) < 0.2);
    }

    #[test]
    fn a_machine_speaks_its_whole_greeting_then_beeps_then_is_quiet() {
        let mut v = Voice::machine(5, 9000, Duration::from_secs(10));
        let f = frames(&mut v, 14);
        // Talk share of the greeting is high (pauses under 0.3 s).
        let greeting = &f[..500];
        let loud = greeting.iter().filter(|x| rms(x) > 300.0).count() as f64 / 500.0;
        assert!(loud > 0.8, "greeting talk share {loud}");
        // The beep: 1 kHz right after the greeting.
        let beep: Vec<i16> = f[501..524].concat();
        assert!(callgate_media::tone::tone_correlation(&beep, 1_000.0) > 0.8);
        assert!(v.finished());
        assert!(f[530..].iter().all(|x| rms(x) == 0.0));
    }

    #[test]
    fn the_same_seed_makes_the_same_audio() {
        let a = frames(&mut Voice::person(9, 8000), 3);
        let b = frames(&mut Voice::person(9, 8000), 3);
        let c = frames(&mut Voice::person(10, 8000), 3);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
