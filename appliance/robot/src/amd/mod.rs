//! Answering-machine detection (AMD): from the first seconds of an answered call's audio,
//! did a person or a machine answer?
//!
//! [`MachineDetector`] is the trait the dialer uses; [`CadenceDetector`] is the local
//! implementation, sans-IO: the driver feeds it 20 ms frames of 8 kHz linear audio (decoded
//! from RTP) and polls its decision. Audio time is counted in frames, so the same audio always
//! gives the same decision at the same point. [`corpus`] generates a labelled set with
//! espeak-ng and [`eval`] scores a detector on it (`callgate-amd-eval`).
//!
//! How [`CadenceDetector`] decides, in the order it checks each frame:
//! - **beep** — frames with 60 % or more of their energy in one narrow band (Goertzel
//!   filters every 25 Hz from 350 to 2 150 Hz), for 100 ms in a row: a machine's "record after the
//!   tone" beep → machine;
//! - **long greeting** — speech that runs on (pauses shorter than the after-greeting silence)
//!   past `max_greeting_ms` → machine ("Hi, you've reached ...");
//! - **many words** — more than `max_words` words before a pause → machine;
//! - **short greeting then silence** — at least one word and then `after_greeting_silence_ms`
//!   of silence (a person said "hello?" and waits) → human;
//! - **initial silence** — nothing said for `initial_silence_ms` → unknown (dead air);
//! - **deadline** — no decision after `deadline_ms` → unknown.
//!
//! Speech is told from silence by frame energy against a tracked noise floor. Must not: touch
//! RTP, calls or the clock.

pub mod corpus;
pub mod eval;
mod goertzel;

use goertzel::BeepFinder;

/// Samples in one frame fed to a detector: 20 ms at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;
/// Milliseconds of audio in one frame.
pub const FRAME_MS: u32 = 20;

/// Who answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AmdVerdict {
    /// A person.
    Human,
    /// An answering machine or voicemail.
    Machine,
    /// The audio did not say in time.
    Unknown,
}

/// What the decision rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AmdReason {
    /// A short greeting followed by silence.
    ShortGreetingThenSilence,
    /// Speech running on past the longest greeting a person gives.
    LongGreeting,
    /// More words than a person's greeting has.
    ManyWords,
    /// A machine's beep.
    Beep,
    /// No speech at all for the initial-silence time.
    InitialSilence,
    /// The deadline passed without a decision.
    Deadline,
}

/// A detector's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmdDecision {
    /// Who answered.
    pub verdict: AmdVerdict,
    /// Why.
    pub reason: AmdReason,
    /// Milliseconds of audio it took.
    pub after_ms: u32,
}

/// Decides human / machine / unknown from the first seconds of an answered call.
pub trait MachineDetector {
    /// Feeds the next 20 ms frame ([`FRAME_SAMPLES`] samples of 8 kHz linear audio; a short
    /// last frame is allowed). Frames after the decision are ignored.
    fn handle_frame(&mut self, frame: &[i16]);

    /// The decision, once made; it never changes afterwards.
    fn poll_decision(&self) -> Option<AmdDecision>;
}

/// The thresholds of [`CadenceDetector`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CadenceSettings {
    /// Silence before any speech that ends detection as unknown.
    pub initial_silence_ms: u32,
    /// Speech running longer than this (short pauses included) is a machine.
    pub max_greeting_ms: u32,
    /// Silence after a greeting that makes it a person's.
    pub after_greeting_silence_ms: u32,
    /// Shortest voiced run that counts as a word.
    pub min_word_ms: u32,
    /// Silence that separates two words.
    pub between_words_silence_ms: u32,
    /// More words than this before a pause is a machine.
    pub max_words: u32,
    /// The latest decision; unknown after it.
    pub deadline_ms: u32,
    /// A beep must last this long.
    pub min_beep_ms: u32,
    /// Frame RMS (16-bit units) below which a frame is always silence.
    pub min_speech_rms: f64,
    /// How far above the line's noise floor a frame must be to count as speech, dB.
    pub speech_over_noise_db: f64,
}

impl Default for CadenceSettings {
    fn default() -> Self {
        CadenceSettings {
            initial_silence_ms: 2_500,
            max_greeting_ms: 1_800,
            after_greeting_silence_ms: 800,
            min_word_ms: 100,
            between_words_silence_ms: 60,
            max_words: 4,
            deadline_ms: 5_000,
            min_beep_ms: 100,
            min_speech_rms: 180.0,
            speech_over_noise_db: 4.8,
        }
    }
}

/// Greeting-length, silence-cadence and beep detection (see the module doc).
#[derive(Debug, Clone)]
pub struct CadenceDetector {
    settings: CadenceSettings,
    elapsed_ms: u32,
    /// Smoothed energy floor (mean square) of the line's noise.
    noise_floor: Option<f64>,
    /// Current voiced run and silence run, ms.
    voiced_run_ms: u32,
    silence_run_ms: u32,
    in_word: bool,
    words: u32,
    /// When the current greeting began (first word of it), ms.
    greeting_start_ms: Option<u32>,
    heard_speech: bool,
    beep: BeepFinder,
    decision: Option<AmdDecision>,
}

impl Default for CadenceDetector {
    fn default() -> Self {
        CadenceDetector::new(CadenceSettings::default())
    }
}

impl CadenceDetector {
    /// A detector with these thresholds.
    pub fn new(settings: CadenceSettings) -> CadenceDetector {
        CadenceDetector {
            settings,
            elapsed_ms: 0,
            noise_floor: None,
            voiced_run_ms: 0,
            silence_run_ms: 0,
            in_word: false,
            words: 0,
            greeting_start_ms: None,
            heard_speech: false,
            beep: BeepFinder::new(),
            decision: None,
        }
    }

    /// The thresholds in use.
    pub fn settings(&self) -> &CadenceSettings {
        &self.settings
    }

    fn decide(&mut self, verdict: AmdVerdict, reason: AmdReason) {
        self.decision = Some(AmdDecision {
            verdict,
            reason,
            after_ms: self.elapsed_ms,
        });
    }

    /// Whether a frame of mean-square `energy` is speech, updating the noise floor.
    fn voiced(&mut self, energy: f64) -> bool {
        let floor = match self.noise_floor {
            None => energy,
            // Falls at once to quieter frames; rises slowly (about 6 dB a second) so speech
            // does not drag it up.
            Some(f) if energy < f => energy,
            Some(f) => f * 1.03,
        };
        self.noise_floor = Some(floor.max(1.0));
        let over = 10f64.powf(self.settings.speech_over_noise_db / 10.0);
        let threshold = (self.settings.min_speech_rms.powi(2)).max(floor * over);
        energy > threshold
    }
}

impl MachineDetector for CadenceDetector {
    fn handle_frame(&mut self, frame: &[i16]) {
        if self.decision.is_some() || frame.is_empty() {
            return;
        }
        let s = self.settings;
        self.elapsed_ms += FRAME_MS;
        let energy = frame.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / frame.len() as f64;
        let voiced = self.voiced(energy);

        if self.beep.feed(frame, energy, voiced) * FRAME_MS >= s.min_beep_ms {
            return self.decide(AmdVerdict::Machine, AmdReason::Beep);
        }

        if voiced {
            self.silence_run_ms = 0;
            self.voiced_run_ms += FRAME_MS;
            if !self.in_word && self.voiced_run_ms >= s.min_word_ms {
                self.in_word = true;
                self.words += 1;
                self.heard_speech = true;
                if self.greeting_start_ms.is_none() {
                    self.greeting_start_ms = Some(self.elapsed_ms - self.voiced_run_ms);
                }
            }
        } else {
            self.silence_run_ms += FRAME_MS;
            if self.silence_run_ms >= s.between_words_silence_ms {
                self.in_word = false;
                self.voiced_run_ms = 0;
            }
        }

        if let Some(start) = self.greeting_start_ms {
            let talking_ms = self.elapsed_ms - start - self.silence_run_ms;
            if talking_ms > s.max_greeting_ms {
                return self.decide(AmdVerdict::Machine, AmdReason::LongGreeting);
            }
            if self.words > s.max_words {
                return self.decide(AmdVerdict::Machine, AmdReason::ManyWords);
            }
            if self.silence_run_ms >= s.after_greeting_silence_ms {
                return self.decide(AmdVerdict::Human, AmdReason::ShortGreetingThenSilence);
            }
        } else if !self.heard_speech && self.silence_run_ms >= s.initial_silence_ms {
            return self.decide(AmdVerdict::Unknown, AmdReason::InitialSilence);
        }
        if self.elapsed_ms >= s.deadline_ms {
            self.decide(AmdVerdict::Unknown, AmdReason::Deadline);
        }
    }

    fn poll_decision(&self) -> Option<AmdDecision> {
        self.decision
    }
}

/// Runs `detector` over `audio` frame by frame until it decides; an undecided end of audio is
/// unknown at the audio's length.
pub fn detect(detector: &mut dyn MachineDetector, audio: &[i16]) -> AmdDecision {
    for frame in audio.chunks(FRAME_SAMPLES) {
        detector.handle_frame(frame);
        if let Some(d) = detector.poll_decision() {
            return d;
        }
    }
    AmdDecision {
        verdict: AmdVerdict::Unknown,
        reason: AmdReason::Deadline,
        after_ms: (audio.len() / FRAME_SAMPLES) as u32 * FRAME_MS,
    }
}

#[cfg(test)]
mod tests;
