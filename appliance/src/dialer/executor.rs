//! The campaign executor: a sans-IO core that turns the box's holdings (campaign briefs,
//! contact leases, pacing grants, do-not-call entries) and the agents' availability into
//! dial orders, one contact at a time, each checked by the compliance gate the moment before
//! it is handed out.
//!
//! Driving it: report what happens with `handle_*(now, ..)` (holdings, agents, attempt
//! progress), call [`CampaignExecutor::handle_timeout`] at [`CampaignExecutor::poll_timeout`],
//! and after every call drain [`CampaignExecutor::poll_output`]. The core reads no clock and
//! does no I/O; persisting what it decides (a contact's dial state before the INVITE leaves,
//! the attempt result before the call is released) is the driver's job.
//!
//! Rules it keeps:
//! - a contact leaves `Pending` once and never returns to it, so it is dialled at most once;
//!   retries are the coordinator's business (it leases the contact again);
//! - a contact whose lease has expired or was revoked is never dialled: the lease's undialled
//!   contacts are handed back ([`ExecutorOutput::Return`]);
//! - nothing is dialled without a running campaign brief and an unexpired pacing grant, and
//!   never more than the grant's concurrency or per-minute rate; an expired grant stops the
//!   campaign on this box, hands its undialled contacts back and says why in its status;
//! - right before each dial, `callgate_common::compliance::check_dial` (do-not-call with the
//!   latest deltas, the calling window in the contact's zone, per-number caps with this box's
//!   own attempts counted, the abandon budget for predictive dials) — a refused contact is
//!   handed back with the reason ([`ExecutorOutput::Refused`]);
//! - a campaign that asks for a recording-consent announcement never dials on a box that has
//!   none to play: it stops on this box, says why and hands its contacts back;
//! - while new calls are held ([`CampaignExecutor::handle_new_calls`], e.g. the recordings
//!   disk is nearly full) no attempt starts: contacts stay pending (nothing is handed back or
//!   marked failed), attempts in flight go on, and dialling resumes when the hold is lifted.

use callgate_common::compliance::{check_dial, AbandonTally, ComplianceError, DialFacts, DncEntry};
use callgate_common::ids::{AgentId, AttemptId, CampaignId, ContactId, LeaseId, TrunkId};
use callgate_common::time::UnixMillis;
use callgate_common::wire::{
    CallOutcome, CampaignBrief, ContactLease, DialMode, DncDelta, LeasedContact, PacingGrant,
};
use callgate_pacing::{
    AbandonBudget, AgentState, AttemptEvent, GrantLimits, PacingConfig, PredictivePacer,
    TrunkLimits,
};
use std::collections::{BTreeMap, HashMap, VecDeque};

use super::DialerError;

#[cfg(test)]
mod tests;

/// How long the per-minute limit looks back.
const MINUTE_MS: i64 = 60_000;
/// After no trunk had room for an order, how long a campaign orders nothing (unless an
/// attempt ends first), so that a full trunk group is not hammered.
pub const NO_TRUNK_BACKOFF_MS: i64 = 500;

/// Where a leased contact stands. It only ever moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DialState {
    /// Not dialled yet.
    Pending,
    /// Offered to a preview agent (kept in memory only: after a restart it is pending again,
    /// which is safe because it was not dialled).
    Previewing(AgentId),
    /// An attempt was started.
    Dialling,
    /// Its attempt ended and the result is recorded.
    Done,
    /// The compliance gate refused it; handed back with the reason.
    Refused,
    /// Handed back undialled (lease expired or revoked, campaign stopped, grant expired).
    Returned,
}

impl DialState {
    /// The name stored in `dialer_contacts.state`.
    pub fn as_str(self) -> &'static str {
        match self {
            DialState::Pending | DialState::Previewing(_) => "pending",
            DialState::Dialling => "dialling",
            DialState::Done => "done",
            DialState::Refused => "refused",
            DialState::Returned => "returned",
        }
    }

    /// Parses a stored state name.
    pub fn parse(s: &str) -> Option<DialState> {
        Some(match s {
            "pending" => DialState::Pending,
            "dialling" => DialState::Dialling,
            "done" => DialState::Done,
            "refused" => DialState::Refused,
            "returned" => DialState::Returned,
            _ => return None,
        })
    }
}

/// A leased contact as held, with its dial state.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldContact {
    /// The contact as leased.
    pub contact: LeasedContact,
    /// Where it stands.
    pub state: DialState,
    /// When this box started dialling it, if it did.
    pub started_at: Option<UnixMillis>,
}

/// A lease as held.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldLease {
    /// The lease.
    pub lease: LeaseId,
    /// Its campaign.
    pub campaign: CampaignId,
    /// When the coordinator issued it.
    pub issued_at: UnixMillis,
    /// After this instant none of its contacts may be dialled.
    pub expires_at: UnixMillis,
    /// The coordinator's reason, once revoked.
    pub revoked: Option<String>,
    /// Whether what was left of it has been handed back.
    pub closed: bool,
    /// Its contacts in dial order.
    pub contacts: Vec<HeldContact>,
}

impl HeldLease {
    /// A freshly received lease: every contact pending.
    pub fn from_lease(lease: &ContactLease) -> HeldLease {
        HeldLease {
            lease: lease.lease,
            campaign: lease.campaign,
            issued_at: lease.issued_at,
            expires_at: lease.expires_at,
            revoked: None,
            closed: false,
            contacts: lease
                .contacts
                .iter()
                .map(|c| HeldContact {
                    contact: c.clone(),
                    state: DialState::Pending,
                    started_at: None,
                })
                .collect(),
        }
    }
}

/// Everything the box holds, as loaded from its store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Holdings {
    /// Campaign briefs (newest version of each).
    pub campaigns: Vec<CampaignBrief>,
    /// The grant in force per campaign.
    pub grants: Vec<PacingGrant>,
    /// Leases, with their contacts' states.
    pub leases: Vec<HeldLease>,
    /// Do-not-call entries received as deltas, per E.164 number.
    pub dnc: Vec<(String, DncEntry)>,
    /// Calls answered by a person: campaign, when, whether abandoned.
    pub live_answers: Vec<(CampaignId, UnixMillis, bool)>,
}

/// How the executor is set up.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// The trunks calls go out on, in order, with their capacity (for the predictive pacer).
    pub trunks: Vec<(TrunkId, TrunkLimits)>,
    /// Tuning of the predictive pacer.
    pub pacing: PacingConfig,
    /// Mixed into minted attempt ids (e.g. the process start time) so that ids stay unique
    /// across restarts.
    pub seed: u64,
    /// Why no new attempt may start from the outset (see
    /// [`CampaignExecutor::handle_new_calls`]), e.g. the recordings disk read as full.
    pub new_calls_held: Option<String>,
    /// Whether this box has a recording-consent announcement to play: a campaign whose
    /// brief asks for one does not dial without it (its contacts are handed back).
    pub consent_prompt: bool,
}

/// One attempt to place now.
#[derive(Debug, Clone, PartialEq)]
pub struct DialOrder {
    /// The attempt, minted here.
    pub attempt: AttemptId,
    /// The campaign.
    pub campaign: CampaignId,
    /// The lease the contact is held under.
    pub lease: LeaseId,
    /// The contact and its number.
    pub contact: LeasedContact,
    /// Caller id to present.
    pub caller_id: String,
    /// The campaign's dial mode.
    pub mode: DialMode,
    /// The agent who asked for it (preview).
    pub agent: Option<AgentId>,
    /// The INVITE must not leave at or after this instant (the earlier of lease and grant
    /// expiry); the driver checks it once more right before sending.
    pub not_after: UnixMillis,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecutorOutput {
    /// Place this attempt: persist the contact as dialling, then send the INVITE.
    Dial(Box<DialOrder>),
    /// The compliance gate refused this contact: record the reason and hand it back.
    Refused {
        /// Its campaign.
        campaign: CampaignId,
        /// Its lease.
        lease: LeaseId,
        /// The contact.
        contact: ContactId,
        /// Why, as the rule that refused says it.
        reason: String,
    },
    /// Hand these undialled contacts back to the coordinator (`Uplink::LeaseReturn`).
    Return {
        /// The lease.
        lease: LeaseId,
        /// The contacts.
        contacts: Vec<ContactId>,
        /// Why.
        reason: String,
        /// Whether the whole lease is over (expired, revoked, campaign stopped) rather than
        /// one contact not sent.
        closes_lease: bool,
    },
}

/// What happened to an attempt, as the driver reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptUpdate {
    /// The far end rings.
    Ringing,
    /// Answered, by a machine or (as far as the box can tell) by a person.
    Answered {
        /// Answering-machine detection said machine.
        machine: bool,
    },
    /// The answered call was bridged to an agent.
    Connected,
    /// The attempt is over; its result is recorded.
    Ended {
        /// How it ended.
        outcome: CallOutcome,
    },
}

/// Whether and why a campaign dials on this box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CampaignRun {
    /// Dialling within its grant.
    Dialling,
    /// Dialling, in a reduced way, for the reason given (e.g. abandon budget spent:
    /// progressive instead of predictive).
    Limited(String),
    /// Not dialling for now, for the reason given (no grant yet, no contacts left...).
    Waiting(String),
    /// Stopped on this box for the reason given; its undialled contacts were handed back.
    Stopped(String),
}

/// One campaign's state as the box's status page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialerStatus {
    /// The campaign.
    pub campaign: CampaignId,
    /// Its name (empty until its brief arrives).
    pub name: String,
    /// Its dial mode, once known.
    pub mode: Option<DialMode>,
    /// Whether it dials, and why not.
    pub run: CampaignRun,
    /// Attempts in flight.
    pub in_flight: u32,
    /// Contacts not dialled yet under valid leases.
    pub pending: u32,
    /// Attempts started on this box.
    pub dialled: u32,
    /// Contacts the compliance gate refused.
    pub refused: u32,
    /// Contacts handed back undialled.
    pub returned: u32,
    /// When its grant expires.
    pub grant_expires_at: Option<UnixMillis>,
    /// Live-answered and abandoned calls inside the profile's window.
    pub tally: AbandonTally,
}

#[derive(Debug)]
struct Campaign {
    brief: Option<CampaignBrief>,
    grant: Option<PacingGrant>,
    /// Start instants of attempts in the last minute.
    starts: VecDeque<i64>,
    /// Live answers (instant, abandoned) inside the abandon window.
    live: VecDeque<(i64, bool)>,
    /// Abandons since the current grant arrived (the grant's budget is what is left).
    abandons_under_grant: u64,
    pacer: Option<PredictivePacer>,
    run: CampaignRun,
    in_flight: u32,
    dialled: u32,
    refused: u32,
    returned: u32,
    /// No trunk had room for the last order: nothing is ordered before this instant (or
    /// before an attempt ends and frees a channel).
    no_trunk_until: Option<UnixMillis>,
}

impl Campaign {
    fn new() -> Campaign {
        Campaign {
            brief: None,
            grant: None,
            starts: VecDeque::new(),
            live: VecDeque::new(),
            abandons_under_grant: 0,
            pacer: None,
            run: CampaignRun::Waiting("no campaign brief yet".into()),
            in_flight: 0,
            dialled: 0,
            refused: 0,
            returned: 0,
            no_trunk_until: None,
        }
    }

    fn tally(&self) -> AbandonTally {
        AbandonTally {
            live_answered: self.live.len() as u64,
            abandoned: self.live.iter().filter(|(_, a)| *a).count() as u64,
        }
    }
}

#[derive(Debug)]
struct Lease {
    campaign: CampaignId,
    expires_at: UnixMillis,
    revoked: Option<String>,
    closed: bool,
    contacts: Vec<(LeasedContact, DialState)>,
}

#[derive(Debug)]
struct Flight {
    campaign: CampaignId,
    lease: LeaseId,
    contact: ContactId,
    /// Needs an agent when answered (progressive, predictive, preview).
    for_agent: bool,
    connected: bool,
    ended: bool,
}

/// The sans-IO campaign executor. See the module documentation.
#[derive(Debug)]
pub struct CampaignExecutor {
    config: ExecutorConfig,
    campaigns: BTreeMap<CampaignId, Campaign>,
    leases: BTreeMap<LeaseId, Lease>,
    dnc: HashMap<String, Vec<DncEntry>>,
    /// This box's own attempts per E.164 number (for the per-number caps).
    local_attempts: HashMap<String, Vec<UnixMillis>>,
    agents: BTreeMap<AgentId, AgentState>,
    flights: HashMap<AttemptId, Flight>,
    outputs: VecDeque<ExecutorOutput>,
    minted: u64,
    now: UnixMillis,
    /// Why no new attempt may start on this box, while that holds.
    new_calls_held: Option<String>,
}

impl CampaignExecutor {
    /// An executor holding `holdings` (as loaded after a start or restart). Contacts already
    /// dialling or done are never dialled again.
    pub fn new(config: ExecutorConfig, holdings: Holdings, now: UnixMillis) -> CampaignExecutor {
        let mut ex = CampaignExecutor {
            campaigns: BTreeMap::new(),
            leases: BTreeMap::new(),
            dnc: HashMap::new(),
            local_attempts: HashMap::new(),
            agents: BTreeMap::new(),
            flights: HashMap::new(),
            outputs: VecDeque::new(),
            minted: 0,
            now,
            new_calls_held: config.new_calls_held.clone(),
            config,
        };
        for (number, entry) in holdings.dnc {
            ex.dnc.entry(number).or_default().push(entry);
        }
        for brief in holdings.campaigns {
            ex.set_brief(brief);
        }
        for grant in holdings.grants {
            ex.set_grant(grant);
        }
        for (campaign, at, abandoned) in holdings.live_answers {
            ex.campaign(campaign).live.push_back((at.0, abandoned));
        }
        for lease in holdings.leases {
            ex.add_lease(lease);
        }
        ex.step(now);
        ex
    }

    fn campaign(&mut self, id: CampaignId) -> &mut Campaign {
        self.campaigns.entry(id).or_insert_with(Campaign::new)
    }

    fn set_brief(&mut self, brief: CampaignBrief) {
        let trunks = self.config.trunks.clone();
        let pacing = self.config.pacing;
        let c = self.campaign(brief.campaign);
        if c.brief.as_ref().is_some_and(|b| b.version >= brief.version) {
            return;
        }
        if brief.dial_mode == DialMode::Predictive {
            let budget = AbandonBudget {
                cap: f64::from(brief.profile.abandon.cap_permille) / 1000.0,
                window_ms: brief.profile.abandon.window_ms,
            };
            match c.pacer.as_mut() {
                Some(p) => {
                    let _ = p.set_budget(budget);
                }
                None => {
                    if let Ok(mut p) =
                        PredictivePacer::new(pacing, budget, GrantLimits::unlimited())
                    {
                        for (t, limits) in trunks {
                            p.set_trunk(t, limits);
                        }
                        c.pacer = Some(p);
                    }
                }
            }
        } else {
            c.pacer = None;
        }
        c.brief = Some(brief);
    }

    fn set_grant(&mut self, grant: PacingGrant) {
        let c = self.campaign(grant.campaign);
        if c.grant != Some(grant) {
            c.abandons_under_grant = 0;
        }
        if let Some(p) = c.pacer.as_mut() {
            p.set_grant(GrantLimits {
                max_concurrent: grant.max_concurrent,
                max_per_minute: grant.max_attempts_per_minute,
                expires_at: grant.expires_at,
            });
        }
        c.grant = Some(grant);
    }

    fn add_lease(&mut self, held: HeldLease) {
        if self.leases.contains_key(&held.lease) {
            return;
        }
        self.campaign(held.campaign);
        for c in &held.contacts {
            if let Some(at) = c.started_at {
                self.local_attempts
                    .entry(c.contact.number.e164())
                    .or_default()
                    .push(at);
            }
        }
        let contacts = held
            .contacts
            .into_iter()
            .map(|c| {
                // A restart finds attempts the driver had started: they are settled by the
                // driver's recovery, never dialled again.
                let state = match c.state {
                    DialState::Previewing(_) => DialState::Pending,
                    s => s,
                };
                (c.contact, state)
            })
            .collect();
        self.leases.insert(
            held.lease,
            Lease {
                campaign: held.campaign,
                expires_at: held.expires_at,
                revoked: held.revoked,
                closed: held.closed,
                contacts,
            },
        );
    }

    /// A campaign brief arrived (an older version than the one held is ignored).
    pub fn handle_campaign(&mut self, now: UnixMillis, brief: CampaignBrief) {
        self.set_brief(brief);
        self.step(now);
    }

    /// A contact lease arrived (a lease already held is ignored: replays are harmless).
    pub fn handle_lease(&mut self, now: UnixMillis, lease: &ContactLease) {
        self.add_lease(HeldLease::from_lease(lease));
        self.step(now);
    }

    /// The coordinator took a lease back: none of its contacts is dialled from now on.
    pub fn handle_revoke(&mut self, now: UnixMillis, lease: LeaseId, reason: &str) {
        if let Some(l) = self.leases.get_mut(&lease) {
            if l.revoked.is_none() {
                l.revoked = Some(reason.to_owned());
            }
        }
        self.step(now);
    }

    /// A pacing grant arrived; it replaces the campaign's previous one.
    pub fn handle_grant(&mut self, now: UnixMillis, grant: PacingGrant) {
        self.set_grant(grant);
        self.step(now);
    }

    /// Do-not-call changes; they apply to the very next gate check.
    pub fn handle_dnc(&mut self, now: UnixMillis, delta: &DncDelta) {
        for number in &delta.cleared {
            self.dnc.remove(&number.e164());
        }
        for (number, entry) in &delta.added {
            let list = self.dnc.entry(number.e164()).or_default();
            if !list.contains(entry) {
                list.push(*entry);
            }
        }
        self.step(now);
    }

    /// Brings the executor up to date with holdings re-read from the store (after the link
    /// applied downlink messages): new briefs, leases, revocations and grants; the stored
    /// do-not-call list replaces the one held.
    pub fn handle_holdings(&mut self, now: UnixMillis, holdings: Holdings) {
        for brief in holdings.campaigns {
            self.set_brief(brief);
        }
        for grant in holdings.grants {
            self.set_grant(grant);
        }
        for lease in holdings.leases {
            match self.leases.get_mut(&lease.lease) {
                Some(held) => {
                    if held.revoked.is_none() {
                        held.revoked = lease.revoked;
                    }
                }
                None => self.add_lease(lease),
            }
        }
        self.dnc.clear();
        for (number, entry) in holdings.dnc {
            self.dnc.entry(number).or_default().push(entry);
        }
        self.step(now);
    }

    /// Holds every new attempt on this box for the reason given (`Some`), or lifts the hold
    /// (`None`). While held, contacts stay pending under their leases, each campaign's status
    /// says why it waits, and attempts already in flight carry on.
    pub fn handle_new_calls(&mut self, now: UnixMillis, held: Option<String>) {
        self.new_calls_held = held;
        self.step(now);
    }

    /// The trunks changed (an edit in the web UI): every predictive pacer takes the new
    /// limits at once; a removed trunk gets none, so no new attempt is planned on it.
    pub fn handle_trunks(&mut self, now: UnixMillis, trunks: Vec<(TrunkId, TrunkLimits)>) {
        let none = TrunkLimits {
            max_concurrent: 0,
            max_per_minute: 0,
        };
        for c in self.campaigns.values_mut() {
            let Some(pacer) = c.pacer.as_mut() else {
                continue;
            };
            for (old, _) in &self.config.trunks {
                if !trunks.iter().any(|(t, _)| t == old) {
                    pacer.set_trunk(old.clone(), none);
                }
            }
            for (t, limits) in &trunks {
                pacer.set_trunk(t.clone(), *limits);
            }
        }
        self.config.trunks = trunks;
        self.step(now);
    }

    /// An agent's availability changed (ready now, expected free at the end of wrap-up, on
    /// a call, paused, logged out). Agents serve every campaign that needs them.
    pub fn handle_agent(&mut self, now: UnixMillis, agent: AgentId, state: AgentState) {
        if state == AgentState::LoggedOut {
            self.agents.remove(&agent);
        } else {
            self.agents.insert(agent, state);
        }
        for c in self.campaigns.values_mut() {
            if let Some(p) = c.pacer.as_mut() {
                let _ = p.handle_agent(now, agent, state);
            }
        }
        self.step(now);
    }

    /// Progress of an attempt this executor ordered. For attempts that wait for an agent,
    /// report the chosen agent's new state (reserved, talking) before `Connected`.
    pub fn handle_attempt(
        &mut self,
        now: UnixMillis,
        attempt: AttemptId,
        update: AttemptUpdate,
    ) -> Result<(), DialerError> {
        let flight = self
            .flights
            .get_mut(&attempt)
            .ok_or(DialerError::UnknownAttempt(attempt))?;
        if flight.ended {
            return Err(DialerError::UnknownAttempt(attempt));
        }
        let campaign_id = flight.campaign;
        let mut pacer_events = Vec::new();
        match update {
            AttemptUpdate::Ringing => pacer_events.push(AttemptEvent::Ringing),
            AttemptUpdate::Answered { machine } => pacer_events.push(if machine {
                AttemptEvent::AnsweredMachine
            } else {
                AttemptEvent::AnsweredHuman
            }),
            AttemptUpdate::Connected => {
                flight.connected = true;
                pacer_events.push(AttemptEvent::Connected);
            }
            AttemptUpdate::Ended { outcome } => {
                flight.ended = true;
                // A channel is free again.
                for c in self.campaigns.values_mut() {
                    c.no_trunk_until = None;
                }
                let (lease, contact) = (flight.lease, flight.contact);
                self.flights.remove(&attempt);
                self.set_contact_state(lease, contact, DialState::Done);
                pacer_events.extend(match outcome {
                    CallOutcome::Busy => vec![AttemptEvent::Busy],
                    CallOutcome::NoAnswer => vec![AttemptEvent::NoAnswer],
                    CallOutcome::Rejected | CallOutcome::Failed => vec![AttemptEvent::Failed],
                    CallOutcome::Abandoned => vec![AttemptEvent::Abandoned, AttemptEvent::Ended],
                    CallOutcome::AnsweredHuman | CallOutcome::AnsweredMachine => {
                        vec![AttemptEvent::Ended]
                    }
                });
                let c = self.campaign(campaign_id);
                c.in_flight = c.in_flight.saturating_sub(1);
                match outcome {
                    CallOutcome::AnsweredHuman => c.live.push_back((now.0, false)),
                    CallOutcome::Abandoned => {
                        c.live.push_back((now.0, true));
                        c.abandons_under_grant += 1;
                    }
                    _ => {}
                }
            }
        }
        if let Some(p) = self
            .campaigns
            .get_mut(&campaign_id)
            .and_then(|c| c.pacer.as_mut())
        {
            // The pacer refuses only events out of their order (e.g. a second answer); its
            // model then simply misses one event, which never affects what the gate allows.
            for e in pacer_events {
                let _ = p.handle_attempt(now, attempt, e);
            }
        }
        self.step(now);
        Ok(())
    }

    /// The driver did not send an ordered attempt (its lease or grant expired before the
    /// INVITE could leave, or no media port was free): the contact is handed back undialled.
    pub fn handle_not_dialled(
        &mut self,
        now: UnixMillis,
        attempt: AttemptId,
        reason: &str,
    ) -> Result<(), DialerError> {
        let flight = self
            .flights
            .remove(&attempt)
            .ok_or(DialerError::UnknownAttempt(attempt))?;
        self.set_contact_state(flight.lease, flight.contact, DialState::Returned);
        let c = self.campaign(flight.campaign);
        c.in_flight = c.in_flight.saturating_sub(1);
        c.dialled = c.dialled.saturating_sub(1);
        c.returned += 1;
        if let Some(p) = c.pacer.as_mut() {
            let _ = p.handle_attempt(now, attempt, AttemptEvent::Failed);
        }
        self.outputs.push_back(ExecutorOutput::Return {
            lease: flight.lease,
            contacts: vec![flight.contact],
            reason: reason.to_owned(),
            closes_lease: false,
        });
        self.step(now);
        Ok(())
    }

    /// No trunk had room for an ordered attempt (every trunk at its channel or calls-per-second
    /// limit, so nothing was sent): the contact is pending again and dialled later by this
    /// box — it was not dialled, so this is no re-dial. The campaign orders nothing for
    /// [`NO_TRUNK_BACKOFF_MS`] or until one of its attempts ends.
    pub fn handle_no_trunk(
        &mut self,
        now: UnixMillis,
        attempt: AttemptId,
    ) -> Result<(), DialerError> {
        let flight = self
            .flights
            .remove(&attempt)
            .ok_or(DialerError::UnknownAttempt(attempt))?;
        self.set_contact_state(flight.lease, flight.contact, DialState::Pending);
        // The attempt the order counted against the number's caps never happened.
        let number = self.leases.get(&flight.lease).and_then(|l| {
            l.contacts
                .iter()
                .find(|(c, _)| c.contact == flight.contact)
                .map(|(c, _)| c.number.e164())
        });
        if let Some(starts) = number.and_then(|n| self.local_attempts.get_mut(&n)) {
            starts.pop();
        }
        let c = self.campaign(flight.campaign);
        c.in_flight = c.in_flight.saturating_sub(1);
        c.dialled = c.dialled.saturating_sub(1);
        c.no_trunk_until = Some(UnixMillis(now.0 + NO_TRUNK_BACKOFF_MS));
        if let Some(p) = c.pacer.as_mut() {
            let _ = p.handle_attempt(now, attempt, AttemptEvent::Failed);
        }
        self.step(now);
        Ok(())
    }

    /// A preview agent asks for the next contact of `campaign`: the first pending contact
    /// that passes the gate now is reserved for the agent (and refused ones handed back).
    pub fn request_preview(
        &mut self,
        now: UnixMillis,
        agent: AgentId,
        campaign: CampaignId,
    ) -> Result<Option<(LeaseId, LeasedContact)>, DialerError> {
        self.advance(now);
        let mode = self
            .campaigns
            .get(&campaign)
            .and_then(|c| c.brief.as_ref())
            .map(|b| b.dial_mode)
            .ok_or(DialerError::UnknownCampaign(campaign))?;
        if mode != DialMode::Preview {
            return Err(DialerError::NotPreview(campaign));
        }
        if let Some((lease, contact)) = self.previewing(agent) {
            return Ok(Some((lease, contact)));
        }
        if !matches!(self.campaign_run(campaign, now), CampaignRun::Dialling) {
            return Ok(None);
        }
        match self.next_contact(now, campaign, false) {
            Some((lease, idx)) => {
                let l = self.leases.get_mut(&lease).expect("picked from the map");
                l.contacts[idx].1 = DialState::Previewing(agent);
                Ok(Some((lease, l.contacts[idx].0.clone())))
            }
            None => Ok(None),
        }
    }

    fn previewing(&self, agent: AgentId) -> Option<(LeaseId, LeasedContact)> {
        self.leases.iter().find_map(|(id, l)| {
            l.contacts
                .iter()
                .find(|(_, s)| *s == DialState::Previewing(agent))
                .map(|(c, _)| (*id, c.clone()))
        })
    }

    /// The preview agent dials the contact it was shown: the gate is checked again now.
    /// Returns the attempt (also handed out as [`ExecutorOutput::Dial`]).
    pub fn dial_preview(
        &mut self,
        now: UnixMillis,
        agent: AgentId,
    ) -> Result<AttemptId, DialerError> {
        self.advance(now);
        let (lease, idx) = self
            .leases
            .iter()
            .find_map(|(id, l)| {
                l.contacts
                    .iter()
                    .position(|(_, s)| *s == DialState::Previewing(agent))
                    .map(|i| (*id, i))
            })
            .ok_or(DialerError::NothingPreviewed(agent))?;
        let campaign = self.leases[&lease].campaign;
        self.leases.get_mut(&lease).expect("found").contacts[idx].1 = DialState::Pending;
        if !matches!(self.campaign_run(campaign, now), CampaignRun::Dialling)
            || self.capacity(campaign, now) == 0
        {
            return Err(DialerError::CampaignNotDialling(campaign));
        }
        match self.gate(now, campaign, lease, idx, false) {
            Ok(()) => Ok(self.order(now, campaign, lease, idx, Some(agent))),
            Err(Refusal::Keep(reason)) => Err(DialerError::Refused(reason)),
            Err(Refusal::HandBack(reason)) => {
                self.refuse(campaign, lease, idx, reason.clone());
                Err(DialerError::Refused(reason))
            }
        }
    }

    /// The clock moved on: expiries and the per-minute window.
    pub fn handle_timeout(&mut self, now: UnixMillis) {
        self.step(now);
    }

    /// When [`Self::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<UnixMillis> {
        let mut next: Option<i64> = None;
        let mut at = |t: i64| next = Some(next.map_or(t, |n: i64| n.min(t)));
        for l in self.leases.values().filter(|l| !l.closed) {
            at(l.expires_at.0);
        }
        for c in self.campaigns.values() {
            if let Some(g) = &c.grant {
                if g.expires_at.0 > self.now.0 {
                    at(g.expires_at.0);
                }
            }
            let at_rate_limit = c
                .grant
                .is_some_and(|g| c.starts.len() as u32 >= g.max_attempts_per_minute);
            if let (true, Some(first)) = (at_rate_limit, c.starts.front()) {
                at(first + MINUTE_MS);
            }
            if let Some(t) = c.pacer.as_ref().and_then(|p| p.poll_timeout()) {
                at(t.0);
            }
            if let Some(t) = c.no_trunk_until.filter(|t| t.0 > self.now.0) {
                at(t.0);
            }
        }
        next.map(|t| UnixMillis(t.max(self.now.0)))
    }

    /// The next thing for the driver to do.
    pub fn poll_output(&mut self) -> Option<ExecutorOutput> {
        self.outputs.pop_front()
    }

    /// Every campaign's status now.
    pub fn statuses(&self) -> Vec<DialerStatus> {
        self.campaigns
            .iter()
            .map(|(id, c)| DialerStatus {
                campaign: *id,
                name: c.brief.as_ref().map(|b| b.name.clone()).unwrap_or_default(),
                mode: c.brief.as_ref().map(|b| b.dial_mode),
                run: c.run.clone(),
                in_flight: c.in_flight,
                pending: self.pending(*id) as u32,
                dialled: c.dialled,
                refused: c.refused,
                returned: c.returned,
                grant_expires_at: c.grant.map(|g| g.expires_at),
                tally: c.tally(),
            })
            .collect()
    }

    /// One campaign's status.
    pub fn status(&self, campaign: CampaignId) -> Option<DialerStatus> {
        self.statuses().into_iter().find(|s| s.campaign == campaign)
    }

    fn pending(&self, campaign: CampaignId) -> usize {
        self.leases
            .values()
            .filter(|l| l.campaign == campaign && !l.closed)
            .flat_map(|l| l.contacts.iter())
            .filter(|(_, s)| *s == DialState::Pending)
            .count()
    }

    fn set_contact_state(&mut self, lease: LeaseId, contact: ContactId, state: DialState) {
        if let Some(l) = self.leases.get_mut(&lease) {
            if let Some(slot) = l.contacts.iter_mut().find(|(c, _)| c.contact == contact) {
                slot.1 = state;
            }
        }
    }

    fn advance(&mut self, now: UnixMillis) {
        self.now = UnixMillis(self.now.0.max(now.0));
        let now = self.now.0;
        for c in self.campaigns.values_mut() {
            while c.starts.front().is_some_and(|t| now - t >= MINUTE_MS) {
                c.starts.pop_front();
            }
            let window = c
                .brief
                .as_ref()
                .map_or(i64::MAX, |b| b.profile.abandon.window_ms);
            while c.live.front().is_some_and(|(t, _)| now - t >= window) {
                c.live.pop_front();
            }
        }
    }

    /// Hands back every pending contact of `lease` and closes it.
    fn close_lease(&mut self, lease: LeaseId, reason: String) {
        let Some(l) = self.leases.get_mut(&lease) else {
            return;
        };
        if l.closed {
            return;
        }
        l.closed = true;
        let mut back = Vec::new();
        for (c, s) in l.contacts.iter_mut() {
            if matches!(s, DialState::Pending | DialState::Previewing(_)) {
                *s = DialState::Returned;
                back.push(c.contact);
            }
        }
        let campaign = l.campaign;
        if !back.is_empty() {
            self.campaign(campaign).returned += back.len() as u32;
        }
        self.outputs.push_back(ExecutorOutput::Return {
            lease,
            contacts: back,
            reason,
            closes_lease: true,
        });
    }

    fn campaign_run(&self, id: CampaignId, now: UnixMillis) -> CampaignRun {
        let Some(c) = self.campaigns.get(&id) else {
            return CampaignRun::Waiting("unknown campaign".into());
        };
        let Some(brief) = &c.brief else {
            return CampaignRun::Waiting("no campaign brief yet".into());
        };
        if !brief.running {
            return CampaignRun::Stopped("the campaign is not running (paused or stopped)".into());
        }
        if brief.recording_consent_announcement && !self.config.consent_prompt {
            return CampaignRun::Stopped(
                "the campaign asks for a recording-consent announcement and this box has none \
                 (set recording.consent_prompt to a WAV file in the box's config)"
                    .into(),
            );
        }
        let Some(grant) = &c.grant else {
            return CampaignRun::Waiting("no pacing grant yet".into());
        };
        if now >= grant.expires_at {
            return CampaignRun::Stopped(format!(
                "pacing grant expired at {} ms (cloud unreachable or grant not renewed)",
                grant.expires_at.0
            ));
        }
        if let Some(why) = &self.new_calls_held {
            return CampaignRun::Waiting(format!("no new calls: {why}"));
        }
        if self.pending(id) == 0 {
            return CampaignRun::Waiting("no undialled contacts under a valid lease".into());
        }
        if brief.dial_mode == DialMode::Predictive && self.abandon_budget_spent(id) {
            return CampaignRun::Limited(
                "abandon budget spent: dialling progressively (one attempt per ready agent)".into(),
            );
        }
        CampaignRun::Dialling
    }

    fn abandon_budget_spent(&self, id: CampaignId) -> bool {
        let Some(c) = self.campaigns.get(&id) else {
            return true;
        };
        let (Some(brief), Some(grant)) = (&c.brief, &c.grant) else {
            return true;
        };
        // Attempts in flight beyond the ready agents may still be abandoned: they count
        // against the budget now, so the calls already placed cannot overrun it.
        c.abandons_under_grant + self.at_risk(id, 0) >= grant.abandon_budget
            || brief.profile.abandon.check(c.tally()).is_err()
    }

    /// Attempts of `campaign` waiting for an agent (plus `more` to be placed) beyond the
    /// ready agents: each may end abandoned.
    fn at_risk(&self, campaign: CampaignId, more: u64) -> u64 {
        let waiting = self
            .flights
            .values()
            .filter(|f| f.campaign == campaign && f.for_agent && !f.connected && !f.ended)
            .count() as u64;
        let ready = self
            .agents
            .values()
            .filter(|s| **s == AgentState::Ready)
            .count() as u64;
        (waiting + more).saturating_sub(ready)
    }

    /// Whether one more predictive attempt keeps the abandons possible within the grant's
    /// budget.
    fn one_more_within_budget(&self, id: CampaignId) -> bool {
        let Some(c) = self.campaigns.get(&id) else {
            return false;
        };
        let Some(grant) = &c.grant else { return false };
        let at_risk = self.at_risk(id, 1);
        at_risk == 0 || c.abandons_under_grant + at_risk <= grant.abandon_budget
    }

    /// Attempts the grant still allows now.
    fn capacity(&self, id: CampaignId, now: UnixMillis) -> u32 {
        let Some(c) = self.campaigns.get(&id) else {
            return 0;
        };
        let Some(g) = &c.grant else { return 0 };
        if now >= g.expires_at || c.no_trunk_until.is_some_and(|t| now < t) {
            return 0;
        }
        let concurrent = g.max_concurrent.saturating_sub(c.in_flight);
        let per_minute = g
            .max_attempts_per_minute
            .saturating_sub(c.starts.len() as u32);
        concurrent.min(per_minute)
    }

    /// Ready agents not yet spoken for by an attempt waiting for an agent.
    fn free_agents(&self) -> u32 {
        let ready = self
            .agents
            .values()
            .filter(|s| **s == AgentState::Ready)
            .count() as u32;
        let waiting = self
            .flights
            .values()
            .filter(|f| f.for_agent && !f.connected)
            .count() as u32;
        ready.saturating_sub(waiting)
    }

    fn step(&mut self, now: UnixMillis) {
        self.advance(now);
        let now = self.now;
        // Leases that ended: revoked or expired.
        let ended: Vec<(LeaseId, String)> = self
            .leases
            .iter()
            .filter(|(_, l)| !l.closed)
            .filter_map(|(id, l)| match &l.revoked {
                Some(r) => Some((*id, format!("lease revoked: {r}"))),
                None if now >= l.expires_at => {
                    Some((*id, format!("lease expired at {} ms", l.expires_at.0)))
                }
                None => None,
            })
            .collect();
        for (lease, reason) in ended {
            self.close_lease(lease, reason);
        }
        let ids: Vec<CampaignId> = self.campaigns.keys().copied().collect();
        for id in ids {
            let run = self.campaign_run(id, now);
            if let CampaignRun::Stopped(reason) = &run {
                let open: Vec<LeaseId> = self
                    .leases
                    .iter()
                    .filter(|(_, l)| l.campaign == id && !l.closed)
                    .map(|(lid, _)| *lid)
                    .collect();
                for lease in open {
                    self.close_lease(lease, format!("campaign stopped on this box: {reason}"));
                }
            }
            if matches!(run, CampaignRun::Dialling | CampaignRun::Limited(_)) {
                self.dial_campaign(id, now, matches!(run, CampaignRun::Limited(_)));
            }
            let run = self.campaign_run(id, now);
            self.campaign(id).run = run;
        }
    }

    fn dial_campaign(&mut self, id: CampaignId, now: UnixMillis, limited: bool) {
        let Some(mode) = self.campaigns[&id].brief.as_ref().map(|b| b.dial_mode) else {
            return;
        };
        let want = match (mode, limited) {
            (DialMode::Preview, _) => 0,
            (DialMode::Agentless, _) => u32::MAX,
            (DialMode::Progressive, _) | (DialMode::Predictive, true) => self.free_agents(),
            (DialMode::Predictive, false) => self
                .campaigns
                .get_mut(&id)
                .and_then(|c| c.pacer.as_mut())
                .map_or(0, |p| p.poll_dial(now).total()),
        };
        let may_abandon = mode == DialMode::Predictive && !limited;
        let mut started = 0;
        while started < want && self.capacity(id, now) > 0 {
            if may_abandon && !self.one_more_within_budget(id) {
                break;
            }
            let Some((lease, idx)) = self.next_contact(now, id, may_abandon) else {
                break;
            };
            self.order(now, id, lease, idx, None);
            started += 1;
        }
    }

    /// The first pending contact of `campaign` that passes the gate; contacts refused on the
    /// way are handed back. `None` when none is left or the gate holds every contact back.
    fn next_contact(
        &mut self,
        now: UnixMillis,
        campaign: CampaignId,
        may_abandon: bool,
    ) -> Option<(LeaseId, usize)> {
        loop {
            let (lease, idx) = self.leases.iter().find_map(|(id, l)| {
                if l.campaign != campaign || l.closed {
                    return None;
                }
                l.contacts
                    .iter()
                    .position(|(_, s)| *s == DialState::Pending)
                    .map(|i| (*id, i))
            })?;
            match self.gate(now, campaign, lease, idx, may_abandon) {
                Ok(()) => return Some((lease, idx)),
                Err(Refusal::Keep(_)) => return None,
                Err(Refusal::HandBack(reason)) => self.refuse(campaign, lease, idx, reason),
            }
        }
    }

    fn refuse(&mut self, campaign: CampaignId, lease: LeaseId, idx: usize, reason: String) {
        let l = self.leases.get_mut(&lease).expect("refused from the map");
        l.contacts[idx].1 = DialState::Refused;
        let contact = l.contacts[idx].0.contact;
        self.campaign(campaign).refused += 1;
        self.outputs.push_back(ExecutorOutput::Refused {
            campaign,
            lease,
            contact,
            reason,
        });
    }

    /// The compliance gate, the moment before a dial.
    fn gate(
        &self,
        now: UnixMillis,
        campaign: CampaignId,
        lease: LeaseId,
        idx: usize,
        may_abandon: bool,
    ) -> Result<(), Refusal> {
        let l = &self.leases[&lease];
        if l.closed || l.revoked.is_some() || now >= l.expires_at {
            return Err(Refusal::Keep("lease no longer valid".into()));
        }
        let c = &self.campaigns[&campaign];
        let Some(brief) = &c.brief else {
            return Err(Refusal::Keep("no campaign brief".into()));
        };
        match &c.grant {
            Some(g) if now < g.expires_at => {
                if c.in_flight >= g.max_concurrent {
                    return Err(Refusal::Keep("grant concurrency reached".into()));
                }
                if c.starts.len() as u32 >= g.max_attempts_per_minute {
                    return Err(Refusal::Keep("grant per-minute rate reached".into()));
                }
                if may_abandon && c.abandons_under_grant >= g.abandon_budget {
                    return Err(Refusal::Keep("grant abandon budget spent".into()));
                }
            }
            _ => return Err(Refusal::Keep("no valid pacing grant".into())),
        }
        let contact = &l.contacts[idx].0;
        let number = contact.number.e164();
        let mut dnc = contact.dnc.clone();
        if let Some(extra) = self.dnc.get(&number) {
            dnc.extend(extra.iter().copied());
        }
        let mut earlier = contact.recent_attempts.clone();
        if let Some(local) = self.local_attempts.get(&number) {
            earlier.extend(local.iter().copied());
        }
        let facts = DialFacts {
            campaign,
            dnc: &dnc,
            zones: &contact.time_zones,
            earlier_attempts: &earlier,
            abandon: c.tally(),
            may_abandon,
        };
        match check_dial(&brief.profile, &brief.window, &facts, now) {
            Ok(()) => Ok(()),
            // The budget is the campaign's, not the contact's: keep the contact.
            Err(e @ ComplianceError::AbandonBudgetSpent { .. }) => {
                Err(Refusal::Keep(e.to_string()))
            }
            Err(e) => Err(Refusal::HandBack(format!("refused at dial: {e}"))),
        }
    }

    fn order(
        &mut self,
        now: UnixMillis,
        campaign: CampaignId,
        lease: LeaseId,
        idx: usize,
        agent: Option<AgentId>,
    ) -> AttemptId {
        self.minted += 1;
        let attempt = AttemptId(uuid::Uuid::from_u64_pair(
            now.0 as u64,
            self.config.seed ^ self.minted,
        ));
        let first_trunk = self.config.trunks.first().map(|(t, _)| t.clone());
        let l = self.leases.get_mut(&lease).expect("ordered from the map");
        l.contacts[idx].1 = DialState::Dialling;
        let contact = l.contacts[idx].0.clone();
        let lease_expires = l.expires_at;
        self.local_attempts
            .entry(contact.number.e164())
            .or_default()
            .push(now);
        let c = self.campaigns.get_mut(&campaign).expect("campaign held");
        let brief = c.brief.as_ref().expect("gated on a brief");
        let mode = brief.dial_mode;
        let caller_id = brief.caller_id.clone();
        let grant_expires = c.grant.map_or(now, |g| g.expires_at);
        c.in_flight += 1;
        c.dialled += 1;
        c.starts.push_back(now.0);
        if let (Some(p), Some(trunk)) = (c.pacer.as_mut(), first_trunk) {
            let _ = p.handle_attempt(now, attempt, AttemptEvent::Started { trunk });
        }
        self.flights.insert(
            attempt,
            Flight {
                campaign,
                lease,
                contact: contact.contact,
                for_agent: mode != DialMode::Agentless,
                connected: false,
                ended: false,
            },
        );
        self.outputs
            .push_back(ExecutorOutput::Dial(Box::new(DialOrder {
                attempt,
                campaign,
                lease,
                contact,
                caller_id,
                mode,
                agent,
                not_after: UnixMillis(lease_expires.0.min(grant_expires.0)),
            })));
        attempt
    }
}

/// Why the gate held a contact back.
enum Refusal {
    /// A limit of the campaign or the lease (concurrency, rate, budget): the contact stays
    /// pending and may be dialled later.
    Keep(String),
    /// A rule about the contact (do-not-call, window, caps): it is handed back.
    HandBack(String),
}
