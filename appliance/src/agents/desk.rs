//! [`AgentDesk`]: the sans-IO core that knows every agent's state and decides which agent
//! takes a call. No tokio, no clock: every input carries `now`; outputs are pulled with
//! [`AgentDesk::poll_output`]; the driver calls [`AgentDesk::handle_timeout`] at
//! [`AgentDesk::poll_timeout`].
//!
//! - Agents: logged out → (phone connecting →) ready ⇄ paused; ready → reserved (picked for
//!   a call) → talking → wrap-up → ready after the campaign's wrap-up time or as soon as the
//!   disposition is saved. Every change is a [`DeskOutput::Agent`] carrying the
//!   [`AgentEvent`] for the outbox, in order.
//! - Answered outbound calls ([`AgentDesk::offer`]): the routing policy picks a group (skill
//!   groups, last-agent affinity, VIP → senior, complaint → QA, fallback are its rules); the
//!   group's longest-idle ready agent is reserved. With none free the call waits, and if no
//!   agent of its group frees up within [`DeskSettings::safe_harbour_after_ms`] of the answer
//!   the desk says [`DeskOutput::SafeHarbour`]: the caller plays the message, ends the call
//!   and counts it abandoned.
//! - Inbound calls ([`AgentDesk::enqueue_inbound`]) for an agent group go to its longest-idle
//!   ready agent or wait in the group's queue (position announcements at a fixed interval,
//!   overflow after the configured wait). Agents on inbound calls are busy for the pacing
//!   counts ([`AgentDesk::pacing_counts`]), and queued inbound calls claim ready agents first.

use super::script::ScreenPop;
use super::AgentsError;
use callgate_common::ids::{AgentGroupId, AgentId, CallId, CampaignId};
use callgate_common::routing::{CallFacts, RouteAction, RoutingPolicy};
use callgate_common::time::UnixMillis;
use callgate_common::wire::{AgentEvent, AgentRoster, AgentState, CampaignBrief};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};

#[cfg(test)]
mod tests;

/// The paused reason shown while the nailed-up leg to the agent's phone is being set up.
pub const PHONE_CONNECTING: &str = "waiting for the phone to answer";

/// How the desk behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeskSettings {
    /// An answered outbound call with no agent free this long after the answer gets the
    /// safe-harbour message (2 s by regulation).
    pub safe_harbour_after_ms: i64,
    /// Agents take calls only once their phone leg is up ([`AgentDesk::phone_leg_up`]);
    /// without it, logging in makes the agent ready at once.
    pub nailed_up: bool,
    /// Wrap-up after an inbound call.
    pub inbound_wrap_up_ms: i64,
    /// Disposition codes of inbound calls.
    pub inbound_dispositions: Vec<String>,
    /// A queued inbound call overflows (voicemail or robot script) after this wait.
    pub queue_overflow_after_ms: i64,
    /// Queued callers hear their position this often.
    pub position_every_ms: i64,
}

impl Default for DeskSettings {
    fn default() -> Self {
        DeskSettings {
            safe_harbour_after_ms: 2_000,
            nailed_up: true,
            inbound_wrap_up_ms: 30_000,
            inbound_dispositions: vec!["resolved".into(), "callback".into(), "escalated".into()],
            queue_overflow_after_ms: 120_000,
            position_every_ms: 30_000,
        }
    }
}

/// An answered outbound call looking for an agent.
#[derive(Debug, Clone)]
pub struct OfferedCall {
    /// The call.
    pub call: CallId,
    /// Its campaign.
    pub campaign: CampaignId,
    /// When the customer answered (the safe-harbour clock starts here).
    pub answered_at: UnixMillis,
    /// What routing rules test.
    pub facts: CallFacts,
    /// The agent who last spoke to the contact.
    pub last_agent: Option<AgentId>,
    /// What the agent sees.
    pub pop: ScreenPop,
}

/// An inbound call the route table sent to an agent group.
#[derive(Debug, Clone)]
pub struct InboundCall {
    /// The call.
    pub call: CallId,
    /// The group it was routed to.
    pub group: AgentGroupId,
    /// What the agent sees.
    pub pop: ScreenPop,
}

/// What happens to a call right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfferDecision {
    /// Bridge the call to this agent (now reserved for it).
    Connect {
        /// The agent.
        agent: AgentId,
    },
    /// The policy sends it to a robot script.
    Robot {
        /// The script's name.
        script: String,
    },
    /// No agent free: wait; a [`DeskOutput::Connect`] or [`DeskOutput::SafeHarbour`] follows
    /// by `until`.
    Waiting {
        /// The safe-harbour deadline.
        until: UnixMillis,
    },
    /// No agent free within 2 s of the answer: play the safe-harbour message, end the call,
    /// count it abandoned.
    SafeHarbour,
    /// Inbound: queued at this position (1 = next); hold music until a
    /// [`DeskOutput::Connect`] or [`DeskOutput::Overflow`].
    Queued {
        /// 1-based position in the group's queue.
        position: usize,
    },
}

/// What the desk tells its driver, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum DeskOutput {
    /// An agent's state changed: store this event in the outbox. `reason` explains a
    /// logout (the wire event has no field for it).
    Agent {
        /// The event for the outbox.
        event: AgentEvent,
        /// Why the agent was logged out, for logs and the agent page.
        reason: Option<String>,
    },
    /// A waiting or queued call gets this agent (now reserved): bridge it.
    Connect {
        /// The call.
        call: CallId,
        /// The agent.
        agent: AgentId,
    },
    /// A waiting outbound call reached its deadline: safe-harbour message, end, abandoned.
    SafeHarbour {
        /// The call.
        call: CallId,
    },
    /// A queued inbound caller's position, to announce.
    QueuePosition {
        /// The call.
        call: CallId,
        /// 1-based position.
        position: usize,
    },
    /// A queued inbound call waited too long: send it to voicemail (or a robot script).
    Overflow {
        /// The call.
        call: CallId,
        /// Its group.
        group: AgentGroupId,
    },
    /// An agent saved a disposition; the dialer puts it in the call record.
    Disposition {
        /// The call.
        call: CallId,
        /// Who saved it.
        agent: AgentId,
        /// The campaign, for outbound calls.
        campaign: Option<CampaignId>,
        /// The code.
        code: String,
        /// When.
        at: UnixMillis,
    },
    /// Set up the nailed-up leg to this agent's phone (at login).
    CallPhone {
        /// The agent.
        agent: AgentId,
    },
    /// Tear down this agent's phone leg (at logout).
    ReleasePhone {
        /// The agent.
        agent: AgentId,
    },
    /// The agent ends its call from the page: hang the call up (then `call_ended`).
    HangUp {
        /// The call.
        call: CallId,
        /// The agent.
        agent: AgentId,
    },
    /// The agent of a reserved or talking call was lost (phone leg dropped, removed from
    /// the roster): the call needs another route.
    AgentLost {
        /// The call.
        call: CallId,
        /// The agent.
        agent: AgentId,
    },
}

/// What the pacing core needs from the desk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PacingCounts {
    /// Ready now, less the queued inbound calls that will take them first.
    pub ready: u32,
    /// Ready now, before queued inbound calls are taken off.
    pub ready_before_queue: u32,
    /// Reserved for a call being connected.
    pub reserved: u32,
    /// Talking on outbound calls.
    pub talking_outbound: u32,
    /// Talking on inbound calls (busy for outbound dialling).
    pub talking_inbound: u32,
    /// When each agent in wrap-up becomes free, earliest first.
    pub wrap_up_ends: Vec<UnixMillis>,
    /// Paused (including those whose phone is connecting).
    pub paused: u32,
    /// Inbound calls waiting in queues.
    pub inbound_waiting: u32,
}

impl PacingCounts {
    /// Agents free for outbound calls by `at`: ready now plus wrap-ups ending by then, less
    /// the inbound calls still queued (they take the first free agents).
    pub fn free_by(&self, at: UnixMillis) -> u32 {
        let ending = self.wrap_up_ends.iter().filter(|t| **t <= at).count() as u32;
        (self.ready_before_queue + ending).saturating_sub(self.inbound_waiting)
    }
}

/// A call an agent is reserved for, talks on or wraps up.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ActiveCall {
    call: CallId,
    campaign: Option<CampaignId>,
    pop: ScreenPop,
    dispositions: Vec<String>,
    wrap_up_ms: i64,
    disposition: Option<String>,
    talking_since: Option<UnixMillis>,
    talking_until: Option<UnixMillis>,
}

impl ActiveCall {
    fn inbound(&self) -> bool {
        self.campaign.is_none()
    }
}

/// An agent's state inside the desk.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seat {
    LoggedOut,
    PhoneConnecting,
    Ready {
        since: UnixMillis,
    },
    Reserved(Box<ActiveCall>),
    Talking(Box<ActiveCall>),
    WrapUp {
        call: Box<ActiveCall>,
        until: UnixMillis,
    },
    Paused {
        reason: String,
    },
}

#[derive(Debug, Clone)]
struct DeskAgent {
    name: String,
    groups: Vec<AgentGroupId>,
    seat: Seat,
    since: UnixMillis,
}

/// Where a waiting call may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// Any agent on the box (no rule matched, or no policy yet).
    Anyone,
    /// This group's agents.
    Group(AgentGroupId),
}

#[derive(Debug, Clone)]
struct WaitingCall {
    call: ActiveCall,
    target: Target,
    deadline: UnixMillis,
}

#[derive(Debug, Clone)]
struct QueuedCall {
    call: ActiveCall,
    group: AgentGroupId,
    arrived: UnixMillis,
    next_announcement: UnixMillis,
}

/// A campaign's settings the desk needs.
#[derive(Debug, Clone)]
struct CampaignDesk {
    wrap_up_ms: i64,
    dispositions: Vec<String>,
}

/// What the agent page shows of one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentView {
    /// The agent.
    pub agent: u64,
    /// Display name.
    pub name: String,
    /// `logged_out`, `connecting`, `ready`, `reserved`, `talking`, `wrap_up`, `paused`.
    pub state: &'static str,
    /// When the state was entered (ms since the epoch).
    pub since_ms: i64,
    /// The pause reason.
    pub paused_reason: Option<String>,
    /// The call, while reserved, talking or in wrap-up.
    pub call: Option<CallView>,
    /// When wrap-up ends.
    pub wrap_up_until_ms: Option<i64>,
}

/// The call part of an [`AgentView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallView {
    /// The call id.
    pub call: String,
    /// Inbound (queue) or outbound (campaign).
    pub inbound: bool,
    /// The screen-pop.
    pub pop: ScreenPop,
    /// The codes to choose from.
    pub dispositions: Vec<String>,
    /// The code saved, if any.
    pub disposition: Option<String>,
    /// When talking started (for the call timer).
    pub talking_since_ms: Option<i64>,
    /// When the call ended (the timer stops there).
    pub talking_until_ms: Option<i64>,
}

/// The desk.
#[derive(Debug)]
pub struct AgentDesk {
    settings: DeskSettings,
    agents: BTreeMap<AgentId, DeskAgent>,
    groups: BTreeMap<AgentGroupId, String>,
    policy: Option<RoutingPolicy>,
    campaigns: HashMap<CampaignId, CampaignDesk>,
    waiting: Vec<WaitingCall>,
    queue: Vec<QueuedCall>,
    outputs: VecDeque<DeskOutput>,
    /// Wrap-ups a previous run left, by agent: the call and when its wrap-up ends.
    resumable: HashMap<AgentId, (ActiveCall, UnixMillis)>,
}

impl AgentDesk {
    /// An empty desk (no roster, no policy).
    pub fn new(settings: DeskSettings) -> AgentDesk {
        AgentDesk {
            settings,
            agents: BTreeMap::new(),
            groups: BTreeMap::new(),
            policy: None,
            campaigns: HashMap::new(),
            waiting: Vec::new(),
            queue: Vec::new(),
            outputs: VecDeque::new(),
            resumable: HashMap::new(),
        }
    }

    /// A wrap-up a previous run left: the box stopped while `agent` wrapped up `call`. When
    /// the agent next logs in (with nailed-up legs: when its phone answers) before `until`,
    /// it is back in that wrap-up and may save the call's code (the campaign's codes, or the
    /// inbound ones for a call of no campaign); at `until` it is ready as usual.
    pub fn resume_wrap_up(
        &mut self,
        agent: AgentId,
        call: CallId,
        campaign: Option<CampaignId>,
        pop: ScreenPop,
        until: UnixMillis,
    ) {
        let call = ActiveCall {
            call,
            campaign,
            pop,
            dispositions: Vec::new(),
            wrap_up_ms: 0,
            disposition: None,
            talking_since: None,
            talking_until: None,
        };
        self.resumable.insert(agent, (call, until));
    }

    /// Installs a roster: new agents start logged out; agents no longer on it are logged
    /// out (and their calls reported lost); names and groups change at once.
    pub fn set_roster(&mut self, now: UnixMillis, roster: &AgentRoster) {
        self.groups = roster
            .groups
            .iter()
            .map(|g| (g.group, g.name.clone()))
            .collect();
        let gone: Vec<AgentId> = self
            .agents
            .keys()
            .filter(|id| !roster.agents.iter().any(|a| a.agent == **id))
            .copied()
            .collect();
        for id in gone {
            self.force_out(now, id, "removed from the roster");
            self.agents.remove(&id);
        }
        for a in &roster.agents {
            let entry = self.agents.entry(a.agent).or_insert_with(|| DeskAgent {
                name: String::new(),
                groups: Vec::new(),
                seat: Seat::LoggedOut,
                since: now,
            });
            entry.name.clone_from(&a.name);
            entry.groups.clone_from(&a.groups);
        }
    }

    /// Installs the routing policy in force.
    pub fn set_policy(&mut self, policy: RoutingPolicy) {
        self.policy = Some(policy);
    }

    /// Installs or updates a campaign's wrap-up time and disposition codes.
    pub fn set_campaign(&mut self, brief: &CampaignBrief) {
        self.campaigns.insert(
            brief.campaign,
            CampaignDesk {
                wrap_up_ms: i64::from(brief.wrap_up_seconds) * 1000,
                dispositions: brief.disposition_codes.clone(),
            },
        );
    }

    /// Logs an agent in. Returns `false` when already logged in (nothing changes). With
    /// nailed-up legs the agent waits for the phone ([`DeskOutput::CallPhone`]).
    pub fn log_in(&mut self, now: UnixMillis, agent: AgentId) -> Result<bool, AgentsError> {
        let a = self
            .agents
            .get(&agent)
            .ok_or(AgentsError::UnknownAgent(agent))?;
        if a.seat != Seat::LoggedOut {
            return Ok(false);
        }
        if self.settings.nailed_up {
            self.enter(now, agent, Seat::PhoneConnecting, None);
            self.outputs.push_back(DeskOutput::CallPhone { agent });
        } else {
            self.ready_or_resume(now, agent);
        }
        Ok(true)
    }

    /// The nailed-up leg to the agent's phone answered: the agent is ready.
    pub fn phone_leg_up(&mut self, now: UnixMillis, agent: AgentId) -> Result<(), AgentsError> {
        match self.seat(agent)? {
            Seat::PhoneConnecting => {
                self.ready_or_resume(now, agent);
                Ok(())
            }
            Seat::LoggedOut => Err(AgentsError::NotLoggedIn(agent)),
            _ => Ok(()),
        }
    }

    /// The agent's phone leg failed or dropped: the agent is logged out with `reason`; a
    /// call it held is reported with [`DeskOutput::AgentLost`].
    pub fn phone_leg_down(&mut self, now: UnixMillis, agent: AgentId, reason: &str) {
        self.force_out(now, agent, reason);
    }

    /// The agent logs out from the page. Refused while on a call.
    pub fn log_out(
        &mut self,
        now: UnixMillis,
        agent: AgentId,
        reason: &str,
    ) -> Result<(), AgentsError> {
        match self.seat(agent)? {
            Seat::LoggedOut => Ok(()),
            Seat::Reserved(c) | Seat::Talking(c) => Err(AgentsError::OnCall {
                agent,
                call: c.call,
            }),
            _ => {
                self.force_out(now, agent, reason);
                Ok(())
            }
        }
    }

    /// The agent pauses with `reason` (from ready, paused or wrap-up).
    pub fn pause(
        &mut self,
        now: UnixMillis,
        agent: AgentId,
        reason: &str,
    ) -> Result<(), AgentsError> {
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > 100 {
            return Err(AgentsError::BadPauseReason);
        }
        match self.seat(agent)? {
            Seat::LoggedOut => Err(AgentsError::NotLoggedIn(agent)),
            Seat::PhoneConnecting => Err(AgentsError::PhoneNotConnected(agent)),
            Seat::Reserved(c) | Seat::Talking(c) => Err(AgentsError::OnCall {
                agent,
                call: c.call,
            }),
            Seat::Paused { reason: r } if r == reason => Ok(()),
            Seat::Ready { .. } | Seat::WrapUp { .. } | Seat::Paused { .. } => {
                self.enter(
                    now,
                    agent,
                    Seat::Paused {
                        reason: reason.to_string(),
                    },
                    None,
                );
                Ok(())
            }
        }
    }

    /// The agent is ready again (from paused; a no-op when ready).
    pub fn ready(&mut self, now: UnixMillis, agent: AgentId) -> Result<(), AgentsError> {
        match self.seat(agent)? {
            Seat::LoggedOut => Err(AgentsError::NotLoggedIn(agent)),
            Seat::PhoneConnecting => Err(AgentsError::PhoneNotConnected(agent)),
            Seat::Reserved(c) | Seat::Talking(c) => Err(AgentsError::OnCall {
                agent,
                call: c.call,
            }),
            Seat::WrapUp { call, .. } => Err(AgentsError::WrapUpPending(call.call)),
            Seat::Ready { .. } => Ok(()),
            Seat::Paused { .. } => {
                self.become_ready(now, agent);
                Ok(())
            }
        }
    }

    /// The agent saves a disposition for its current call (talking or in wrap-up). In
    /// wrap-up the agent is ready at once; while talking, right after the call ends.
    pub fn dispose(
        &mut self,
        now: UnixMillis,
        agent: AgentId,
        code: &str,
    ) -> Result<(), AgentsError> {
        let code = code.trim();
        let (call, in_wrap_up) = match self.seat_mut(agent)? {
            Seat::Talking(c) => (c, false),
            Seat::WrapUp { call, .. } => (call, true),
            Seat::LoggedOut => return Err(AgentsError::NotLoggedIn(agent)),
            _ => return Err(AgentsError::NoCallToDispose(agent)),
        };
        if call.disposition.is_some() {
            return Err(AgentsError::AlreadyDisposed(call.call));
        }
        if !call.dispositions.iter().any(|d| d == code) {
            return Err(AgentsError::UnknownDisposition {
                code: code.chars().take(64).collect(),
                allowed: call.dispositions.join(", "),
            });
        }
        call.disposition = Some(code.to_string());
        let out = DeskOutput::Disposition {
            call: call.call,
            agent,
            campaign: call.campaign,
            code: code.to_string(),
            at: now,
        };
        self.outputs.push_back(out);
        if in_wrap_up {
            self.become_ready(now, agent);
        }
        Ok(())
    }

    /// The agent ends the call it is talking on (from the page): the desk asks the call
    /// side to hang up ([`DeskOutput::HangUp`]); the agent goes to wrap-up when the call
    /// side reports [`AgentDesk::call_ended`].
    pub fn hang_up(&mut self, agent: AgentId) -> Result<CallId, AgentsError> {
        match self.seat(agent)? {
            Seat::Talking(c) => {
                let call = c.call;
                self.outputs.push_back(DeskOutput::HangUp { call, agent });
                Ok(call)
            }
            Seat::LoggedOut => Err(AgentsError::NotLoggedIn(agent)),
            _ => Err(AgentsError::NoCallToHangUp(agent)),
        }
    }

    /// Routes an answered outbound call.
    pub fn offer(
        &mut self,
        now: UnixMillis,
        offered: OfferedCall,
    ) -> Result<OfferDecision, AgentsError> {
        self.check_new(offered.call)?;
        let mut prefer = None;
        let target = match self.policy.as_ref().and_then(|p| p.decide(&offered.facts)) {
            None => Target::Anyone,
            Some((_, RouteAction::AgentGroup(g))) => Target::Group(AgentGroupId(*g as u64)),
            Some((_, RouteAction::LastAgent { fallback_group })) => {
                prefer = offered.last_agent;
                Target::Group(AgentGroupId(*fallback_group as u64))
            }
            Some((_, RouteAction::RobotScript(s))) => {
                return Ok(OfferDecision::Robot { script: s.clone() })
            }
        };
        let answered_at = offered.answered_at;
        let call = self.campaign_call(offered.call, offered.campaign, offered.pop);
        let preferred = prefer.filter(|a| {
            self.agents
                .get(a)
                .is_some_and(|x| matches!(x.seat, Seat::Ready { .. }))
        });
        let agent = preferred.or_else(|| self.longest_idle(target));
        Ok(self.connect_or_wait(now, agent, call, target, answered_at))
    }

    /// Routes an answered call an agent dialled itself (preview): that agent takes it when
    /// ready; otherwise it is routed like any answered call ([`AgentDesk::offer`]).
    pub fn offer_to(
        &mut self,
        now: UnixMillis,
        offered: OfferedCall,
        agent: AgentId,
    ) -> Result<OfferDecision, AgentsError> {
        self.check_new(offered.call)?;
        let ready = self
            .agents
            .get(&agent)
            .is_some_and(|a| matches!(a.seat, Seat::Ready { .. }));
        if !ready {
            return self.offer(now, offered);
        }
        let call = self.campaign_call(offered.call, offered.campaign, offered.pop);
        self.enter(now, agent, Seat::Reserved(Box::new(call)), None);
        Ok(OfferDecision::Connect { agent })
    }

    /// Routes a call a robot script transfers to `group` (the script names the group; the
    /// routing policy is not asked): the group's longest-idle ready agent, else the call
    /// waits for one of them until the safe-harbour time after `offered.answered_at` (the
    /// moment of the transfer), then [`DeskOutput::SafeHarbour`] — for a transfer that
    /// means "no agent", and the script goes on.
    pub fn offer_to_group(
        &mut self,
        now: UnixMillis,
        offered: OfferedCall,
        group: AgentGroupId,
    ) -> Result<OfferDecision, AgentsError> {
        self.check_new(offered.call)?;
        let answered_at = offered.answered_at;
        let call = self.campaign_call(offered.call, offered.campaign, offered.pop);
        let target = Target::Group(group);
        let agent = self.longest_idle(target);
        Ok(self.connect_or_wait(now, agent, call, target, answered_at))
    }

    /// Routes a call of no campaign that a robot script transfers to `group` (an inbound
    /// caller's overflow script): as [`AgentDesk::offer_to_group`], the call carrying the
    /// inbound disposition codes and wrap-up time; its safe-harbour time runs from `now`.
    pub fn offer_inbound_to_group(
        &mut self,
        now: UnixMillis,
        call: CallId,
        pop: ScreenPop,
        group: AgentGroupId,
    ) -> Result<OfferDecision, AgentsError> {
        self.check_new(call)?;
        let call = ActiveCall {
            call,
            campaign: None,
            pop,
            dispositions: self.settings.inbound_dispositions.clone(),
            wrap_up_ms: self.settings.inbound_wrap_up_ms,
            disposition: None,
            talking_since: None,
            talking_until: None,
        };
        let target = Target::Group(group);
        let agent = self.longest_idle(target);
        Ok(self.connect_or_wait(now, agent, call, target, now))
    }

    /// A campaign call as the desk carries it, with the campaign's dispositions and wrap-up.
    fn campaign_call(&self, call: CallId, campaign: CampaignId, pop: ScreenPop) -> ActiveCall {
        let held = self.campaigns.get(&campaign);
        ActiveCall {
            call,
            campaign: Some(campaign),
            pop,
            dispositions: held.map(|c| c.dispositions.clone()).unwrap_or_default(),
            wrap_up_ms: held.map_or(0, |c| c.wrap_up_ms),
            disposition: None,
            talking_since: None,
            talking_until: None,
        }
    }

    /// Hands `call` to `agent` when one was found; otherwise the call waits for a ready
    /// agent of `target` until the safe-harbour time after `answered_at` (or goes to safe
    /// harbour at once when that time has passed).
    fn connect_or_wait(
        &mut self,
        now: UnixMillis,
        agent: Option<AgentId>,
        call: ActiveCall,
        target: Target,
        answered_at: UnixMillis,
    ) -> OfferDecision {
        if let Some(agent) = agent {
            self.enter(now, agent, Seat::Reserved(Box::new(call)), None);
            return OfferDecision::Connect { agent };
        }
        let deadline = answered_at.plus_millis(self.settings.safe_harbour_after_ms);
        if now >= deadline {
            return OfferDecision::SafeHarbour;
        }
        self.waiting.push(WaitingCall {
            call,
            target,
            deadline,
        });
        OfferDecision::Waiting { until: deadline }
    }

    /// Puts an inbound call in front of its group: to the longest-idle ready agent, or into
    /// the group's queue.
    pub fn enqueue_inbound(
        &mut self,
        now: UnixMillis,
        inbound: InboundCall,
    ) -> Result<OfferDecision, AgentsError> {
        self.check_new(inbound.call)?;
        let call = ActiveCall {
            call: inbound.call,
            campaign: None,
            pop: inbound.pop,
            dispositions: self.settings.inbound_dispositions.clone(),
            wrap_up_ms: self.settings.inbound_wrap_up_ms,
            disposition: None,
            talking_since: None,
            talking_until: None,
        };
        let queued_ahead = self.queue.iter().any(|q| q.group == inbound.group);
        if !queued_ahead {
            if let Some(agent) = self.longest_idle(Target::Group(inbound.group)) {
                self.enter(now, agent, Seat::Reserved(Box::new(call)), None);
                return Ok(OfferDecision::Connect { agent });
            }
        }
        self.queue.push(QueuedCall {
            call,
            group: inbound.group,
            arrived: now,
            next_announcement: now.plus_millis(self.settings.position_every_ms),
        });
        Ok(OfferDecision::Queued {
            position: self
                .queue
                .iter()
                .filter(|q| q.group == inbound.group)
                .count(),
        })
    }

    /// The call is bridged to its reserved agent: the agent is talking.
    pub fn call_bridged(&mut self, now: UnixMillis, call: CallId) -> bool {
        let Some(agent) = self.agent_of(call) else {
            return false;
        };
        let seat = std::mem::replace(
            &mut self.agents.get_mut(&agent).expect("agent_of found it").seat,
            Seat::LoggedOut,
        );
        match seat {
            Seat::Reserved(mut c) => {
                c.talking_since = Some(now);
                self.enter(now, agent, Seat::Talking(c), None);
                true
            }
            other => {
                self.agents.get_mut(&agent).expect("present").seat = other;
                false
            }
        }
    }

    /// The call ended (either side hung up, or it was sent elsewhere): a waiting or queued
    /// call is forgotten; a reserved agent is ready again; a talking agent goes to wrap-up
    /// (or straight to ready when the disposition is already saved).
    pub fn call_ended(&mut self, now: UnixMillis, call: CallId) {
        self.waiting.retain(|w| w.call.call != call);
        self.queue.retain(|q| q.call.call != call);
        let Some(agent) = self.agent_of(call) else {
            return;
        };
        let seat = self.agents[&agent].seat.clone();
        match seat {
            Seat::Reserved(_) => self.become_ready(now, agent),
            Seat::Talking(mut c) => {
                c.talking_until = Some(now);
                if c.disposition.is_some() {
                    self.become_ready(now, agent);
                } else {
                    let until = now.plus_millis(c.wrap_up_ms);
                    self.enter(now, agent, Seat::WrapUp { call: c, until }, None);
                }
            }
            _ => {}
        }
    }

    /// Moves time to `now`: wrap-ups end, waiting calls reach safe harbour, queued calls
    /// hear their position or overflow.
    pub fn handle_timeout(&mut self, now: UnixMillis) {
        let ended: Vec<AgentId> = self
            .agents
            .iter()
            .filter(|(_, a)| matches!(&a.seat, Seat::WrapUp { until, .. } if *until <= now))
            .map(|(id, _)| *id)
            .collect();
        for agent in ended {
            self.become_ready(now, agent);
        }
        let (late, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| w.deadline <= now);
        self.waiting = keep;
        for w in late {
            self.outputs
                .push_back(DeskOutput::SafeHarbour { call: w.call.call });
        }
        let overflow_after = self.settings.queue_overflow_after_ms;
        let (over, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.queue)
            .into_iter()
            .partition(|q| q.arrived.plus_millis(overflow_after) <= now);
        self.queue = keep;
        for q in over {
            self.outputs.push_back(DeskOutput::Overflow {
                call: q.call.call,
                group: q.group,
            });
        }
        let every = self.settings.position_every_ms;
        let mut announce = Vec::new();
        for i in 0..self.queue.len() {
            if self.queue[i].next_announcement <= now {
                let group = self.queue[i].group;
                let position = self.queue[..=i].iter().filter(|q| q.group == group).count();
                announce.push((self.queue[i].call.call, position));
                self.queue[i].next_announcement = now.plus_millis(every);
            }
        }
        for (call, position) in announce {
            self.outputs
                .push_back(DeskOutput::QueuePosition { call, position });
        }
    }

    /// When [`AgentDesk::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<UnixMillis> {
        let wrap = self.agents.values().filter_map(|a| match &a.seat {
            Seat::WrapUp { until, .. } => Some(*until),
            _ => None,
        });
        let waiting = self.waiting.iter().map(|w| w.deadline);
        let overflow_after = self.settings.queue_overflow_after_ms;
        let queued = self.queue.iter().map(|q| {
            q.next_announcement
                .min(q.arrived.plus_millis(overflow_after))
        });
        wrap.chain(waiting).chain(queued).min()
    }

    /// The next output, in the order the desk produced them.
    pub fn poll_output(&mut self) -> Option<DeskOutput> {
        self.outputs.pop_front()
    }

    /// Agents ready for outbound calls now (queued inbound calls claim ready agents first).
    pub fn ready_count(&self) -> u32 {
        self.pacing_counts().ready
    }

    /// The counts the pacing core needs.
    pub fn pacing_counts(&self) -> PacingCounts {
        let mut c = PacingCounts::default();
        let mut ready = 0u32;
        for a in self.agents.values() {
            match &a.seat {
                Seat::Ready { .. } => ready += 1,
                Seat::Reserved(_) => c.reserved += 1,
                Seat::Talking(call) if call.inbound() => c.talking_inbound += 1,
                Seat::Talking(_) => c.talking_outbound += 1,
                Seat::WrapUp { until, .. } => c.wrap_up_ends.push(*until),
                Seat::Paused { .. } | Seat::PhoneConnecting => c.paused += 1,
                Seat::LoggedOut => {}
            }
        }
        c.wrap_up_ends.sort();
        c.inbound_waiting = self.queue.len() as u32;
        c.ready_before_queue = ready;
        c.ready = ready.saturating_sub(c.inbound_waiting);
        c
    }

    /// What the agent page shows for `agent`.
    pub fn view(&self, agent: AgentId) -> Option<AgentView> {
        let a = self.agents.get(&agent)?;
        let call_view = |c: &ActiveCall| CallView {
            call: c.call.to_string(),
            inbound: c.inbound(),
            pop: c.pop.clone(),
            dispositions: c.dispositions.clone(),
            disposition: c.disposition.clone(),
            talking_since_ms: c.talking_since.map(|t| t.0),
            talking_until_ms: c.talking_until.map(|t| t.0),
        };
        let (state, paused_reason, call, wrap_up_until_ms) = match &a.seat {
            Seat::LoggedOut => ("logged_out", None, None, None),
            Seat::PhoneConnecting => ("connecting", Some(PHONE_CONNECTING.to_string()), None, None),
            Seat::Ready { .. } => ("ready", None, None, None),
            Seat::Reserved(c) => ("reserved", None, Some(call_view(c)), None),
            Seat::Talking(c) => ("talking", None, Some(call_view(c)), None),
            Seat::WrapUp { call, until } => ("wrap_up", None, Some(call_view(call)), Some(until.0)),
            Seat::Paused { reason } => ("paused", Some(reason.clone()), None, None),
        };
        Some(AgentView {
            agent: agent.0,
            name: a.name.clone(),
            state,
            since_ms: a.since.0,
            paused_reason,
            call,
            wrap_up_until_ms,
        })
    }

    /// The agents logged in (any state but logged out).
    pub fn logged_in(&self) -> Vec<AgentId> {
        self.agents
            .iter()
            .filter(|(_, a)| a.seat != Seat::LoggedOut)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The name of an agent group.
    pub fn group_name(&self, group: AgentGroupId) -> Option<&str> {
        self.groups.get(&group).map(String::as_str)
    }

    /// The group an inbound route names: by name (case-insensitive) or by number.
    pub fn group_by_name(&self, name: &str) -> Option<AgentGroupId> {
        let name = name.trim();
        self.groups
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(name))
            .map(|(g, _)| *g)
            .or_else(|| {
                name.parse()
                    .ok()
                    .map(AgentGroupId)
                    .filter(|g| self.groups.contains_key(g))
            })
    }

    fn seat(&self, agent: AgentId) -> Result<&Seat, AgentsError> {
        self.agents
            .get(&agent)
            .map(|a| &a.seat)
            .ok_or(AgentsError::UnknownAgent(agent))
    }

    fn seat_mut(&mut self, agent: AgentId) -> Result<&mut Seat, AgentsError> {
        self.agents
            .get_mut(&agent)
            .map(|a| &mut a.seat)
            .ok_or(AgentsError::UnknownAgent(agent))
    }

    fn check_new(&self, call: CallId) -> Result<(), AgentsError> {
        let known = self.waiting.iter().any(|w| w.call.call == call)
            || self.queue.iter().any(|q| q.call.call == call)
            || self.agent_of(call).is_some();
        if known {
            Err(AgentsError::DuplicateCall(call))
        } else {
            Ok(())
        }
    }

    fn agent_of(&self, call: CallId) -> Option<AgentId> {
        self.agents.iter().find_map(|(id, a)| match &a.seat {
            Seat::Reserved(c) | Seat::Talking(c) if c.call == call => Some(*id),
            Seat::WrapUp { call: c, .. } if c.call == call => Some(*id),
            _ => None,
        })
    }

    /// The longest-idle ready agent `target` allows (ties: lowest id).
    fn longest_idle(&self, target: Target) -> Option<AgentId> {
        self.agents
            .iter()
            .filter_map(|(id, a)| match a.seat {
                Seat::Ready { since } => Some((since, *id, a)),
                _ => None,
            })
            .filter(|(_, _, a)| match target {
                Target::Anyone => true,
                Target::Group(g) => a.groups.contains(&g),
            })
            .min_by_key(|(since, id, _)| (*since, *id))
            .map(|(_, id, _)| id)
    }

    /// Logs `agent` out whatever it was doing.
    fn force_out(&mut self, now: UnixMillis, agent: AgentId, reason: &str) {
        let Some(a) = self.agents.get(&agent) else {
            return;
        };
        match &a.seat {
            Seat::LoggedOut => return,
            Seat::Reserved(c) | Seat::Talking(c) => {
                let call = c.call;
                self.outputs
                    .push_back(DeskOutput::AgentLost { call, agent });
            }
            _ => {}
        }
        self.enter(now, agent, Seat::LoggedOut, Some(reason.to_string()));
        if self.settings.nailed_up {
            self.outputs.push_back(DeskOutput::ReleasePhone { agent });
        }
    }

    /// At login: back into the wrap-up a previous run left, while it lasts; else ready.
    fn ready_or_resume(&mut self, now: UnixMillis, agent: AgentId) {
        match self.resumable.remove(&agent) {
            Some((mut call, until)) if until > now => {
                call.dispositions = match call.campaign {
                    Some(c) => self
                        .campaigns
                        .get(&c)
                        .map(|d| d.dispositions.clone())
                        .unwrap_or_default(),
                    None => self.settings.inbound_dispositions.clone(),
                };
                let reason = "resumed: the box restarted during this wrap-up".to_string();
                self.enter(
                    now,
                    agent,
                    Seat::WrapUp {
                        call: Box::new(call),
                        until,
                    },
                    Some(reason),
                );
            }
            _ => self.become_ready(now, agent),
        }
    }

    /// Makes `agent` ready, then gives it the most urgent call it may take.
    fn become_ready(&mut self, now: UnixMillis, agent: AgentId) {
        self.enter(now, agent, Seat::Ready { since: now }, None);
        let groups = self.agents[&agent].groups.clone();
        let fits = |t: Target| match t {
            Target::Anyone => true,
            Target::Group(g) => groups.contains(&g),
        };
        // Answered outbound calls first (their 2-second clock runs), earliest deadline first.
        let outbound = self
            .waiting
            .iter()
            .enumerate()
            .filter(|(_, w)| w.deadline > now && fits(w.target))
            .min_by_key(|(_, w)| w.deadline)
            .map(|(i, _)| i);
        let call = if let Some(i) = outbound {
            self.waiting.remove(i).call
        } else {
            let inbound = self
                .queue
                .iter()
                .enumerate()
                .filter(|(_, q)| groups.contains(&q.group))
                .min_by_key(|(_, q)| q.arrived)
                .map(|(i, _)| i);
            match inbound {
                Some(i) => self.queue.remove(i).call,
                None => return,
            }
        };
        let id = call.call;
        self.enter(now, agent, Seat::Reserved(Box::new(call)), None);
        self.outputs
            .push_back(DeskOutput::Connect { call: id, agent });
    }

    /// Sets the seat and records the event.
    fn enter(&mut self, now: UnixMillis, agent: AgentId, seat: Seat, reason: Option<String>) {
        let a = self
            .agents
            .get_mut(&agent)
            .expect("callers check the agent");
        let (state, active) = match &seat {
            Seat::LoggedOut => (AgentState::LoggedOut, None),
            Seat::PhoneConnecting => (
                AgentState::Paused {
                    reason: PHONE_CONNECTING.to_string(),
                },
                None,
            ),
            Seat::Ready { .. } => (AgentState::Ready, None),
            Seat::Reserved(c) => (AgentState::Reserved, Some(c.as_ref())),
            Seat::Talking(c) => (AgentState::Talking, Some(c.as_ref())),
            Seat::WrapUp { call, .. } => (AgentState::WrapUp, Some(call.as_ref())),
            Seat::Paused { reason } => (
                AgentState::Paused {
                    reason: reason.clone(),
                },
                None,
            ),
        };
        let event = AgentEvent {
            agent,
            state,
            at: now,
            call: active.map(|c| c.call),
            campaign: active.and_then(|c| c.campaign),
        };
        a.seat = seat;
        a.since = now;
        self.outputs.push_back(DeskOutput::Agent { event, reason });
    }
}
