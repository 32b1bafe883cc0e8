//! [`RobotPlacement`]: answered outbound calls of robot campaigns run the campaign's script.
//!
//! Scripts come with the campaign brief (`CampaignBrief.robot_script`, TOML; prompt files
//! from the configured prompt folder) and are validated when the brief arrives
//! ([`RobotPlacement::set_campaign`]). A script that fails validation is logged with the
//! error naming the step and shown in [`RobotPlacement::statuses`]; that campaign's calls
//! get the fallback announcement — never a panic, never a silent call. The contact's fields
//! are the script's variables.
//!
//! Must not: send SIP or touch the dialer's store; the dialer commits what
//! [`Placement`] says.

use super::driver::{run_robot_call, RobotRun, RobotRunReport};
use super::screen::MachineAnswer;
use super::speech::SpeechCache;
use super::transfer::AgentTransfer;
use super::RobotCallError;
use crate::dialer::placement::{
    quality_of, Announcement, AnsweredCall, AnsweredCallPlacement, Placement,
};
use crate::dialer::DialerError;
use callgate_common::ids::CampaignId;
use callgate_common::time::UnixMillis;
use callgate_common::wire::{CallOutcome, CampaignBrief};
use callgate_robot::{RobotCall, RobotOutcome, RobotScript};
use futures_util::future::BoxFuture;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

/// A campaign's script as loaded from its latest brief.
#[derive(Debug, Clone)]
pub enum ScriptState {
    /// Validated; calls run it.
    Ready(Arc<RobotScript>),
    /// Refused; calls get the announcement. The error names the step and field.
    Refused(String),
}

/// One campaign's robot script, for the status page and the log.
#[derive(Debug, Clone)]
pub struct ScriptStatus {
    /// The campaign.
    pub campaign: CampaignId,
    /// The brief version the script came with.
    pub brief_version: u64,
    /// Loaded or refused.
    pub state: ScriptState,
}

impl std::fmt::Display for ScriptStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.state {
            ScriptState::Ready(s) => write!(
                f,
                "campaign {}: robot script \"{}\" version {} loaded",
                self.campaign,
                s.name(),
                s.version()
            ),
            ScriptState::Refused(e) => write!(
                f,
                "campaign {}: robot script refused ({e}); its calls get the announcement",
                self.campaign
            ),
        }
    }
}

struct Shared {
    prompt_folder: PathBuf,
    fallback: Announcement,
    speech: Arc<SpeechCache>,
    scripts: RwLock<BTreeMap<CampaignId, ScriptStatus>>,
    transfer: RwLock<Option<Arc<dyn AgentTransfer>>>,
}

/// The dialer's placement for robot campaigns (cheap to clone; clones share scripts).
#[derive(Clone)]
pub struct RobotPlacement {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RobotPlacement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RobotPlacement")
            .field("prompt_folder", &self.shared.prompt_folder)
            .field("campaigns", &self.statuses().len())
            .finish()
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl RobotPlacement {
    /// Scripts' prompt files are read from `prompt_folder`; `fallback` plays on calls of
    /// campaigns without a usable script.
    pub fn new(
        speech: Arc<SpeechCache>,
        prompt_folder: impl Into<PathBuf>,
        fallback: Announcement,
    ) -> RobotPlacement {
        RobotPlacement {
            shared: Arc::new(Shared {
                prompt_folder: prompt_folder.into(),
                fallback,
                speech,
                scripts: RwLock::new(BTreeMap::new()),
                transfer: RwLock::new(None),
            }),
        }
    }

    /// Where `transfer` steps go from now on (`None`: nobody; scripts follow `on_no_agent`).
    pub fn set_transfer(&self, hook: Option<Arc<dyn AgentTransfer>>) {
        *write(&self.shared.transfer) = hook;
    }

    /// Takes a campaign brief: loads and validates its robot script (or forgets the
    /// campaign's script when the brief has none). A brief no newer than the one held is
    /// ignored (the driver may hand the same brief over after every store read). A refused script is logged, kept in [`RobotPlacement::statuses`], and
    /// returned as the error; the campaign's calls then get the announcement.
    pub fn set_campaign(&self, brief: &CampaignBrief) -> Result<(), RobotCallError> {
        let campaign = brief.campaign;
        if read(&self.shared.scripts)
            .get(&campaign)
            .is_some_and(|s| s.brief_version >= brief.version)
        {
            return Ok(());
        }
        let Some(text) = &brief.robot_script else {
            write(&self.shared.scripts).remove(&campaign);
            return Ok(());
        };
        let parsed = RobotScript::parse(text, &self.shared.prompt_folder);
        let (state, result) = match parsed {
            Ok(script) => {
                tracing::info!(%campaign, script = script.name(), version = script.version(), "robot script loaded");
                (ScriptState::Ready(Arc::new(script)), Ok(()))
            }
            Err(source) => {
                tracing::error!(%campaign, error = %source, "robot script refused; the campaign's calls get the announcement");
                (
                    ScriptState::Refused(source.to_string()),
                    Err(RobotCallError::Script { campaign, source }),
                )
            }
        };
        write(&self.shared.scripts).insert(
            campaign,
            ScriptStatus {
                campaign,
                brief_version: brief.version,
                state,
            },
        );
        result
    }

    /// Every campaign's script state.
    pub fn statuses(&self) -> Vec<ScriptStatus> {
        read(&self.shared.scripts).values().cloned().collect()
    }

    /// The campaign's validated script, if it has one.
    pub fn script(&self, campaign: CampaignId) -> Option<Arc<RobotScript>> {
        match read(&self.shared.scripts).get(&campaign).map(|s| &s.state) {
            Some(ScriptState::Ready(s)) => Some(s.clone()),
            _ => None,
        }
    }

    /// A validated script the box holds whose name is `name` (from any campaign's brief).
    pub fn script_named(&self, name: &str) -> Option<Arc<RobotScript>> {
        read(&self.shared.scripts)
            .values()
            .find_map(|s| match &s.state {
                ScriptState::Ready(script) if script.name() == name => Some(script.clone()),
                _ => None,
            })
    }

    /// The script a call of `campaign` runs: the one the routing policy `named`, else the
    /// campaign's own. A name no held script has is logged and the campaign's script runs.
    pub fn script_for(
        &self,
        campaign: CampaignId,
        named: Option<&str>,
    ) -> Option<Arc<RobotScript>> {
        if let Some(name) = named {
            match self.script_named(name) {
                Some(script) => return Some(script),
                None => {
                    tracing::warn!(%campaign, script = name, "the routing policy names a robot script this box does not hold; the campaign's own runs")
                }
            }
        }
        self.script(campaign)
    }

    /// Runs `robot` on the call and turns its report into the call's placement.
    fn run(
        &self,
        call: AnsweredCall,
        robot: RobotCall,
        outcome: CallOutcome,
    ) -> BoxFuture<'static, Result<Placement, DialerError>> {
        let speech = self.shared.speech.clone();
        let transfer = read(&self.shared.transfer).clone();
        let (id, preview_agent) = (call.call, call.agent);
        let mut call = call;
        Box::pin(async move {
            // The consent announcement comes first; the script (and its recording) after it.
            if !crate::dialer::placement::play_consent(&mut call).await? {
                return Ok(crate::dialer::placement::ended_during_consent(
                    &call, outcome,
                ));
            }
            let quality_log = call.quality_log.take();
            let run = RobotRun {
                call: call.call,
                campaign: Some(call.campaign),
                contact: Some(call.contact),
                customer: call.customer,
                frame_samples: call.frame_samples,
                end_now: call.end_now,
                recorder: call.recorder,
                speech,
                transfer,
            };
            let report = run_robot_call(robot, run).await?;
            if let (Some(log), Some(leg)) = (&quality_log, &report.leg) {
                log.record(0, crate::media::LegRole::Customer, leg).await;
            }
            tracing::info!(call = %id, disposition = ?report.outcome.as_ref().map(RobotOutcome::disposition), steps = report.steps_run, "robot call ended");
            Ok(placement_of(report, outcome, preview_agent))
        })
    }
}

/// The call record's view of a robot call.
fn placement_of(
    mut report: RobotRunReport,
    outcome: CallOutcome,
    preview_agent: Option<callgate_common::ids::AgentId>,
) -> Placement {
    let disposition = report
        .agent_disposition
        .clone()
        .or_else(|| report.outcome.as_ref().map(|o| o.disposition().to_owned()));
    Placement {
        outcome,
        agent: report.agent.or(preview_agent),
        disposition,
        recording_segments: report.recording_segments,
        quality: report.leg.as_ref().map(quality_of),
        // The agent's disposition, when it comes, replaces the script's (`transferred`).
        wrap_up: report.agent_wrap_up.take(),
    }
}

impl AnsweredCallPlacement for RobotPlacement {
    fn place(&self, call: AnsweredCall) -> BoxFuture<'static, Result<Placement, DialerError>> {
        let Some(script) = self.script_for(call.campaign, call.robot_script.as_deref()) else {
            tracing::warn!(campaign = %call.campaign, call = %call.call, "no usable robot script for the campaign; playing the announcement");
            return self.shared.fallback.place(call);
        };
        let fields = call.contact.fields.clone();
        let robot = RobotCall::start(UnixMillis::now(), script, fields);
        self.run(call, robot, CallOutcome::AnsweredHuman)
    }
}

impl MachineAnswer for RobotPlacement {
    fn leaves_message(&self, call: &AnsweredCall) -> bool {
        self.script(call.campaign)
            .is_some_and(|s| s.leaves_machine_message())
    }

    fn leave_message(
        &self,
        call: AnsweredCall,
    ) -> BoxFuture<'static, Result<Placement, DialerError>> {
        let started = self.script(call.campaign).and_then(|script| {
            RobotCall::start_on_machine(UnixMillis::now(), script, call.contact.fields.clone())
        });
        match started {
            Some(robot) => self.run(call, robot, CallOutcome::AnsweredMachine),
            None => super::screen::EndMachineCalls.leave_message(call),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callgate_common::compliance::{CallingWindow, ComplianceProfile};
    use callgate_common::wire::DialMode;
    use callgate_media::prompt::Prompt;
    use callgate_robot::EspeakNg;

    fn placement() -> RobotPlacement {
        RobotPlacement::new(
            Arc::new(SpeechCache::new(Arc::new(EspeakNg::default()), 16)),
            std::env::temp_dir(),
            Announcement::new(Prompt::connect_beep(), CallOutcome::AnsweredHuman),
        )
    }

    fn brief(version: u64, script: Option<&str>) -> CampaignBrief {
        CampaignBrief {
            campaign: CampaignId(5),
            version,
            name: "robot".into(),
            dial_mode: DialMode::Agentless,
            running: true,
            profile: ComplianceProfile::us(),
            window: CallingWindow {
                start_minute: 0,
                end_minute: 1440,
                days: (0..7).collect(),
                holidays: vec![],
            },
            caller_id: "+442079460000".into(),
            script: String::new(),
            disposition_codes: vec![],
            wrap_up_seconds: 0,
            recording_consent_announcement: false,
            robot_script: script.map(str::to_owned),
        }
    }

    const GOOD: &str = r#"
format = 1
name = "bye"
version = 2
start = "bye"

[steps.bye]
kind = "hangup"
disposition = "done"
"#;

    #[test]
    fn a_bad_script_is_refused_with_the_step_named_and_the_campaign_falls_back() {
        let p = placement();
        let bad = GOOD.replace("kind = \"hangup\"", "kind = \"hangup\"\nnext = \"nowhere\"");
        let e = p.set_campaign(&brief(1, Some(&bad))).unwrap_err();
        assert!(e.to_string().contains("campaign 5"), "{e}");
        assert!(p.script(CampaignId(5)).is_none());
        let status = p.statuses();
        assert_eq!(status.len(), 1);
        let shown = status[0].to_string();
        assert!(
            shown.contains("refused") && shown.contains("next") && shown.contains("announcement"),
            "{shown}"
        );
    }

    #[test]
    fn a_good_script_replaces_a_refused_one_and_an_older_or_repeated_brief_is_ignored() {
        let p = placement();
        assert!(p.set_campaign(&brief(1, Some("format = 9"))).is_err());
        p.set_campaign(&brief(2, Some(GOOD))).unwrap();
        assert_eq!(p.script(CampaignId(5)).unwrap().version(), 2);
        assert!(p.set_campaign(&brief(1, Some("format = 9"))).is_ok());
        assert!(p.set_campaign(&brief(2, Some("format = 9"))).is_ok());
        assert!(
            p.script(CampaignId(5)).is_some(),
            "an older or the same brief changes nothing"
        );
        p.set_campaign(&brief(3, None)).unwrap();
        assert!(
            p.script(CampaignId(5)).is_none(),
            "a brief without a script clears it"
        );
    }

    #[test]
    fn a_script_the_routing_policy_names_runs_instead_of_the_campaigns_own() {
        let p = placement();
        p.set_campaign(&brief(1, Some(GOOD))).unwrap();
        let mut other = brief(
            1,
            Some(&GOOD.replace("name = \"bye\"", "name = \"survey\"")),
        );
        other.campaign = CampaignId(6);
        p.set_campaign(&other).unwrap();
        let name = |s: Option<Arc<RobotScript>>| s.map(|s| s.name().to_owned());
        assert_eq!(
            name(p.script_for(CampaignId(5), Some("survey"))),
            Some("survey".into())
        );
        assert_eq!(name(p.script_for(CampaignId(5), None)), Some("bye".into()));
        assert_eq!(
            name(p.script_for(CampaignId(5), Some("unknown"))),
            Some("bye".into()),
            "a name nobody holds: the campaign's own script"
        );
        assert_eq!(
            name(p.script_for(CampaignId(7), Some("bye"))),
            Some("bye".into()),
            "a named script runs for a campaign without one"
        );
    }
}
