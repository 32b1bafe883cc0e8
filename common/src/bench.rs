//! Benchmark figures: one measure of ours against a peer (Kamailio, rtpengine, Mosquitto,
//! PostgreSQL `COPY`, a baseline dialler), with the goal the issue sets. Every benchmark
//! command writes its figures as JSON to the file named by [`FIGURES_ENV`] when that is set;
//! the `callgate-bench` suite sets it, collects the files and prints one table with
//! [`render_table`].
//!
//! Must not: measure anything itself or know how a benchmark runs.

use serde::{Deserialize, Serialize};

/// The environment variable naming the file a benchmark writes its figures to.
pub const FIGURES_ENV: &str = "CALLGATE_BENCH_FIGURES";

/// What a figure must reach.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Goal {
    /// Ours at least the peer's figure.
    AtLeastPeer,
    /// Ours at least this fraction of the peer's figure.
    AtLeastFractionOfPeer(f64),
    /// Ours at least this many (percentage) points above the peer's.
    AtLeastPointsOverPeer(f64),
    /// Ours at least this absolute value.
    AtLeast(f64),
    /// No goal: reported for information.
    None,
}

/// One measure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchFigure {
    /// Which benchmark (`signalling`, `media`, `sync`, `import`, `pacing`).
    pub benchmark: String,
    /// What was measured, with its unit.
    pub measure: String,
    /// Our figure.
    pub ours: f64,
    /// The peer's figure on the same machine in the same run, when there is one.
    pub peer: Option<f64>,
    /// Who the peer is.
    pub peer_name: Option<String>,
    /// What ours must reach.
    pub goal: Goal,
    /// Extra conditions or context (CPU, abandon rate), shown beside the figure.
    pub note: String,
    /// Whether a side condition the goal depends on failed (an abandon rate over its cap);
    /// the goal then counts as missed whatever the numbers say.
    pub condition_failed: bool,
}

impl BenchFigure {
    /// Ours divided by the peer's, when both exist and the peer's is not zero.
    pub fn ratio(&self) -> Option<f64> {
        match self.peer {
            Some(p) if p != 0.0 => Some(self.ours / p),
            _ => None,
        }
    }

    /// Whether the goal is met; `None` when there is no goal or no peer figure to judge by.
    /// A peer figure of zero (or below, or not a number) means the peer's run produced
    /// nothing — a run that failed, not a measurement — so it judges nothing either: without
    /// this, a broken peer run and a broken run of ours (0 ≥ 0) would read as a goal met.
    pub fn met(&self) -> Option<bool> {
        if self.condition_failed {
            return Some(false);
        }
        let measured_peer = self.peer.filter(|p| p.is_finite() && *p > 0.0);
        match (self.goal, measured_peer) {
            (Goal::None, _) => None,
            (Goal::AtLeast(v), _) => Some(self.ours >= v),
            (_, None) => None,
            (Goal::AtLeastPeer, Some(p)) => Some(self.ours >= p),
            (Goal::AtLeastFractionOfPeer(f), Some(p)) => Some(self.ours >= f * p),
            (Goal::AtLeastPointsOverPeer(pts), Some(p)) => Some(self.ours - p >= pts),
        }
    }

    /// The goal in words.
    pub fn goal_text(&self) -> String {
        match self.goal {
            Goal::AtLeastPeer => "≥ peer".into(),
            Goal::AtLeastFractionOfPeer(f) => format!("≥ {:.0} % of peer", f * 100.0),
            Goal::AtLeastPointsOverPeer(p) => format!("≥ peer + {p} points"),
            Goal::AtLeast(v) => format!("≥ {}", number(v)),
            Goal::None => "-".into(),
        }
    }
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Writes `figures` as JSON to the file [`FIGURES_ENV`] names; does nothing when it is not
/// set (the benchmark was run by hand and printed its own table).
#[cfg(feature = "observe")]
pub fn write_figures_if_asked(figures: &[BenchFigure]) -> std::io::Result<()> {
    let Some(path) = std::env::var_os(FIGURES_ENV) else {
        return Ok(());
    };
    let text = serde_json::to_string_pretty(figures).map_err(std::io::Error::other)?;
    std::fs::write(path, text)
}

/// The figures as one Markdown table: ours, the peer's, the ratio, the goal and whether it
/// is met.
pub fn render_table(figures: &[BenchFigure]) -> String {
    let mut out = String::from(
        "| benchmark | measure | ours | peer | ratio | goal | met | note |\n\
         |---|---|---:|---:|---:|---|---|---|\n",
    );
    for f in figures {
        let peer = match (&f.peer, &f.peer_name) {
            (Some(p), Some(name)) => format!("{} ({name})", number(*p)),
            (Some(p), None) => number(*p),
            (None, Some(name)) => format!("- ({name})"),
            (None, None) => "-".into(),
        };
        let ratio = f
            .ratio()
            .map(|r| format!("{r:.2}"))
            .unwrap_or_else(|| "-".into());
        let met = match f.met() {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {peer} | {ratio} | {} | {met} | {} |\n",
            f.benchmark,
            f.measure,
            number(f.ours),
            f.goal_text(),
            f.note
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(ours: f64, peer: Option<f64>, goal: Goal) -> BenchFigure {
        BenchFigure {
            benchmark: "signalling".into(),
            measure: "B2BUA calls/s".into(),
            ours,
            peer,
            peer_name: Some("Kamailio".into()),
            goal,
            note: String::new(),
            condition_failed: false,
        }
    }

    #[test]
    fn goals_are_judged_against_the_peer_and_need_one() {
        assert_eq!(
            figure(400.0, Some(400.0), Goal::AtLeastPeer).met(),
            Some(true)
        );
        assert_eq!(
            figure(399.0, Some(400.0), Goal::AtLeastPeer).met(),
            Some(false)
        );
        assert_eq!(
            figure(5_000.0, Some(10_000.0), Goal::AtLeastFractionOfPeer(0.5)).met(),
            Some(true)
        );
        assert_eq!(
            figure(4_999.0, Some(10_000.0), Goal::AtLeastFractionOfPeer(0.5)).met(),
            Some(false)
        );
        assert_eq!(
            figure(70.9, Some(65.9), Goal::AtLeastPointsOverPeer(5.0)).met(),
            Some(true)
        );
        assert_eq!(
            figure(70.8, Some(65.9), Goal::AtLeastPointsOverPeer(5.0)).met(),
            Some(false)
        );
        assert_eq!(
            figure(1.0, None, Goal::AtLeastPeer).met(),
            None,
            "no peer, no verdict"
        );
        assert_eq!(
            figure(0.0, Some(0.0), Goal::AtLeastPeer).met(),
            None,
            "a peer run that measured nothing judges nothing (0 >= 0 is not a goal met)"
        );
        assert_eq!(
            figure(10.0, Some(0.0), Goal::AtLeastFractionOfPeer(0.5)).met(),
            None
        );
        assert_eq!(
            figure(0.0, Some(100.0), Goal::AtLeastPeer).met(),
            Some(false),
            "ours measuring nothing against a measured peer is a goal missed"
        );
        assert_eq!(
            figure(1_000.0, None, Goal::AtLeast(1_000.0)).met(),
            Some(true)
        );
        assert_eq!(figure(1.0, Some(1.0), Goal::None).met(), None);
        let mut over_cap = figure(90.0, Some(60.0), Goal::AtLeastPointsOverPeer(5.0));
        over_cap.condition_failed = true;
        assert_eq!(
            over_cap.met(),
            Some(false),
            "a failed condition misses the goal"
        );
    }

    #[test]
    fn the_table_shows_ratio_goal_and_verdict() {
        let t = render_table(&[
            figure(200.0, Some(400.0), Goal::AtLeastPeer),
            figure(3.0, None, Goal::None),
        ]);
        assert!(
            t.contains(
                "| signalling | B2BUA calls/s | 200 | 400 (Kamailio) | 0.50 | ≥ peer | NO |  |"
            ),
            "{t}"
        );
        assert!(t.contains("| 3 | - (Kamailio) | - | - | - |"), "{t}");
    }

    #[test]
    fn figures_survive_serialisation() {
        // Postcard here (common has no JSON outside `observe`); the derive is the same.
        let f = figure(1.5, Some(2.0), Goal::AtLeastFractionOfPeer(0.5));
        let bytes = postcard::to_allocvec(&f).unwrap();
        assert_eq!(postcard::from_bytes::<BenchFigure>(&bytes).unwrap(), f);
    }
}
