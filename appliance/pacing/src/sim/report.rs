//! The benchmark's printed table: one row per strategy, and the verdict of ours against the
//! adaptive baseline. Formatting only; the figures come from [`super::RunReport`].

use std::fmt::Write;

use super::RunReport;

/// One scenario's figures as JSON, for the benchmark suite: the same numbers as the table.
pub fn json(scenario: &str, days: u32, agents: u32, rows: &[RunReport]) -> serde_json::Value {
    let strategies: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "strategy": r.strategy,
                "occupancy": r.occupancy(),
                "talk_minutes_per_agent_hour": r.talk_minutes_per_agent_hour(),
                "abandon_rate_worst_24h": r.worst_day_abandon_rate(),
                "abandon_rate_30d": r.thirty_day_abandon_rate(),
                "attempts_per_contact": r.attempts_per_contact(),
                "mean_wait_secs": r.mean_wait_secs(),
                "attempts": r.attempts,
                "contacts": r.connected,
                "abandoned": r.abandoned,
            })
        })
        .collect();
    serde_json::json!({
        "scenario": scenario,
        "days": days,
        "agents": agents,
        "abandon_cap": rows.first().map(|r| r.cap),
        "strategies": strategies,
        "verdict": verdict(rows),
    })
}

/// The table for one scenario, Markdown, with a verdict line.
pub fn table(scenario: &str, days: u32, agents: u32, rows: &[RunReport]) -> String {
    let mut out = String::new();
    let cap = rows.first().map(|r| r.cap).unwrap_or(0.0);
    let _ = writeln!(
        out,
        "### {scenario} ({agents} agents, {days} day(s), abandon cap {:.1} %)\n",
        cap * 100.0
    );
    let _ = writeln!(
        out,
        "| strategy | occupancy | talk min / agent-h | abandon worst 24 h | abandon 30 d | attempts / contact | mean wait s | attempts | contacts | abandoned |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let over = if r.worst_day_abandon_rate() > r.cap + 1e-12 {
            " (over cap)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "| {} | {:.1} % | {:.1} | {:.2} %{} | {:.2} % | {:.2} | {:.1} | {} | {} | {} |",
            r.strategy,
            r.occupancy() * 100.0,
            r.talk_minutes_per_agent_hour(),
            r.worst_day_abandon_rate() * 100.0,
            over,
            r.thirty_day_abandon_rate() * 100.0,
            r.attempts_per_contact(),
            r.mean_wait_secs(),
            r.attempts,
            r.connected,
            r.abandoned,
        );
    }
    if let Some(v) = verdict(rows) {
        let _ = writeln!(out, "\n{v}");
    }
    out
}

/// Ours and the adaptive row it is judged against: the best adaptive mode that kept every
/// day under the cap (or the best adaptive mode at all, when none did), and which of the two.
fn contenders(rows: &[RunReport]) -> Option<(&RunReport, &RunReport, &'static str)> {
    let ours = rows.iter().find(|r| r.strategy.starts_with("predictive"))?;
    let adaptive: Vec<&RunReport> = rows
        .iter()
        .filter(|r| r.strategy.starts_with("adaptive"))
        .collect();
    let within: Vec<&&RunReport> = adaptive
        .iter()
        .filter(|r| r.worst_day_abandon_rate() <= r.cap + 1e-12)
        .collect();
    let (pool, which) = if within.is_empty() {
        (
            adaptive.clone(),
            "best adaptive (none stayed under the cap)",
        )
    } else {
        (
            within.into_iter().copied().collect::<Vec<_>>(),
            "best adaptive under the cap",
        )
    };
    let best = pool
        .iter()
        .max_by(|a, b| a.occupancy().total_cmp(&b.occupancy()))?;
    Some((ours, best, which))
}

/// The suite's figure for one scenario: our occupancy against the adaptive baseline's, in
/// percent (goal: at least 5 points more, with our worst day under the abandon cap).
pub fn figure(scenario: &str, rows: &[RunReport]) -> Option<callgate_common::bench::BenchFigure> {
    use callgate_common::bench::{BenchFigure, Goal};
    let (ours, best, which) = contenders(rows)?;
    Some(BenchFigure {
        benchmark: "pacing".into(),
        measure: format!("agent occupancy %, {scenario}"),
        ours: ours.occupancy() * 100.0,
        peer: Some(best.occupancy() * 100.0),
        peer_name: Some(format!("{which}: {}", best.strategy)),
        goal: Goal::AtLeastPointsOverPeer(5.0),
        note: format!(
            "ours worst-day abandon {:.2} % (cap {:.1} %), 30-day {:.2} %",
            ours.worst_day_abandon_rate() * 100.0,
            ours.cap * 100.0,
            ours.thirty_day_abandon_rate() * 100.0
        ),
        condition_failed: ours.worst_day_abandon_rate() > ours.cap + 1e-12,
    })
}

/// Ours against the best adaptive mode that kept every day under the cap (or the best
/// adaptive mode at all, when none did).
pub fn verdict(rows: &[RunReport]) -> Option<String> {
    let (ours, best, which) = contenders(rows)?;
    let gain = (ours.occupancy() - best.occupancy()) * 100.0;
    let ours_ok = ours.worst_day_abandon_rate() <= ours.cap + 1e-12;
    let goal = gain >= 5.0 && ours_ok;
    Some(format!(
        "ours − {which} ({}): {:+.1} occupancy points; ours worst-day abandon {:.2} % (cap {:.1} %) → goal (≥ +5 points, under cap) {}",
        best.strategy,
        gain,
        ours.worst_day_abandon_rate() * 100.0,
        ours.cap * 100.0,
        if goal { "MET" } else { "NOT MET" }
    ))
}
