//! Scoring a [`MachineDetector`] on a labelled set: accuracy, the confusion matrix and the
//! mean decision time, printed as the table `callgate-amd-eval` shows.
//!
//! Owns the arithmetic and the table. Must not: generate audio (see [`super::corpus`]).

use super::corpus::{LabelledCall, Truth};
use super::{detect, AmdDecision, AmdReason, AmdVerdict, MachineDetector};
use std::collections::BTreeMap;
use std::fmt::Write;

/// The scores of one detector on one set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluation {
    /// `[truth][verdict]` counts: truth human/machine, verdict human/machine/unknown.
    pub confusion: [[u32; 3]; 2],
    /// Sum of decision times per truth, ms.
    decision_ms: [u64; 2],
    /// How many decisions each reason made.
    pub reasons: BTreeMap<String, u32>,
    /// Each call's decision, in order.
    pub decisions: Vec<AmdDecision>,
}

fn truth_index(t: Truth) -> usize {
    match t {
        Truth::Human => 0,
        Truth::Machine => 1,
    }
}

fn verdict_index(v: AmdVerdict) -> usize {
    match v {
        AmdVerdict::Human => 0,
        AmdVerdict::Machine => 1,
        AmdVerdict::Unknown => 2,
    }
}

fn reason_name(r: AmdReason) -> &'static str {
    match r {
        AmdReason::ShortGreetingThenSilence => "short greeting then silence",
        AmdReason::LongGreeting => "long greeting",
        AmdReason::ManyWords => "many words",
        AmdReason::Beep => "beep",
        AmdReason::InitialSilence => "initial silence",
        AmdReason::Deadline => "deadline",
    }
}

impl Evaluation {
    /// Runs a fresh detector from `new_detector` on every call of `calls`.
    pub fn run(
        calls: &[LabelledCall],
        mut new_detector: impl FnMut() -> Box<dyn MachineDetector>,
    ) -> Evaluation {
        let mut e = Evaluation::default();
        for call in calls {
            let mut detector = new_detector();
            let d = detect(detector.as_mut(), &call.audio);
            let t = truth_index(call.truth);
            e.confusion[t][verdict_index(d.verdict)] += 1;
            e.decision_ms[t] += u64::from(d.after_ms);
            *e.reasons
                .entry(reason_name(d.reason).to_owned())
                .or_default() += 1;
            e.decisions.push(d);
        }
        e
    }

    /// Calls scored.
    pub fn total(&self) -> u32 {
        self.confusion.iter().flatten().sum()
    }

    fn of_truth(&self, t: usize) -> u32 {
        self.confusion[t].iter().sum()
    }

    /// Share of calls classified correctly, unknown counting as wrong.
    pub fn accuracy(&self) -> f64 {
        let right = self.confusion[0][0] + self.confusion[1][1];
        f64::from(right) / f64::from(self.total().max(1))
    }

    /// Share of decided (not unknown) calls classified correctly.
    pub fn decided_accuracy(&self) -> f64 {
        let right = self.confusion[0][0] + self.confusion[1][1];
        let decided = self.total() - self.confusion[0][2] - self.confusion[1][2];
        f64::from(right) / f64::from(decided.max(1))
    }

    /// Mean decision time over all calls, ms.
    pub fn mean_decision_ms(&self) -> f64 {
        (self.decision_ms[0] + self.decision_ms[1]) as f64 / f64::from(self.total().max(1))
    }

    fn mean_decision_ms_of(&self, t: usize) -> f64 {
        self.decision_ms[t] as f64 / f64::from(self.of_truth(t).max(1))
    }

    /// The report table.
    pub fn table(&self) -> String {
        let pct = |x: f64| format!("{:.1} %", 100.0 * x);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "calls                      {} ({} human, {} machine)",
            self.total(),
            self.of_truth(0),
            self.of_truth(1)
        );
        let _ = writeln!(
            out,
            "accuracy                   {}  (unknown counts as wrong)",
            pct(self.accuracy())
        );
        let _ = writeln!(
            out,
            "accuracy when decided      {}  ({} unknown)",
            pct(self.decided_accuracy()),
            self.confusion[0][2] + self.confusion[1][2]
        );
        let _ = writeln!(
            out,
            "mean decision time         {:.0} ms  (human {:.0} ms, machine {:.0} ms)",
            self.mean_decision_ms(),
            self.mean_decision_ms_of(0),
            self.mean_decision_ms_of(1)
        );
        let _ = writeln!(out);
        let _ = writeln!(out, "truth \\ verdict      human  machine  unknown");
        for (t, name) in ["human", "machine"].iter().enumerate() {
            let row = self.confusion[t];
            let _ = writeln!(
                out,
                "{name:<18} {:>7}  {:>7}  {:>7}",
                row[0], row[1], row[2]
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "decided by");
        for (reason, n) in &self.reasons {
            let _ = writeln!(out, "  {reason:<28} {n:>5}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amd::CadenceDetector;
    use crate::tts::SpeechStyle;

    fn call(truth: Truth, audio: Vec<i16>) -> LabelledCall {
        LabelledCall {
            truth,
            text: String::new(),
            style: SpeechStyle::default(),
            beep_hz: None,
            level_dbfs: -10.0,
            snr_db: 30.0,
            audio,
        }
    }

    #[test]
    fn the_confusion_matrix_counts_each_call_once_under_its_truth() {
        let beep = callgate_media::tone::ToneGenerator::new(1_000.0, 8_000).next_samples(4_000);
        let calls = [
            call(Truth::Machine, [vec![0; 800], beep.clone()].concat()),
            call(Truth::Human, [vec![0; 800], beep].concat()),
            call(Truth::Human, vec![0; 48_000]),
        ];
        let e = Evaluation::run(&calls, || Box::new(CadenceDetector::default()));
        assert_eq!(e.confusion, [[0, 1, 1], [0, 1, 0]]);
        assert_eq!(e.total(), 3);
        assert!((e.accuracy() - 1.0 / 3.0).abs() < 1e-9);
        assert!((e.decided_accuracy() - 0.5).abs() < 1e-9);
        assert_eq!(e.reasons["beep"], 2);
        assert_eq!(e.reasons["initial silence"], 1);
        let table = e.table();
        assert!(
            table.contains("accuracy                   33.3 %"),
            "{table}"
        );
        assert!(
            table.contains("human                    0        1        1"),
            "{table}"
        );
    }
}
