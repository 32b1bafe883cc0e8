//! Where each answered call goes: [`CallDispatch`], the [`AnsweredCallPlacement`] the daemon
//! gives the dialer, choosing on the campaign's dial mode and the routing result:
//!
//! - agentless campaigns, the routing policy's `RouteAction::RobotScript` and the desk's
//!   robot answer go to the robot placement when one is plugged in
//!   ([`CallDispatch::with_robot`]), else to the announcement (today's behaviour);
//! - preview, progressive and predictive calls go to the agent desk ([`AgentPlacement`]):
//!   `offer` → connect (bridge to the agent's nailed-up leg through the agents' lines),
//!   wait up to the safe-harbour deadline, or safe harbour (the recorded message, then the
//!   call ends and counts as abandoned). The customer's hang-up, the agent's (from the
//!   page) or the agent's phone dropping ends the bridge. The placement returns when the
//!   bridge ends (the call is released then) with the agent's wrap-up ([`WrapUp`]): the call
//!   record waits for the disposition the agent saves (at most until the wrap-up ends).
//!
//! [`DeskTransfer`] is the robot scripts' `transfer` hook over the same desk and lines: the
//! script's group gets the call (its longest-idle ready agent, or the first one ready
//! within the safe-harbour time), the customer's audio is relayed to the agent's nailed-up
//! leg after the connect beep, and the agent's wrap-up comes back for the call record
//! (`TransferResult::WrappingUp`: the robot releases the customer at once);
//! with nobody ready the script goes on at its `on_no_agent`.
//!
//! [`connect_agents`] joins the desk and the running dialer: every agent event becomes a
//! pacing input ([`DialerControl::agent`]) and every campaign brief the dialer holds is
//! installed on the desk (`set_campaign`: wrap-up time, disposition codes).
//!
//! Must not: send SIP (the driver hangs up after the placement returns), decide which agent
//! takes a call (the desk does), or run robot scripts (the robot placement does).

use super::driver::DialerControl;
use super::placement::{Announcement, AnsweredCall, AnsweredCallPlacement, Placement, WrapUp};
use super::DialerError;
use crate::agents::desk::{DeskOutput, OfferDecision, OfferedCall};
use crate::agents::lines::{LinesHandle, NotBridged};
use crate::agents::script::ScreenPop;
use crate::agents::service::AgentDeskService;
use crate::robot_call::{AgentTransfer, TransferRequest, TransferResult};
use callgate_common::ids::{AgentId, CallId};
use callgate_common::routing::CallFacts;
use callgate_common::time::UnixMillis;
use callgate_common::wire::{AgentState as WireState, CallOutcome, CampaignBrief, DialMode};
use callgate_pacing::AgentState;
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

/// The dialer's placement: routes each answered call by mode and routing result.
#[derive(Clone)]
pub struct CallDispatch {
    announcement: Arc<dyn AnsweredCallPlacement>,
    robot: Option<Arc<dyn AnsweredCallPlacement>>,
    agents: Option<Arc<AgentPlacement>>,
}

impl std::fmt::Debug for CallDispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallDispatch")
            .field("robot", &self.robot.is_some())
            .field("agents", &self.agents.is_some())
            .finish()
    }
}

impl CallDispatch {
    /// Every call gets `announcement` until robots or agents are plugged in.
    pub fn new(announcement: Arc<dyn AnsweredCallPlacement>) -> CallDispatch {
        CallDispatch {
            announcement,
            robot: None,
            agents: None,
        }
    }

    /// Agentless campaigns and calls routed to a robot script go to `robot`.
    pub fn with_robot(mut self, robot: Option<Arc<dyn AnsweredCallPlacement>>) -> CallDispatch {
        self.robot = robot;
        self
    }

    /// Calls of agent campaigns go to the desk.
    pub fn with_agents(mut self, agents: Arc<AgentPlacement>) -> CallDispatch {
        self.agents = Some(agents);
        self
    }

    fn robot_or_announcement(&self) -> Arc<dyn AnsweredCallPlacement> {
        self.robot
            .clone()
            .unwrap_or_else(|| self.announcement.clone())
    }
}

impl AnsweredCallPlacement for CallDispatch {
    fn place(&self, call: AnsweredCall) -> BoxFuture<'static, Result<Placement, DialerError>> {
        match (call.mode, &self.agents) {
            (DialMode::Agentless, _) | (_, None) => self.robot_or_announcement().place(call),
            (_, Some(agents)) => Box::pin(agents.clone().place(call, self.robot_or_announcement())),
        }
    }
}

/// Which answered calls are screened for an answering machine (`[dialer]
/// machine_detection`). Screening adds the detector's decision time (about 2 s) before a
/// person reaches the script or the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MachineDetection {
    /// No call is screened; every answer counts as a person's.
    #[default]
    Off,
    /// Calls of agentless campaigns (robot scripts, the announcement).
    Agentless,
    /// Every call except previewed ones (the agent who dialled is on the line already).
    All,
}

impl MachineDetection {
    /// Whether calls of a campaign in `mode` are screened.
    pub fn covers(self, mode: DialMode) -> bool {
        match self {
            MachineDetection::Off => false,
            MachineDetection::Agentless => mode == DialMode::Agentless,
            MachineDetection::All => true,
        }
    }
}

/// [`CallDispatch`] with answering-machine detection in front of the calls
/// [`MachineDetection`] covers: machines get the screen's [`MachineAnswer`] (the campaign
/// script's `on_machine` message, or the end of the call), people and undecided answers the
/// dispatch. Every screened answer's verdict goes to the dialer (see
/// `ControlReceiver::with_verdicts`).
///
/// [`MachineAnswer`]: crate::robot_call::MachineAnswer
pub struct ScreenedDispatch {
    screen: crate::robot_call::MachineScreen<CallDispatch>,
    plain: CallDispatch,
    detection: MachineDetection,
}

impl std::fmt::Debug for ScreenedDispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScreenedDispatch")
            .field("dispatch", &self.plain)
            .field("detection", &self.detection)
            .finish()
    }
}

impl ScreenedDispatch {
    /// Screens the calls `detection` covers before `dispatch` places them; machines go to
    /// `machine`; verdicts to `verdicts`.
    pub fn new(
        dispatch: CallDispatch,
        detection: MachineDetection,
        machine: Arc<dyn crate::robot_call::MachineAnswer>,
        settings: crate::robot_call::ScreenSettings,
        verdicts: mpsc::UnboundedSender<crate::robot_call::ScreenedAnswer>,
    ) -> ScreenedDispatch {
        ScreenedDispatch {
            screen: crate::robot_call::MachineScreen::new(dispatch.clone(), machine, settings)
                .with_verdicts(verdicts),
            plain: dispatch,
            detection,
        }
    }
}

impl AnsweredCallPlacement for ScreenedDispatch {
    fn place(&self, call: AnsweredCall) -> BoxFuture<'static, Result<Placement, DialerError>> {
        if self.screens(&call) {
            self.screen.place(call)
        } else {
            self.plain.place(call)
        }
    }

    fn screens(&self, call: &AnsweredCall) -> bool {
        self.detection.covers(call.mode) && self.screen.screens(call)
    }
}

type CallWaiters = Arc<Mutex<HashMap<CallId, mpsc::UnboundedSender<DeskOutput>>>>;

/// Answered calls of agent campaigns: offered to the desk, bridged to the chosen agent's
/// nailed-up leg, or given the safe-harbour message.
pub struct AgentPlacement {
    desk: AgentDeskService,
    lines: LinesHandle,
    safe_harbour: Announcement,
    control: DialerControl,
    briefs: watch::Receiver<Vec<CampaignBrief>>,
    waiters: CallWaiters,
}

impl std::fmt::Debug for AgentPlacement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentPlacement")
    }
}

/// Removes a call's waiter however the placement ends.
struct WaiterGuard {
    waiters: CallWaiters,
    call: CallId,
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.call);
    }
}

impl AgentPlacement {
    /// The agent placement over the running desk and lines. `desk_outputs` is the receiver
    /// of the desk's decisions about the dialer's calls (what `AgentsSetup::dialer` was
    /// given); it is routed to the call each output names.
    pub fn start(
        desk: AgentDeskService,
        lines: LinesHandle,
        safe_harbour: Announcement,
        control: DialerControl,
        mut desk_outputs: mpsc::UnboundedReceiver<DeskOutput>,
    ) -> Arc<AgentPlacement> {
        let waiters: CallWaiters = Arc::default();
        let routes = waiters.clone();
        tokio::spawn(async move {
            while let Some(output) = desk_outputs.recv().await {
                let call = match &output {
                    DeskOutput::Connect { call, .. }
                    | DeskOutput::SafeHarbour { call }
                    | DeskOutput::AgentLost { call, .. }
                    | DeskOutput::HangUp { call, .. }
                    | DeskOutput::Disposition { call, .. } => *call,
                    other => {
                        tracing::debug!(output = ?other, "desk output for no dialer call");
                        continue;
                    }
                };
                let waiter = routes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&call)
                    .cloned();
                match waiter {
                    Some(tx) => {
                        let _ = tx.send(output);
                    }
                    None => {
                        tracing::debug!(%call, ?output, "desk output for a call no longer placed")
                    }
                }
            }
        });
        Arc::new(AgentPlacement {
            desk,
            lines,
            safe_harbour,
            briefs: control.briefs(),
            control,
            waiters,
        })
    }

    fn brief(&self, campaign: callgate_common::ids::CampaignId) -> Option<CampaignBrief> {
        self.briefs
            .borrow()
            .iter()
            .find(|b| b.campaign == campaign)
            .cloned()
    }

    async fn place(
        self: Arc<Self>,
        call: AnsweredCall,
        robot: Arc<dyn AnsweredCallPlacement>,
    ) -> Result<Placement, DialerError> {
        let id = call.call;
        let answered_at = UnixMillis::now();
        let (tx, mut desk_says) = mpsc::unbounded_channel();
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let guard = WaiterGuard {
            waiters: self.waiters.clone(),
            call: id,
        };
        let brief = self.brief(call.campaign);
        if let Some(b) = &brief {
            // The desk needs the wrap-up time and codes before the agent takes the call.
            self.desk.set_campaign(b);
        }
        let c = &call.contact;
        let pop = ScreenPop::new(
            brief.as_ref().map_or("", |b| b.name.as_str()),
            Some(&c.number),
            &c.fields,
            brief.as_ref().map_or("", |b| b.script.as_str()),
        );
        let offered = OfferedCall {
            call: id,
            campaign: call.campaign,
            answered_at,
            facts: CallFacts {
                campaign: Some(call.campaign.0 as i64),
                fields: c.fields.iter().cloned().collect(),
                tags: c.tags.clone(),
                last_outcome: c.last_outcome.clone(),
            },
            last_agent: c.last_agent,
            pop,
        };
        let decision = match call.agent {
            Some(agent) => self.desk.offer_to(offered, agent),
            None => self.desk.offer(offered),
        };
        let decision = match decision {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(call = %id, error = %e, "the desk refused the call; safe harbour");
                OfferDecision::SafeHarbour
            }
        };
        let mut end_now = call.end_now.clone();
        let agent = match decision {
            OfferDecision::Connect { agent } => agent,
            OfferDecision::Robot { script } => {
                tracing::info!(call = %id, %script, "routed to a robot script");
                let mut call = call;
                call.robot_script = Some(script);
                return robot.place(call).await;
            }
            OfferDecision::Waiting { .. } => loop {
                tokio::select! {
                    said = desk_says.recv() => match said {
                        Some(DeskOutput::Connect { agent, .. }) => break agent,
                        Some(DeskOutput::SafeHarbour { .. }) | None => {
                            return self.safe_harbour(call).await;
                        }
                        Some(_) => {}
                    },
                    changed = end_now.changed() => {
                        if changed.is_err() || *end_now.borrow() {
                            // Hung up before any agent was free: not connected to a live
                            // agent, so it counts as abandoned.
                            self.desk.call_ended(id);
                            metrics::counter!("callgate_dialer_abandoned_waiting_total").increment(1);
                            return Ok(Placement {
                                outcome: CallOutcome::Abandoned,
                                agent: None,
                                disposition: None,
                                recording_segments: 0,
                                quality: None,
                                wrap_up: None,
                            });
                        }
                    }
                }
            },
            OfferDecision::SafeHarbour | OfferDecision::Queued { .. } => {
                return self.safe_harbour(call).await;
            }
        };
        self.bridge(call, agent, desk_says, guard).await
    }

    /// Plays the safe-harbour message; the call counts as abandoned.
    async fn safe_harbour(&self, mut call: AnsweredCall) -> Result<Placement, DialerError> {
        let id = call.call;
        // The safe-harbour message may not wait for the consent announcement: the call goes
        // unrecorded instead (recording without consent is never an option).
        if call.consent.take().is_some() && call.recorder.take().is_some() {
            tracing::info!(call = %id, "safe-harbour call not recorded: the consent announcement was not played");
        }
        self.desk.call_ended(id);
        metrics::counter!("callgate_dialer_safe_harbour_total").increment(1);
        tracing::info!(call = %id, "no agent free within the safe-harbour time: message played");
        self.safe_harbour.place(call).await
    }

    async fn bridge(
        &self,
        call: AnsweredCall,
        agent: AgentId,
        mut desk_says: mpsc::UnboundedReceiver<DeskOutput>,
        guard: WaiterGuard,
    ) -> Result<Placement, DialerError> {
        let AnsweredCall {
            call: id,
            attempt,
            campaign,
            mode,
            contact,
            agent: preview_agent,
            customer,
            frame_samples,
            mut end_now,
            recorder,
            robot_script,
            quality_log,
            consent,
        } = call;
        let bridge = match self
            .lines
            .bridge_outbound(id, agent, customer, recorder, consent.clone())
            .await
        {
            Ok(b) => b,
            Err(not) => {
                let NotBridged {
                    customer,
                    recorder,
                    reason,
                } = *not;
                self.desk
                    .phone_leg_down(agent, &format!("agent line: {reason}"));
                let Some(customer) = customer else {
                    self.desk.call_ended(id);
                    return Ok(Placement {
                        outcome: CallOutcome::Abandoned,
                        agent: None,
                        disposition: None,
                        recording_segments: 0,
                        quality: None,
                        wrap_up: None,
                    });
                };
                return self
                    .safe_harbour(AnsweredCall {
                        call: id,
                        attempt,
                        campaign,
                        mode,
                        contact,
                        agent: preview_agent,
                        customer,
                        frame_samples,
                        end_now,
                        recorder,
                        robot_script,
                        quality_log,
                        consent,
                    })
                    .await;
            }
        };
        self.desk.call_bridged(id);
        let _ = self.control.connected(attempt);
        let mut report = bridge.report;
        let mut disposition = None;
        let mut lost = false;
        let mut hung_up = false;
        let mut desk_gone = false;
        let ended = loop {
            tokio::select! {
                r = &mut report => break r.ok(),
                changed = end_now.changed(), if !hung_up => {
                    if changed.is_err() || *end_now.borrow() {
                        hung_up = true;
                        let _ = bridge.commands.send(crate::media::BridgeCommand::Hangup).await;
                    }
                }
                said = desk_says.recv(), if !desk_gone => match said {
                    Some(DeskOutput::AgentLost { .. }) => {
                        lost = true;
                        let _ = bridge.commands.send(crate::media::BridgeCommand::Hangup).await;
                    }
                    Some(DeskOutput::HangUp { .. }) => {
                        tracing::info!(call = %id, %agent, "the agent hung up");
                        let _ = bridge.commands.send(crate::media::BridgeCommand::Hangup).await;
                    }
                    Some(DeskOutput::Disposition { code, .. }) => disposition = Some(code),
                    Some(_) => {}
                    None => desk_gone = true,
                },
            }
        };
        self.desk.call_ended(id);
        // The disposition is saved in wrap-up, after the call: the call is released now and
        // its record waits for it (bounded by the agent's wrap-up).
        let wrap_up = if disposition.is_none() && !lost {
            match self.desk.take_disposition(id) {
                Some(code) => {
                    disposition = Some(code);
                    None
                }
                None => Some(self.wrap_up(id, agent, desk_says, guard)),
            }
        } else {
            if disposition.is_some() {
                self.desk.take_disposition(id);
            }
            None
        };
        let (segments, quality) = match ended {
            Some(Ok(r)) => {
                if let Some(log) = &quality_log {
                    log.record(0, crate::media::LegRole::Customer, &r.customer)
                        .await;
                    for (i, leg) in r.agent_legs.iter().enumerate() {
                        log.record(i as u32 + 1, crate::media::LegRole::Agent, leg)
                            .await;
                    }
                }
                let segments = match &r.recording {
                    Some(Ok(all)) => all.len() as u32,
                    Some(Err(e)) => {
                        tracing::error!(call = %id, error = %e, "recording of the bridged call failed");
                        0
                    }
                    None => 0,
                };
                (segments, Some(super::placement::quality_of(&r.customer)))
            }
            Some(Err(e)) => {
                tracing::warn!(call = %id, error = %e, "bridge to the agent failed");
                (0, None)
            }
            None => (0, None),
        };
        Ok(Placement {
            outcome: CallOutcome::AnsweredHuman,
            agent: Some(agent),
            disposition,
            recording_segments: segments,
            quality,
            wrap_up,
        })
    }

    /// The agent's wrap-up of `call` as a [`WrapUp`]: the desk's disposition for it, or
    /// `None` when the wrap-up ends without one (`AgentDeskService::disposition_after`).
    /// Keeps the call's waiter (`guard`) until then, so the desk's outputs for the call
    /// still find it.
    fn wrap_up(
        &self,
        call: CallId,
        agent: AgentId,
        desk_says: mpsc::UnboundedReceiver<DeskOutput>,
        guard: WaiterGuard,
    ) -> WrapUp {
        let until = match self.desk.holds(agent, call) {
            crate::dialer::wrap_up::AgentHolds::Yes { wrap_up_until, .. } => wrap_up_until,
            crate::dialer::wrap_up::AgentHolds::No => None,
        };
        let wait = self.desk.disposition_after(call, agent);
        let disposition = Box::pin(async move {
            let _kept = (guard, desk_says);
            wait.await
        });
        WrapUp {
            agent,
            until,
            disposition,
        }
    }
}

/// A robot script's `transfer` step through the agent desk (see the module doc); install it
/// with `RobotPlacement::set_transfer`.
#[derive(Debug, Clone)]
pub struct DeskTransfer(Arc<AgentPlacement>);

impl DeskTransfer {
    /// Transfers through `agents`' desk and lines.
    pub fn new(agents: Arc<AgentPlacement>) -> DeskTransfer {
        DeskTransfer(agents)
    }
}

impl AgentTransfer for DeskTransfer {
    fn transfer(&self, request: TransferRequest) -> BoxFuture<'static, TransferResult> {
        let agents = self.0.clone();
        Box::pin(async move {
            let result = agents.transfer(request).await;
            let label = match result {
                TransferResult::Talked { .. } | TransferResult::WrappingUp(_) => "talked",
                _ => "no_agent",
            };
            metrics::counter!("callgate_robot_transfers_total", "result" => label).increment(1);
            result
        })
    }
}

impl AgentPlacement {
    /// A script's transfer: offered to the script's group, relayed to the agent, then the
    /// disposition; `NoAgent` when nobody of the group is ready in time.
    async fn transfer(&self, request: TransferRequest) -> TransferResult {
        let TransferRequest {
            call: id,
            campaign,
            group,
            contact,
            variables,
            audio,
            mut end_now,
        } = request;
        let (tx, mut desk_says) = mpsc::unbounded_channel();
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let guard = WaiterGuard {
            waiters: self.waiters.clone(),
            call: id,
        };
        let brief = campaign.and_then(|c| self.brief(c));
        if let Some(b) = &brief {
            self.desk.set_campaign(b);
        }
        // The agent sees the script's variables (contact fields and what the customer keyed;
        // an inbound caller's number is its `caller` variable).
        let caller = variables
            .get("caller")
            .and_then(|n| callgate_common::phone::PhoneNumber::parse(n, None).ok());
        let fields: Vec<(String, String)> = variables.into_iter().collect();
        let pop = ScreenPop::new(
            brief.as_ref().map_or("", |b| b.name.as_str()),
            contact.as_ref().map(|c| &c.number).or(caller.as_ref()),
            &fields,
            brief.as_ref().map_or("", |b| b.script.as_str()),
        );
        let decision = match campaign {
            Some(campaign) => self.desk.offer_to_group(
                OfferedCall {
                    call: id,
                    campaign,
                    answered_at: UnixMillis::now(),
                    facts: CallFacts::default(),
                    last_agent: None,
                    pop,
                },
                group,
            ),
            // An inbound caller's overflow script: the call of no campaign, inbound codes.
            None => self.desk.offer_inbound_to_group(id, pop, group),
        };
        let agent = match decision {
            Ok(OfferDecision::Connect { agent }) => agent,
            Ok(OfferDecision::Waiting { .. }) => loop {
                tokio::select! {
                    said = desk_says.recv() => match said {
                        Some(DeskOutput::Connect { agent, .. }) => break agent,
                        Some(DeskOutput::SafeHarbour { .. }) | None => {
                            self.desk.call_ended(id);
                            return TransferResult::NoAgent;
                        }
                        Some(_) => {}
                    },
                    changed = end_now.changed() => {
                        if changed.is_err() || *end_now.borrow() {
                            self.desk.call_ended(id);
                            return TransferResult::NoAgent;
                        }
                    }
                }
            },
            Ok(other) => {
                tracing::info!(call = %id, %group, decision = ?other, "no agent of the group for the transfer");
                self.desk.call_ended(id);
                return TransferResult::NoAgent;
            }
            Err(e) => {
                tracing::error!(call = %id, %group, error = %e, "the desk refused the transfer");
                return TransferResult::NoAgent;
            }
        };
        let bridge = match self.lines.bridge_audio(id, agent, audio).await {
            Ok(b) => b,
            Err(reason) => {
                self.desk
                    .phone_leg_down(agent, &format!("agent line: {reason}"));
                self.desk.call_ended(id);
                return TransferResult::NoAgent;
            }
        };
        self.desk.call_bridged(id);
        tracing::info!(call = %id, %group, %agent, "transferred call bridged to the agent");
        let mut report = bridge.report;
        let mut disposition = None;
        let mut lost = false;
        let mut hung_up = *end_now.borrow();
        if hung_up {
            let _ = bridge
                .commands
                .send(crate::media::BridgeCommand::Hangup)
                .await;
        }
        let mut desk_gone = false;
        loop {
            tokio::select! {
                _ = &mut report => break,
                changed = end_now.changed(), if !hung_up => {
                    if changed.is_err() || *end_now.borrow() {
                        hung_up = true;
                        let _ = bridge.commands.send(crate::media::BridgeCommand::Hangup).await;
                    }
                }
                said = desk_says.recv(), if !desk_gone => match said {
                    Some(DeskOutput::AgentLost { .. }) => {
                        lost = true;
                        let _ = bridge.commands.send(crate::media::BridgeCommand::Hangup).await;
                    }
                    Some(DeskOutput::HangUp { .. }) => {
                        tracing::info!(call = %id, %agent, "the agent hung up the transferred call");
                        let _ = bridge.commands.send(crate::media::BridgeCommand::Hangup).await;
                    }
                    Some(DeskOutput::Disposition { code, .. }) => disposition = Some(code),
                    Some(_) => {}
                    None => desk_gone = true,
                },
            }
        }
        self.desk.call_ended(id);
        // The conversation is over: the robot releases the customer now, and the call record
        // waits for the agent's wrap-up.
        if disposition.is_none() && !lost {
            disposition = self.desk.take_disposition(id);
            if disposition.is_none() {
                return TransferResult::WrappingUp(self.wrap_up(id, agent, desk_says, guard));
            }
        } else if disposition.is_some() {
            self.desk.take_disposition(id);
        }
        TransferResult::Talked { agent, disposition }
    }
}

/// The dialer's preview side for the agent page.
#[derive(Debug, Clone)]
pub struct PreviewSource {
    control: DialerControl,
}

impl PreviewSource {
    /// Preview through `control`.
    pub fn new(control: DialerControl) -> PreviewSource {
        PreviewSource { control }
    }
}

impl crate::agents::service::PreviewDialer for PreviewSource {
    fn campaigns(&self) -> Vec<(callgate_common::ids::CampaignId, String)> {
        self.control
            .briefs()
            .borrow()
            .iter()
            .filter(|b| b.dial_mode == DialMode::Preview && b.running)
            .map(|b| (b.campaign, b.name.clone()))
            .collect()
    }

    fn next(
        &self,
        agent: AgentId,
        campaign: callgate_common::ids::CampaignId,
    ) -> BoxFuture<'static, Result<Option<crate::agents::service::PreviewCard>, String>> {
        let control = self.control.clone();
        Box::pin(async move {
            let brief = control
                .briefs()
                .borrow()
                .iter()
                .find(|b| b.campaign == campaign)
                .cloned();
            let shown = control
                .request_preview(agent, campaign)
                .await
                .map_err(|e| e.to_string())?;
            Ok(shown.map(|(_, c)| crate::agents::service::PreviewCard {
                campaign: campaign.0,
                pop: ScreenPop::new(
                    brief.as_ref().map_or("", |b| b.name.as_str()),
                    Some(&c.number),
                    &c.fields,
                    brief.as_ref().map_or("", |b| b.script.as_str()),
                ),
            }))
        })
    }

    fn dial(&self, agent: AgentId) -> BoxFuture<'static, Result<(), String>> {
        let control = self.control.clone();
        Box::pin(async move {
            control
                .dial_preview(agent)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}

/// Joins the desk and the running dialer: agent events become pacing inputs, and every
/// brief the dialer holds is installed on the desk. Runs until `shutdown` turns true.
pub fn connect_agents(
    desk: AgentDeskService,
    control: DialerControl,
    mut shutdown: watch::Receiver<bool>,
) {
    desk.set_preview(Arc::new(PreviewSource::new(control.clone())));
    let (views, mut events) = desk.agent_events();
    let mut briefs = control.briefs();
    tokio::spawn(async move {
        for v in views {
            let state = match v.state {
                "ready" => AgentState::Ready,
                "reserved" => AgentState::Reserved,
                "talking" => AgentState::Talking,
                "wrap_up" => AgentState::WrapUp {
                    until: UnixMillis(v.wrap_up_until_ms.unwrap_or(0)),
                },
                "logged_out" => AgentState::LoggedOut,
                _ => AgentState::Paused,
            };
            let _ = control.agent(AgentId(v.agent), state);
        }
        for b in briefs.borrow_and_update().iter() {
            desk.set_campaign(b);
        }
        loop {
            tokio::select! {
                event = events.recv() => {
                    let Some(event) = event else { return };
                    let state = match event.state {
                        WireState::Ready => AgentState::Ready,
                        WireState::Reserved => AgentState::Reserved,
                        WireState::Talking => AgentState::Talking,
                        WireState::WrapUp => AgentState::WrapUp {
                            until: desk
                                .view(event.agent)
                                .and_then(|v| v.wrap_up_until_ms)
                                .map_or(event.at, UnixMillis),
                        },
                        WireState::Paused { .. } => AgentState::Paused,
                        WireState::LoggedOut => AgentState::LoggedOut,
                    };
                    if control.agent(event.agent, state).is_err() {
                        return;
                    }
                }
                changed = briefs.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    for b in briefs.borrow_and_update().iter() {
                        desk.set_campaign(b);
                    }
                }
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    });
}
