//! Check results and the printed report.

use std::fmt::Write as _;

/// How one check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It passed; the text says what was verified.
    Pass(String),
    /// It failed; the text says what was wrong.
    Fail(String),
    /// It could not run here; the text says why (never counted as a pass).
    Skip(String),
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// The check's name (`leds`, `sensor`, ...).
    pub name: &'static str,
    /// How it ended.
    pub outcome: Outcome,
}

/// The whole run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// What was tested: "simulated board" or the device paths.
    pub target: String,
    /// Results in run order.
    pub results: Vec<CheckResult>,
}

impl Report {
    /// Adds a result.
    pub fn push(&mut self, name: &'static str, outcome: Outcome) {
        self.results.push(CheckResult { name, outcome });
    }

    fn count(&self, f: fn(&Outcome) -> bool) -> usize {
        self.results.iter().filter(|r| f(&r.outcome)).count()
    }

    /// No check failed.
    pub fn passed(&self) -> bool {
        self.count(|o| matches!(o, Outcome::Fail(_))) == 0
    }

    /// The report as printed.
    pub fn render(&self) -> String {
        let mut out = format!("callgate-hwtest: {}\n\n", self.target);
        let _ = writeln!(out, "{:<10} {:<6} DETAIL", "CHECK", "RESULT");
        for r in &self.results {
            let (word, detail) = match &r.outcome {
                Outcome::Pass(d) => ("PASS", d),
                Outcome::Fail(d) => ("FAIL", d),
                Outcome::Skip(d) => ("SKIP", d),
            };
            let _ = writeln!(out, "{:<10} {:<6} {}", r.name, word, detail);
        }
        let _ = writeln!(
            out,
            "\nhardware checks: {} passed, {} failed, {} skipped",
            self.count(|o| matches!(o, Outcome::Pass(_))),
            self.count(|o| matches!(o, Outcome::Fail(_))),
            self.count(|o| matches!(o, Outcome::Skip(_))),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failure_fails_the_report_and_skips_do_not_pass_it() {
        let mut r = Report::default();
        r.push("a", Outcome::Pass("ok".into()));
        r.push("b", Outcome::Skip("no operator".into()));
        assert!(r.passed());
        r.push("c", Outcome::Fail("broken".into()));
        assert!(!r.passed());
        let text = r.render();
        assert!(text.contains("c          FAIL   broken"), "{text}");
        assert!(text.contains("1 passed, 1 failed, 1 skipped"), "{text}");
    }
}
