//! `callgate-appliance agents-bench`: how long the desk takes to route an answered call
//! (`AgentDesk::offer`) and to run a whole call through an agent's states, with N agents
//! logged in. Prints one row per N. The desk is the sans-IO core alone: no SIP, no media,
//! no disk.

use super::desk::{AgentDesk, DeskOutput, DeskSettings, OfferDecision, OfferedCall};
use super::script::ScreenPop;
use callgate_common::compliance::{CallingWindow, ComplianceProfile};
use callgate_common::ids::{AgentGroupId, AgentId, CallId, CampaignId};
use callgate_common::routing::{CallFacts, Condition, RouteAction, RoutingPolicy, RoutingRule};
use callgate_common::time::UnixMillis;
use callgate_common::wire::{AgentBrief, AgentGroupBrief, AgentRoster, CampaignBrief, DialMode};
use std::time::Instant;

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct DeskBenchRow {
    /// Agents logged in.
    pub agents: usize,
    /// Calls routed.
    pub calls: usize,
    /// Mean time of one `offer`, µs.
    pub offer_mean_us: f64,
    /// 99th percentile of `offer`, µs.
    pub offer_p99_us: f64,
    /// Mean time of a whole call (offer, bridged, ended, disposition, outputs drained), µs.
    pub cycle_mean_us: f64,
}

/// Runs `calls` calls through a desk of `agents` agents (four groups, a policy of five rules).
pub fn run(agents: usize, calls: usize) -> DeskBenchRow {
    let groups: Vec<AgentGroupId> = (1..=4).map(AgentGroupId).collect();
    let roster = AgentRoster {
        version: 1,
        groups: groups
            .iter()
            .map(|g| AgentGroupBrief {
                group: *g,
                name: format!("group {g}"),
            })
            .collect(),
        agents: (0..agents)
            .map(|i| AgentBrief {
                agent: AgentId(i as u64 + 1),
                name: format!("agent {i}"),
                login: format!("agent{i}"),
                password_phc: String::new(),
                sip_username: format!("desk{i}"),
                skills: vec![],
                groups: vec![groups[i % groups.len()]],
            })
            .collect(),
    };
    let rule = |name: &str, when, g: u64| RoutingRule {
        name: name.into(),
        when,
        then: RouteAction::AgentGroup(g as i64),
    };
    let policy = RoutingPolicy {
        rules: vec![
            rule(
                "vip",
                Condition::Field {
                    name: "vip".into(),
                    equals: "yes".into(),
                },
                2,
            ),
            rule("complaint", Condition::LastOutcome("complaint".into()), 3),
            rule("survey", Condition::Tag("survey".into()), 4),
            rule("campaign 9", Condition::Campaign(9), 4),
            rule("fallback", Condition::Always, 1),
        ],
    };
    let campaign = CampaignId(7);
    let mut desk = AgentDesk::new(DeskSettings {
        nailed_up: false,
        ..DeskSettings::default()
    });
    let t0 = UnixMillis(1_700_000_000_000);
    desk.set_roster(t0, &roster);
    desk.set_policy(policy);
    desk.set_campaign(&CampaignBrief {
        campaign,
        version: 1,
        name: "bench".into(),
        dial_mode: DialMode::Predictive,
        running: true,
        profile: ComplianceProfile::us(),
        window: CallingWindow::us_default(),
        caller_id: "+15550100".into(),
        script: String::new(),
        disposition_codes: vec!["done".into()],
        wrap_up_seconds: 5,
        recording_consent_announcement: false,
        robot_script: None,
    });
    for i in 0..agents {
        let _ = desk.log_in(t0, AgentId(i as u64 + 1));
    }
    while desk.poll_output().is_some() {}
    let pop = ScreenPop::new("bench", None, &[], "");
    let mut offer_us = Vec::with_capacity(calls);
    let started = Instant::now();
    for n in 0..calls {
        let now = t0.plus_millis(n as i64 * 10 + 1);
        let mut facts = CallFacts {
            campaign: Some(campaign.0 as i64),
            ..CallFacts::default()
        };
        if n % 5 == 0 {
            facts.fields.insert("vip".into(), "yes".into());
        }
        let call = CallId::new_v7();
        let offered = OfferedCall {
            call,
            campaign,
            answered_at: now,
            facts,
            last_agent: None,
            pop: pop.clone(),
        };
        let t = Instant::now();
        let decision = desk.offer(now, offered);
        offer_us.push(t.elapsed().as_secs_f64() * 1e6);
        if let Ok(OfferDecision::Connect { agent }) = decision {
            desk.call_bridged(now, call);
            desk.call_ended(now, call);
            let _ = desk.dispose(now, agent, "done");
        } else {
            desk.call_ended(now, call);
        }
        while let Some(o) = desk.poll_output() {
            std::hint::black_box(matches!(o, DeskOutput::Agent { .. }));
        }
    }
    let total = started.elapsed().as_secs_f64() * 1e6;
    offer_us.sort_by(f64::total_cmp);
    let p99 = offer_us
        .get((offer_us.len() * 99 / 100).min(offer_us.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0);
    DeskBenchRow {
        agents,
        calls,
        offer_mean_us: offer_us.iter().sum::<f64>() / calls.max(1) as f64,
        offer_p99_us: p99,
        cycle_mean_us: total / calls.max(1) as f64,
    }
}

/// Prints the table for every size in `agents`.
pub fn print_table(agents: &[usize], calls: usize) {
    println!("| agents | calls | offer mean µs | offer p99 µs | whole call in the desk, mean µs |");
    println!("|---:|---:|---:|---:|---:|");
    for &n in agents {
        let r = run(n, calls);
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.2} |",
            r.agents, r.calls, r.offer_mean_us, r.offer_p99_us, r.cycle_mean_us
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_routes_every_call() {
        let r = run(8, 50);
        assert_eq!((r.agents, r.calls), (8, 50));
        assert!(r.offer_mean_us > 0.0 && r.offer_p99_us >= 0.0);
    }
}
