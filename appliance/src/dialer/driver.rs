//! The dialer's tokio driver: owns the executor core, the trunk router's event stream, the
//! media sockets of calls being set up and the placement tasks of answered calls.
//!
//! For every [`ExecutorOutput::Dial`]: bind an RTP port pair, commit the contact as
//! `dialling`, check once more that the lease and grant still have [`DIAL_GUARD`] left, then
//! send the INVITE through [`UdpTrunkRouter`] (trunk failover is the router's). Answered
//! calls go to the [`AnsweredCallPlacement`]; when it returns, the call record and attempt
//! result are committed to the outbox and only then is the call hung up and its media ports
//! freed. Unanswered attempts are committed the same way before their ports are freed.
//! Refused and returned contacts become `Uplink::LeaseReturn` with their reason.
//!
//! Stopping: [`DialerTask::stop`] stops the loop; attempts still in flight are settled as
//! interrupted by the next start ([`store::settle_interrupted`]), never dialled again.

use super::executor::{
    AttemptUpdate, CampaignExecutor, DialOrder, DialState, DialerStatus, ExecutorConfig,
    ExecutorOutput,
};
use super::placement::{AnsweredCall, AnsweredCallPlacement, Placement, WrapUp};
use super::store;
use super::DialerError;
use crate::media::{RtpLeg, RtpPortRange};
use crate::recording::{SqliteSegmentStore, ValidRecording};
use crate::robot_call::ScreenedAnswer;
use crate::sip::udp::UdpTrunkRouter;
use crate::sync::outbox_store::UplinkOutbox;
use callgate_common::ids::{AgentId, AttemptId, CallId, CampaignId, LeaseId, TrunkId};
use callgate_common::time::UnixMillis;
use callgate_common::wire::{
    AttemptResult, CallOutcome, CallRecord, CampaignBrief, Direction, LeasedContact,
};
use callgate_media::g711::Codec;
use callgate_media::sdp::{
    accept_answer, create_offer, Direction as MediaDirection, LocalMedia, SessionDescription,
};
use callgate_pacing::{AgentState, PacingConfig, TrunkLimits};
use callgate_sip::trunk::presentation::CallerId;
use callgate_sip::trunk::router::{AttemptId as SipAttempt, DialEvent};
use sqlx::SqlitePool;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch, RwLock};

/// The outbox as the sync service shares it (replaced in place after a store failure).
pub type SharedOutbox = Arc<RwLock<Arc<UplinkOutbox>>>;

/// An INVITE is not sent when its lease or grant has less than this left: the order is
/// handed back instead, so no INVITE can leave after an expiry however slow the commit.
pub const DIAL_GUARD: Duration = Duration::from_millis(200);

/// How the driver runs.
#[derive(Debug, Clone)]
pub struct DialerSettings {
    /// The address our SDP offers for media.
    pub media_ip: IpAddr,
    /// Where RTP port pairs come from.
    pub ports: Arc<RtpPortRange>,
    /// Unanswered attempts are cancelled after this long.
    pub ring_timeout: Duration,
    /// The trunks, in order, with their capacity (for the predictive pacer).
    pub trunks: Vec<(TrunkId, TrunkLimits)>,
    /// Recording of answered calls, when configured.
    pub recording: Option<ValidRecording>,
    /// Tuning of the predictive pacer.
    pub pacing: PacingConfig,
}

/// How long [`DialerTask::stop`] waits for calls in flight to end and be committed.
pub const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// How far back live answers are read for the abandon tally (the longest profile window).
const ABANDON_WINDOW_MS: i64 = 30 * 86_400_000;

#[derive(Debug)]
enum Command {
    Agent(AgentId, AgentState),
    Connected(AttemptId),
    Preview {
        agent: AgentId,
        campaign: CampaignId,
        reply: oneshot::Sender<Result<Option<(LeaseId, LeasedContact)>, DialerError>>,
    },
    DialPreview {
        agent: AgentId,
        reply: oneshot::Sender<Result<AttemptId, DialerError>>,
    },
    Trunks(Vec<(TrunkId, TrunkLimits)>),
}

/// Inputs to a running dialer from the agent side (agent states, preview requests, calls
/// bridged); clones share the dialer. Made before the dialer with [`DialerControl::channel`]
/// so that a placement can hold one.
#[derive(Debug, Clone)]
pub struct DialerControl {
    commands: mpsc::UnboundedSender<Command>,
    briefs: watch::Receiver<Vec<CampaignBrief>>,
}

/// The dialer's end of a [`DialerControl`], given to [`DialerTask::start_with_control`].
#[derive(Debug)]
pub struct ControlReceiver {
    commands: mpsc::UnboundedReceiver<Command>,
    briefs: watch::Sender<Vec<CampaignBrief>>,
    verdicts: Option<mpsc::UnboundedReceiver<ScreenedAnswer>>,
    new_calls: Option<watch::Receiver<Option<String>>>,
}

impl ControlReceiver {
    /// Why no new call may start (e.g. the recordings disk is nearly full), `None` while
    /// calls may start: the dialer starts no attempt while it holds, from its very first
    /// order on, and resumes when it clears; contacts stay pending meanwhile.
    pub fn with_new_calls(mut self, held: watch::Receiver<Option<String>>) -> Self {
        self.new_calls = Some(held);
        self
    }

    /// The answering-machine verdicts of a placement that screens calls
    /// ([`AnsweredCallPlacement::screens`]): the dialer reports each screened answer to its
    /// executor (and pacer) as a person's or a machine's when the verdict arrives.
    pub fn with_verdicts(mut self, verdicts: mpsc::UnboundedReceiver<ScreenedAnswer>) -> Self {
        self.verdicts = Some(verdicts);
        self
    }
}

impl DialerControl {
    /// A control and the receiver the dialer takes.
    pub fn channel() -> (DialerControl, ControlReceiver) {
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (briefs_tx, briefs) = watch::channel(Vec::new());
        (
            DialerControl { commands, briefs },
            ControlReceiver {
                commands: commands_rx,
                briefs: briefs_tx,
                verdicts: None,
                new_calls: None,
            },
        )
    }

    /// Reports an agent's availability (the agent desk calls this on every state change).
    pub fn agent(&self, agent: AgentId, state: AgentState) -> Result<(), DialerError> {
        self.commands
            .send(Command::Agent(agent, state))
            .map_err(|_| DialerError::Stopped)
    }

    /// An answered attempt was bridged to an agent: it no longer waits for one.
    pub fn connected(&self, attempt: AttemptId) -> Result<(), DialerError> {
        self.commands
            .send(Command::Connected(attempt))
            .map_err(|_| DialerError::Stopped)
    }

    /// The trunks were edited (web UI): the pacer plans with these limits from now on.
    pub fn set_trunks(&self, trunks: Vec<(TrunkId, TrunkLimits)>) -> Result<(), DialerError> {
        self.commands
            .send(Command::Trunks(trunks))
            .map_err(|_| DialerError::Stopped)
    }

    /// The campaign briefs the dialer holds, updated whenever its holdings are re-read.
    pub fn briefs(&self) -> watch::Receiver<Vec<CampaignBrief>> {
        self.briefs.clone()
    }

    /// A preview agent asks for the next contact of `campaign`.
    pub async fn request_preview(
        &self,
        agent: AgentId,
        campaign: CampaignId,
    ) -> Result<Option<(LeaseId, LeasedContact)>, DialerError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Preview {
                agent,
                campaign,
                reply,
            })
            .map_err(|_| DialerError::Stopped)?;
        rx.await.map_err(|_| DialerError::Stopped)?
    }

    /// The preview agent dials the contact it was shown.
    pub async fn dial_preview(&self, agent: AgentId) -> Result<AttemptId, DialerError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::DialPreview { agent, reply })
            .map_err(|_| DialerError::Stopped)?;
        rx.await.map_err(|_| DialerError::Stopped)?
    }
}

/// The running dialer.
#[derive(Debug)]
pub struct DialerTask {
    control: DialerControl,
    trunks: crate::sip::udp::TrunkControl,
    status: watch::Receiver<Vec<DialerStatus>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl DialerTask {
    /// Settles attempts a previous run left in flight, loads the holdings and starts dialling.
    pub async fn start(
        settings: DialerSettings,
        pool: SqlitePool,
        outbox: SharedOutbox,
        router: UdpTrunkRouter,
        placement: Arc<dyn AnsweredCallPlacement>,
    ) -> Result<DialerTask, DialerError> {
        let (control, receiver) = DialerControl::channel();
        Self::start_with_control(
            settings,
            pool,
            outbox,
            router,
            placement,
            (control, receiver),
        )
        .await
    }

    /// [`DialerTask::start`] with a control made beforehand (the placement holds a clone).
    pub async fn start_with_control(
        settings: DialerSettings,
        pool: SqlitePool,
        outbox: SharedOutbox,
        router: UdpTrunkRouter,
        placement: Arc<dyn AnsweredCallPlacement>,
        (control, receiver): (DialerControl, ControlReceiver),
    ) -> Result<DialerTask, DialerError> {
        let ControlReceiver {
            commands: commands_rx,
            briefs,
            verdicts,
            new_calls,
        } = receiver;
        let now = UnixMillis::now();
        let current = outbox.read().await.clone();
        let settled = store::settle_interrupted(&pool, &current, now).await?;
        if settled > 0 {
            tracing::warn!(
                settled,
                "attempts interrupted by the last stop were settled"
            );
        }
        let (records, running) =
            store::settle_wrap_ups(&pool, &current, now, super::wrap_up::is_waiting).await?;
        if records > 0 {
            tracing::warn!(
                records,
                "call records the last stop left waiting for a wrap-up were sent"
            );
        }
        // Wrap-ups that still run: the agent may still save a code (the desk puts the agent
        // back into the wrap-up at login); the record goes out with it or when it ends.
        let mut wrap_ups = Vec::new();
        for kept in running {
            let waiting = super::wrap_up::waiting_for(kept.record.call);
            let (pool, outbox) = (pool.clone(), outbox.clone());
            let task = tokio::spawn(async move {
                let _waiting = waiting;
                let call = kept.record.call;
                if let Err(e) = store::complete_wrap_up(&pool, &outbox, kept).await {
                    tracing::error!(%call, error = %e, "cannot send a call record left waiting for a wrap-up; the next start sends it");
                }
            });
            wrap_ups.push(task.abort_handle());
        }
        // Subscribed before reading, so no change between the two is missed.
        let changes = store::watch_changes();
        let holdings = store::load(&pool, now, ABANDON_WINDOW_MS).await?;
        briefs.send_replace(holdings.campaigns.clone());
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id());
        let executor = CampaignExecutor::new(
            ExecutorConfig {
                trunks: settings.trunks.clone(),
                pacing: settings.pacing,
                seed,
                new_calls_held: new_calls.as_ref().and_then(|h| h.borrow().clone()),
                consent_prompt: settings
                    .recording
                    .as_ref()
                    .is_some_and(|r| r.consent.is_some()),
            },
            holdings,
            now,
        );
        let (status_tx, status) = watch::channel(executor.statuses());
        let (stop, stop_rx) = watch::channel(false);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let segments = settings
            .recording
            .as_ref()
            .map(|_| SqliteSegmentStore::new(pool.clone()));
        let trunks = router.control();
        let driver = Driver {
            settings,
            pool,
            outbox,
            router,
            placement,
            executor,
            calls: HashMap::new(),
            done_tx,
            status_tx,
            segments,
            changes,
            briefs,
            verdicts,
            new_calls,
            wrap_ups,
        };
        let task = tokio::spawn(driver.run(commands_rx, done_rx, stop_rx));
        Ok(DialerTask {
            control,
            trunks,
            status,
            stop,
            task,
        })
    }

    /// Every campaign's status, updated as it changes (for the status page).
    pub fn status(&self) -> watch::Receiver<Vec<DialerStatus>> {
        self.status.clone()
    }

    /// The running trunk router's trunks, to read their health and replace them (web UI).
    pub fn trunk_control(&self) -> crate::sip::udp::TrunkControl {
        self.trunks.clone()
    }

    /// Reports an agent's availability (the agent desk calls this on every state change).
    pub fn agent(&self, agent: AgentId, state: AgentState) -> Result<(), DialerError> {
        self.control.agent(agent, state)
    }
    /// A preview agent asks for the next contact of `campaign`.
    pub async fn request_preview(
        &self,
        agent: AgentId,
        campaign: CampaignId,
    ) -> Result<Option<(LeaseId, LeasedContact)>, DialerError> {
        self.control.request_preview(agent, campaign).await
    }

    /// The preview agent dials the contact it was shown.
    pub async fn dial_preview(&self, agent: AgentId) -> Result<AttemptId, DialerError> {
        self.control.dial_preview(agent).await
    }

    /// The control the agent side uses.
    pub fn control(&self) -> DialerControl {
        self.control.clone()
    }

    /// Stops dialling: no new attempt starts (orders not yet sent stay pending in the store),
    /// calls in flight are ended (cancelled, or their placement told to finish) and
    /// committed; after [`DRAIN_GRACE`] the calls still up are committed as they stand and
    /// the loop ends. Call records waiting for an agent's wrap-up are sent then, with the
    /// disposition the desk saved so far.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Ends the loop at once, as a crash would: calls in flight are neither ended nor
    /// committed; the next start settles them ([`store::settle_interrupted`]).
    pub async fn abort(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// One placed attempt, from its INVITE to its last commit.
#[derive(Debug)]
struct Call {
    order: DialOrder,
    call: CallId,
    started_at: UnixMillis,
    offer: SessionDescription,
    /// The RTP/RTCP sockets until the answer hands them to the media leg.
    sockets: Option<(UdpSocket, UdpSocket)>,
    /// Duplicates of the media sockets, holding the ports until the call is committed.
    hold: Vec<std::net::UdpSocket>,
    progress_at: Option<UnixMillis>,
    answered_at: Option<UnixMillis>,
    trunk: Option<TrunkId>,
    far_end: Option<watch::Sender<bool>>,
    sip_ended: bool,
    committed: bool,
    /// Ended by the dialer stopping, not by the far end.
    cut_short: bool,
    /// Answered and being screened for a machine: the executor hears `Answered` with the
    /// screen's verdict.
    awaiting_verdict: bool,
}

struct Driver {
    settings: DialerSettings,
    pool: SqlitePool,
    outbox: SharedOutbox,
    router: UdpTrunkRouter,
    placement: Arc<dyn AnsweredCallPlacement>,
    executor: CampaignExecutor,
    calls: HashMap<SipAttempt, Call>,
    done_tx: mpsc::UnboundedSender<(SipAttempt, Result<Placement, DialerError>)>,
    status_tx: watch::Sender<Vec<DialerStatus>>,
    segments: Option<SqliteSegmentStore>,
    /// Wakes the loop when the sync link applied holdings.
    changes: watch::Receiver<u64>,
    /// The briefs held, for the agent desk.
    briefs: watch::Sender<Vec<CampaignBrief>>,
    /// Answering-machine verdicts of screened calls.
    verdicts: Option<mpsc::UnboundedReceiver<ScreenedAnswer>>,
    /// Why no new call may start, when that is watched.
    new_calls: Option<watch::Receiver<Option<String>>>,
    /// The tasks that send call records when their agents' wrap-ups end (ended at the stop:
    /// the records stay kept, and the next start completes them).
    wrap_ups: Vec<tokio::task::AbortHandle>,
}

/// Tells the executor (and its pacer) an attempt was answered, by a machine or not.
fn report_answer(
    executor: &mut CampaignExecutor,
    now: UnixMillis,
    attempt: AttemptId,
    machine: bool,
) {
    metrics::counter!("callgate_dialer_answers_total", "by" => if machine { "machine" } else { "person" })
        .increment(1);
    let _ = executor.handle_attempt(now, attempt, AttemptUpdate::Answered { machine });
}

/// The next verdict, or never when no screen reports any.
async fn next_verdict(
    verdicts: &mut Option<mpsc::UnboundedReceiver<ScreenedAnswer>>,
) -> Option<ScreenedAnswer> {
    match verdicts {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// The next change of the new-call hold, or never when none is watched (or its sender is
/// gone: the last word stands).
async fn next_hold(held: &mut Option<watch::Receiver<Option<String>>>) -> Option<String> {
    if let Some(r) = held {
        if r.changed().await.is_ok() {
            return r.borrow_and_update().clone();
        }
    }
    std::future::pending().await
}

/// The attempt outcome a final SIP status means.
pub fn outcome_of_status(status: u16) -> CallOutcome {
    match status {
        486 | 600 => CallOutcome::Busy,
        // 487: we cancelled at the ring timeout; 480/408: the far end gave up ringing.
        408 | 480 | 487 => CallOutcome::NoAnswer,
        500..=599 => CallOutcome::Failed,
        400..=699 => CallOutcome::Rejected,
        _ => CallOutcome::Failed,
    }
}

fn outcome_label(o: CallOutcome) -> &'static str {
    match o {
        CallOutcome::AnsweredHuman => "answered_human",
        CallOutcome::AnsweredMachine => "answered_machine",
        CallOutcome::Busy => "busy",
        CallOutcome::NoAnswer => "no_answer",
        CallOutcome::Rejected => "rejected",
        CallOutcome::Failed => "failed",
        CallOutcome::Abandoned => "abandoned",
    }
}

impl Driver {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut done: mpsc::UnboundedReceiver<(SipAttempt, Result<Placement, DialerError>)>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut draining: Option<tokio::time::Instant> = None;
        loop {
            while let Some(out) = self.executor.poll_output() {
                if draining.is_some() && matches!(out, ExecutorOutput::Dial(_)) {
                    // Not sent: the contact stays pending in the store for the next start.
                    continue;
                }
                self.on_output(out).await;
            }
            self.publish();
            if let Some(deadline) = draining {
                if self.calls.is_empty() {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    self.commit_remaining().await;
                    break;
                }
            }
            let mut wait = self
                .executor
                .poll_timeout()
                .map(|t| Duration::from_millis(t.millis_since(UnixMillis::now()).max(0) as u64))
                .unwrap_or(Duration::from_secs(5))
                .min(Duration::from_secs(5));
            if draining.is_some() {
                wait = wait.min(Duration::from_millis(100));
            }
            tokio::select! {
                changed = stop.changed(), if draining.is_none() => {
                    if changed.is_err() || *stop.borrow() {
                        draining = Some(tokio::time::Instant::now() + DRAIN_GRACE);
                        self.end_all_calls();
                    }
                }
                Ok(()) = self.changes.changed(), if draining.is_none() => {
                    let now = UnixMillis::now();
                    match store::load(&self.pool, now, ABANDON_WINDOW_MS).await {
                        Ok(h) => {
                            let briefs = h.campaigns.clone();
                            self.briefs.send_if_modified(|old| {
                                let changed = *old != briefs;
                                *old = briefs;
                                changed
                            });
                            self.executor.handle_holdings(now, h);
                        }
                        Err(e) => tracing::error!(error = %e, "cannot read the dialer's holdings"),
                    }
                }
                ev = self.router.next_event() => match ev {
                    Some(ev) => self.on_dial_event(ev).await,
                    None => {
                        tracing::error!("the SIP engine stopped; the dialer stops");
                        break;
                    }
                },
                Some((id, placed)) = done.recv() => self.on_placed(id, placed).await,
                Some(v) = next_verdict(&mut self.verdicts) => self.on_verdict(v),
                held = next_hold(&mut self.new_calls) => {
                    match &held {
                        Some(why) => tracing::warn!(reason = %why, "no new calls start"),
                        None => tracing::info!("new calls start again"),
                    }
                    self.executor.handle_new_calls(UnixMillis::now(), held);
                }
                Some(cmd) = commands.recv() => self.on_command(cmd),
                () = tokio::time::sleep(wait) => self.executor.handle_timeout(UnixMillis::now()),
            }
        }
        self.publish();
        if draining.is_some() {
            self.leave_wrap_ups().await;
        }
    }

    /// The dialer stops: call records still waiting for an agent's wrap-up stay kept (their
    /// tasks end, as they would with the process); the next start completes them — with the
    /// code the agent saves, or when the wrap-up has ended.
    async fn leave_wrap_ups(&mut self) {
        for task in self.wrap_ups.drain(..) {
            task.abort();
        }
        match store::kept_records(&self.pool).await {
            Ok(kept) if kept.is_empty() => {}
            Ok(kept) => tracing::info!(
                records = kept.len(),
                "call records wait for their agents' wrap-up as the dialer stops; the next start completes those left"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot count the call records waiting for a wrap-up"),
        }
    }

    /// The stop grace is over: calls the far end has not let go of yet (e.g. a CANCEL left
    /// unanswered) are committed as they stand — answered or failed — before the SIP engine
    /// and their media go away with the driver.
    async fn commit_remaining(&mut self) {
        let left: Vec<SipAttempt> = self
            .calls
            .iter()
            .filter(|(_, c)| !c.committed)
            .map(|(id, _)| *id)
            .collect();
        tracing::warn!(calls = left.len(), "calls still up after the stop grace");
        for sip in left {
            if let Some(mut c) = self.calls.remove(&sip) {
                let outcome = if c.answered_at.is_some() {
                    CallOutcome::AnsweredHuman
                } else {
                    CallOutcome::Failed
                };
                self.commit(&mut c, outcome, None, None).await;
                let _ = self.router.hang_up(sip);
            }
        }
    }

    /// The dialer is stopping: every call in flight is ended — answered ones by telling
    /// their placement to finish (the commit and BYE follow), the others cancelled.
    fn end_all_calls(&mut self) {
        tracing::info!(
            calls = self.calls.len(),
            "dialer stopping; ending calls in flight"
        );
        for (sip, c) in self.calls.iter_mut() {
            if c.committed {
                continue;
            }
            c.cut_short = true;
            match &c.far_end {
                Some(far) => {
                    let _ = far.send(true);
                }
                None => {
                    let _ = self.router.hang_up(*sip);
                }
            }
        }
    }

    fn publish(&self) {
        let statuses = self.executor.statuses();
        let in_flight: u32 = statuses.iter().map(|s| s.in_flight).sum();
        metrics::gauge!("callgate_dialer_attempts_in_flight").set(f64::from(in_flight));
        self.status_tx.send_if_modified(|old| {
            if *old == statuses {
                false
            } else {
                *old = statuses;
                true
            }
        });
    }

    fn on_command(&mut self, cmd: Command) {
        let now = UnixMillis::now();
        match cmd {
            Command::Agent(agent, state) => self.executor.handle_agent(now, agent, state),
            Command::Connected(attempt) => {
                // Unknown: the attempt ended meanwhile; nothing waits for an agent then.
                let _ = self
                    .executor
                    .handle_attempt(now, attempt, AttemptUpdate::Connected);
            }
            Command::Preview {
                agent,
                campaign,
                reply,
            } => {
                let _ = reply.send(self.executor.request_preview(now, agent, campaign));
            }
            Command::DialPreview { agent, reply } => {
                let _ = reply.send(self.executor.dial_preview(now, agent));
            }
            Command::Trunks(trunks) => {
                tracing::info!(
                    trunks = trunks.len(),
                    "the pacer uses the edited trunks' limits"
                );
                self.executor.handle_trunks(now, trunks);
            }
        }
    }

    async fn outbox(&self) -> Arc<UplinkOutbox> {
        self.outbox.read().await.clone()
    }

    async fn on_output(&mut self, out: ExecutorOutput) {
        match out {
            ExecutorOutput::Dial(order) => self.dial(*order).await,
            ExecutorOutput::Refused {
                campaign,
                lease,
                contact,
                reason,
            } => {
                tracing::info!(%campaign, %lease, %contact, %reason, "contact refused at the gate");
                metrics::counter!("callgate_dialer_refused_total").increment(1);
                let outbox = self.outbox().await;
                // A busy store is waited out: a refusal left unrecorded would leave the
                // contact unsettled until the lease ends.
                let recorded = retry_while_busy("a refused contact", || {
                    store::hand_back(
                        &self.pool,
                        &outbox,
                        lease,
                        vec![contact],
                        &reason,
                        DialState::Refused,
                        false,
                    )
                })
                .await;
                if let Err(e) = recorded {
                    tracing::error!(error = %e, %lease, %contact, "cannot record a refused contact");
                }
            }
            ExecutorOutput::Return {
                lease,
                contacts,
                reason,
                closes_lease,
            } => {
                tracing::info!(%lease, contacts = contacts.len(), %reason, "contacts handed back");
                metrics::counter!("callgate_dialer_returned_total")
                    .increment(contacts.len() as u64);
                let outbox = self.outbox().await;
                // A busy store is waited out (CI saw one 5-s busy timeout under load leave a
                // handed-back contact unsettled for good).
                let recorded = retry_while_busy("handed-back contacts", || {
                    store::hand_back(
                        &self.pool,
                        &outbox,
                        lease,
                        contacts.clone(),
                        &reason,
                        DialState::Returned,
                        closes_lease,
                    )
                })
                .await;
                if let Err(e) = recorded {
                    tracing::error!(error = %e, %lease, "cannot record handed-back contacts");
                }
            }
        }
    }

    fn not_dialled(&mut self, attempt: AttemptId, reason: &str) {
        tracing::warn!(%attempt, %reason, "attempt not sent");
        let _ = self
            .executor
            .handle_not_dialled(UnixMillis::now(), attempt, reason);
    }

    /// An attempt no trunk had room for: the contact goes back to pending in the store and
    /// the executor (dialled later, never settled as failed); its media ports are freed.
    async fn no_trunk(&mut self, c: Call, reason: &str) {
        let attempt = c.order.attempt;
        metrics::counter!("callgate_dialer_no_trunk_total").increment(1);
        tracing::debug!(%attempt, %reason, "no trunk had room; the contact stays pending");
        match store::release_dialling(&self.pool, c.order.lease, c.order.contact.contact, attempt)
            .await
        {
            Ok(()) => {
                let _ = self.executor.handle_no_trunk(UnixMillis::now(), attempt);
            }
            Err(e) => {
                // The store still says `dialling`: hand it back rather than dial it again.
                tracing::error!(%attempt, error = %e, "cannot put the contact back to pending");
                self.not_dialled(attempt, &format!("no trunk had room ({reason}), and {e}"));
            }
        }
    }

    fn too_late(order: &DialOrder) -> bool {
        UnixMillis::now().plus_millis(DIAL_GUARD.as_millis() as i64) >= order.not_after
    }

    async fn dial(&mut self, order: DialOrder) {
        let attempt = order.attempt;
        if Self::too_late(&order) {
            return self.not_dialled(
                attempt,
                "lease or grant expires before the INVITE could leave",
            );
        }
        // The campaign's caller ID is checked before anything is recorded: a malformed one
        // never reaches an INVITE. Empty means "no campaign number" (the trunk's fixed
        // number or `[sip] user`), never withheld; `anonymous` withholds it.
        let caller = match order.caller_id.as_str() {
            "" => None,
            text => match CallerId::parse(text) {
                Ok(c) => Some(c),
                Err(e) => return self.not_dialled(attempt, &e.to_string()),
            },
        };
        let (rtp, rtcp) = match self.settings.ports.bind_pair(self.settings.media_ip).await {
            Ok(pair) => pair,
            Err(e) => return self.not_dialled(attempt, &format!("no media for the call: {e}")),
        };
        let hold = match (dup(&rtp), dup(&rtcp)) {
            (Ok(a), Ok(b)) => vec![a, b],
            _ => Vec::new(),
        };
        let rtp_port = rtp.local_addr().map(|a| a.port()).unwrap_or(0);
        let started_at = UnixMillis::now();
        match store::mark_dialling(
            &self.pool,
            order.lease,
            order.contact.contact,
            attempt,
            started_at,
        )
        .await
        {
            Ok(()) => {}
            Err(DialerError::NotPending { lease, contact }) => {
                // The store says it was dialled or handed back already: never again.
                tracing::error!(
                    lease,
                    contact,
                    "contact not pending in the store; not dialled"
                );
                let _ = self.executor.handle_attempt(
                    started_at,
                    attempt,
                    AttemptUpdate::Ended {
                        outcome: CallOutcome::Failed,
                    },
                );
                return;
            }
            Err(e) => {
                return self.not_dialled(attempt, &format!("cannot record the attempt: {e}"));
            }
        }
        if Self::too_late(&order) {
            return self.not_dialled(
                attempt,
                "lease or grant expired while the attempt was recorded",
            );
        }
        let offer = create_offer(&LocalMedia {
            address: self.settings.media_ip,
            rtp_port,
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            telephone_event: true,
            ptime_ms: 20,
            direction: MediaDirection::SendRecv,
            session_id: u64::from(rtp_port) << 32 | (started_at.0 as u64 & 0xffff_ffff),
            session_version: 1,
            srtp: None,
        });
        let number = order.contact.number.e164();
        let sip = match self
            .router
            .dial_as(
                &number,
                caller,
                offer.to_string().into_bytes(),
                Some(self.settings.ring_timeout),
            )
            .await
        {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(error = %e, "the SIP engine refused the attempt");
                // Recorded as dialling: settle it as failed so it is never dialled again.
                let result = AttemptResult {
                    attempt,
                    call: None,
                    campaign: order.campaign,
                    contact: order.contact.contact,
                    lease: order.lease,
                    trunk: None,
                    started_at,
                    ended_at: UnixMillis::now(),
                    outcome: CallOutcome::Failed,
                    sip_status: None,
                    post_dial_delay_ms: None,
                };
                let outbox = self.outbox().await;
                if let Err(e) = store::record_attempt(&outbox, &result).await {
                    tracing::error!(error = %e, "cannot record a failed attempt");
                }
                let _ = self.executor.handle_attempt(
                    UnixMillis::now(),
                    attempt,
                    AttemptUpdate::Ended {
                        outcome: CallOutcome::Failed,
                    },
                );
                return;
            }
        };
        metrics::counter!("callgate_dialer_attempts_total", "campaign" => order.campaign.to_string())
            .increment(1);
        tracing::debug!(%attempt, %number, campaign = %order.campaign, "attempt sent");
        self.calls.insert(
            sip,
            Call {
                order,
                call: CallId::new_v7(),
                started_at,
                offer,
                sockets: Some((rtp, rtcp)),
                hold,
                progress_at: None,
                answered_at: None,
                trunk: None,
                far_end: None,
                sip_ended: false,
                committed: false,
                cut_short: false,
                awaiting_verdict: false,
            },
        );
    }

    async fn on_dial_event(&mut self, ev: DialEvent) {
        let now = UnixMillis::now();
        match ev {
            DialEvent::Progress { attempt, trunk, .. } => {
                if let Some(c) = self.calls.get_mut(&attempt) {
                    c.trunk = TrunkId::new(trunk).ok().or(c.trunk.take());
                    if c.progress_at.is_none() {
                        c.progress_at = Some(now);
                        let _ = self.executor.handle_attempt(
                            now,
                            c.order.attempt,
                            AttemptUpdate::Ringing,
                        );
                    }
                }
            }
            DialEvent::Answered {
                attempt,
                trunk,
                body,
            } => self.on_answered(attempt, trunk, body).await,
            DialEvent::Failed {
                attempt,
                status,
                reason,
                tried,
            } => {
                let Some(mut c) = self.calls.remove(&attempt) else {
                    return;
                };
                if tried.is_empty() && status == 503 && !c.cut_short {
                    // No trunk had room (channels or calls per second): nothing was sent.
                    return self.no_trunk(c, &reason).await;
                }
                c.trunk = tried
                    .last()
                    .and_then(|t| TrunkId::new(t.as_str()).ok())
                    .or(c.trunk.take());
                tracing::debug!(attempt = %c.order.attempt, status, %reason, "attempt failed");
                c.sip_ended = true;
                let outcome = if c.cut_short {
                    CallOutcome::Failed
                } else {
                    outcome_of_status(status)
                };
                self.commit(&mut c, outcome, Some(status), None).await;
                // The media ports are freed here, after the commit.
                drop(c);
            }
            DialEvent::Ended { attempt, .. } => {
                let remove = match self.calls.get_mut(&attempt) {
                    Some(c) => {
                        c.sip_ended = true;
                        if let Some(far) = &c.far_end {
                            let _ = far.send(true);
                        }
                        c.committed
                    }
                    None => false,
                };
                if remove {
                    self.calls.remove(&attempt);
                }
            }
            _ => {}
        }
    }

    async fn on_answered(&mut self, sip: SipAttempt, trunk: String, body: Vec<u8>) {
        let now = UnixMillis::now();
        let consent = match self.calls.get(&sip) {
            Some(c) => self.consent_for(c.order.campaign),
            None => return,
        };
        let Some(c) = self.calls.get_mut(&sip) else {
            return;
        };
        c.answered_at = Some(now);
        c.progress_at.get_or_insert(now);
        c.trunk = TrunkId::new(trunk).ok().or(c.trunk.take());
        let negotiated = std::str::from_utf8(&body)
            .map_err(|e| e.to_string())
            .and_then(|text| SessionDescription::parse(text).map_err(|e| e.to_string()))
            .and_then(|answer| accept_answer(&c.offer, &answer).map_err(|e| e.to_string()));
        let leg = match (negotiated, c.sockets.take()) {
            (Ok(audio), Some(sockets)) => RtpLeg::new(sockets, &audio)
                .map(|leg| (leg, audio.ptime_ms as usize * 8))
                .map_err(|e| e.to_string()),
            (Err(e), _) => Err(e),
            (Ok(_), None) => Err("media sockets already used".into()),
        };
        let (customer, frame_samples) = match leg {
            Ok(l) => l,
            Err(reason) => {
                report_answer(&mut self.executor, now, c.order.attempt, false);
                tracing::warn!(attempt = %c.order.attempt, %reason, "answered call without usable media");
                let mut c = self.calls.remove(&sip).expect("present");
                self.commit(&mut c, CallOutcome::Failed, None, None).await;
                let _ = self.router.hang_up(sip);
                c.committed = true;
                self.calls.insert(sip, c);
                return;
            }
        };
        let (far_tx, far_rx) = watch::channel(false);
        c.far_end = Some(far_tx);
        let recorder = match (&self.settings.recording, &self.segments) {
            (Some(settings), Some(segments)) => {
                super::placement::start_recorder(c.call, settings, segments.clone())
            }
            _ => None,
        };
        let call = AnsweredCall {
            call: c.call,
            attempt: c.order.attempt,
            campaign: c.order.campaign,
            mode: c.order.mode,
            contact: c.order.contact.clone(),
            agent: c.order.agent,
            customer,
            frame_samples,
            end_now: far_rx,
            recorder,
            robot_script: None,
            quality_log: Some(crate::media::LegQualityLog::new(self.pool.clone(), c.call)),
            consent,
        };
        // A screened call's answer is reported with the screen's verdict (`on_verdict`).
        c.awaiting_verdict = self.verdicts.is_some() && self.placement.screens(&call);
        if !c.awaiting_verdict {
            report_answer(&mut self.executor, now, c.order.attempt, false);
        }
        // Named for the technician's list of calls to listen to while the placement runs.
        let named = crate::call_tap::live().name(c.call, c.order.contact.number.masked());
        let placed = self.placement.place(call);
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let _named = named;
            let _ = done.send((sip, placed.await));
        });
    }

    /// The recording-consent announcement when `campaign`'s brief asks for it (the executor
    /// dials no such campaign on a box without one).
    fn consent_for(&self, campaign: CampaignId) -> Option<Arc<callgate_media::prompt::Prompt>> {
        let asks = self
            .briefs
            .borrow()
            .iter()
            .any(|b| b.campaign == campaign && b.recording_consent_announcement);
        asks.then(|| self.settings.recording.as_ref()?.consent.clone())
            .flatten()
    }

    /// A screened call's verdict: the executor (and its pacer) hear the answer now, as a
    /// person's or a machine's.
    fn on_verdict(&mut self, v: ScreenedAnswer) {
        let Some(c) = self
            .calls
            .values_mut()
            .find(|c| c.order.attempt == v.attempt && c.awaiting_verdict)
        else {
            return;
        };
        c.awaiting_verdict = false;
        tracing::debug!(attempt = %v.attempt, machine = v.machine(), waited_ms = v.waited_ms, "answer screened");
        report_answer(
            &mut self.executor,
            UnixMillis::now(),
            v.attempt,
            v.machine(),
        );
    }

    async fn on_placed(&mut self, sip: SipAttempt, placed: Result<Placement, DialerError>) {
        // The screen sends its verdict before the placement can end: take it first, so the
        // executor hears the answer before the end.
        while let Some(v) = self.verdicts.as_mut().and_then(|r| r.try_recv().ok()) {
            self.on_verdict(v);
        }
        let Some(mut c) = self.calls.remove(&sip) else {
            return;
        };
        if c.awaiting_verdict {
            // The placement ended without a verdict (its media failed): a person's answer.
            c.awaiting_verdict = false;
            report_answer(
                &mut self.executor,
                UnixMillis::now(),
                c.order.attempt,
                false,
            );
        }
        let placement = match placed {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, attempt = %c.order.attempt, "placement failed");
                Placement {
                    outcome: CallOutcome::AnsweredHuman,
                    agent: None,
                    disposition: None,
                    recording_segments: 0,
                    quality: None,
                    wrap_up: None,
                }
            }
        };
        let outcome = placement.outcome;
        let mut placement = placement;
        match placement.wrap_up.take() {
            // The agent is wrapping up: the attempt result (and the record, kept) now, the
            // record itself when the disposition comes; the call is released now.
            Some(wrap_up) => self.commit_in_wrap_up(&mut c, placement, wrap_up).await,
            None => self.commit(&mut c, outcome, None, Some(placement)).await,
        }
        // Only now: the BYE, and the media ports.
        if !c.sip_ended {
            let _ = self.router.hang_up(sip);
        }
        c.hold.clear();
        if !c.sip_ended {
            // Kept until the BYE's transaction ends (`DialEvent::Ended`).
            self.calls.insert(sip, c);
        }
    }

    /// Commits the attempt result with the call record kept beside it (durable), tells the
    /// executor the attempt is over, and leaves the record to a task that sends it when the
    /// agent's wrap-up gives the disposition (the placement's own stands when none comes).
    async fn commit_in_wrap_up(&mut self, c: &mut Call, placement: Placement, wrap_up: WrapUp) {
        let (record, result) = Self::record_of(c, placement.outcome, None, Some(&placement));
        let outbox = self.outbox().await;
        let waiting = super::wrap_up::waiting_for(record.call);
        let kept = store::KeptRecord {
            record,
            wrap_up_until: wrap_up.until,
        };
        let stored = retry_while_busy("the attempt's result", || {
            store::record_attempt_in_wrap_up(&outbox, &result, &kept)
        })
        .await;
        let record = kept.record;
        if let Err(e) = &stored {
            // The contact stays `dialling` in the store: the next start settles it.
            tracing::error!(error = %e, attempt = %c.order.attempt, "cannot commit the attempt's result");
        }
        c.committed = true;
        self.ended(c, result.outcome, result.ended_at);
        if stored.is_err() {
            return;
        }
        let (shared, pool) = (self.outbox.clone(), self.pool.clone());
        let WrapUp {
            agent, disposition, ..
        } = wrap_up;
        self.wrap_ups.retain(|t| !t.is_finished());
        let task = tokio::spawn(async move {
            let _waiting = waiting;
            let mut record = record;
            let mut saved = disposition.await;
            if saved.is_none() {
                // Saved through another desk meanwhile (the wrap-up resumed after a restart)?
                saved = store::saved_disposition(&pool, record.call)
                    .await
                    .ok()
                    .flatten();
            }
            tracing::info!(call = %record.call, %agent, disposition = ?saved, "the agent's wrap-up is over; the call record goes out");
            metrics::counter!("callgate_dialer_wrap_ups_total", "disposition" => if saved.is_some() { "saved" } else { "none" })
                .increment(1);
            if saved.is_some() {
                record.disposition = saved;
            }
            // The outbox as it is now (the box may have enrolled meanwhile).
            let outbox = shared.read().await.clone();
            let sent = retry_while_busy("the call record after wrap-up", || async {
                store::record_wrapped_up(&outbox, &record).await.map(|_| ())
            })
            .await;
            if let Err(e) = sent {
                // Kept in `dialer_wrap_ups`: the next start sends it.
                tracing::error!(error = %e, call = %record.call, "cannot commit the call record after wrap-up");
            }
        });
        self.wrap_ups.push(task.abort_handle());
    }

    /// The call record and attempt result of `c` ending now.
    fn record_of(
        c: &Call,
        outcome: CallOutcome,
        sip_status: Option<u16>,
        placement: Option<&Placement>,
    ) -> (CallRecord, AttemptResult) {
        let ended_at = UnixMillis::now();
        let post_dial_delay_ms = c
            .progress_at
            .map(|p| p.millis_since(c.started_at).max(0) as u32);
        let result = AttemptResult {
            attempt: c.order.attempt,
            call: Some(c.call),
            campaign: c.order.campaign,
            contact: c.order.contact.contact,
            lease: c.order.lease,
            trunk: c.trunk.clone(),
            started_at: c.started_at,
            ended_at,
            outcome,
            sip_status,
            post_dial_delay_ms,
        };
        let record = CallRecord {
            call: c.call,
            attempt: Some(c.order.attempt),
            campaign: Some(c.order.campaign),
            contact: Some(c.order.contact.contact),
            direction: Direction::Outbound,
            trunk: c.trunk.clone(),
            remote: Some(c.order.contact.number.clone()),
            agent: placement.as_ref().and_then(|p| p.agent),
            started_at: c.started_at,
            answered_at: c.answered_at,
            ended_at,
            outcome,
            sip_status,
            disposition: placement.as_ref().and_then(|p| p.disposition.clone()),
            recording_segments: placement.as_ref().map_or(0, |p| p.recording_segments),
            quality: placement.as_ref().and_then(|p| p.quality),
        };
        (record, result)
    }

    /// Commits the call record and the attempt result (in that order, the second marking the
    /// contact done), then tells the executor the attempt is over.
    async fn commit(
        &mut self,
        c: &mut Call,
        outcome: CallOutcome,
        sip_status: Option<u16>,
        placement: Option<Placement>,
    ) {
        let (record, result) = Self::record_of(c, outcome, sip_status, placement.as_ref());
        let ended_at = result.ended_at;
        let outbox = self.outbox().await;
        // Each step is its own transaction and is tried again on its own while the store is
        // busy, so a committed call record is never written twice and a busy moment under
        // load does not leave the contact unsettled until the next start.
        let stored = async {
            retry_while_busy("the call record", || {
                store::record_call(&outbox, &record, &result)
            })
            .await?;
            retry_while_busy("the attempt's result", || {
                store::record_attempt(&outbox, &result)
            })
            .await
        }
        .await;
        if let Err(e) = stored {
            // The contact stays `dialling` in the store: the next start settles it.
            tracing::error!(error = %e, attempt = %c.order.attempt, "cannot commit the attempt's result");
        }
        c.committed = true;
        self.ended(c, outcome, ended_at);
    }

    /// Tells the executor `c`'s attempt is over (its result committed).
    fn ended(&mut self, c: &Call, outcome: CallOutcome, ended_at: UnixMillis) {
        metrics::counter!("callgate_dialer_outcomes_total", "outcome" => outcome_label(outcome))
            .increment(1);
        let _ = self.executor.handle_attempt(
            ended_at,
            c.order.attempt,
            AttemptUpdate::Ended { outcome },
        );
    }
}

/// How long a result's commit is tried again while the store is busy.
const RESULT_BUSY_RETRY_FOR: Duration = Duration::from_secs(60);

/// Whether a dialer store error is a busy store (worth trying again), not a failure.
fn store_busy(e: &DialerError) -> bool {
    match e {
        DialerError::Store(e) | DialerError::Outbox(crate::sync::SyncError::Store(e)) => {
            crate::web::auth::is_busy(e)
        }
        _ => false,
    }
}

/// Runs `write` until it succeeds, fails for another reason than a busy store, or the store
/// stayed busy for [`RESULT_BUSY_RETRY_FOR`]; each retry is logged with `what`.
pub(crate) async fn retry_while_busy<F, Fut>(
    what: &'static str,
    mut write: F,
) -> Result<(), DialerError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), DialerError>>,
{
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        match write().await {
            Err(e) if store_busy(&e) && started.elapsed() + pause < RESULT_BUSY_RETRY_FOR => {
                tracing::warn!(error = %e, what, "store busy; committing it again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

/// A second handle on a socket, keeping its port bound while the first is in use elsewhere.
pub(crate) fn dup(socket: &UdpSocket) -> std::io::Result<std::net::UdpSocket> {
    use std::os::fd::AsFd;
    let owned = socket.as_fd().try_clone_to_owned()?;
    Ok(std::net::UdpSocket::from(owned))
}

/// The agent side the daemon gives the dialer (see [`super::dispatch`]).
#[derive(Debug)]
pub struct AgentSide {
    /// The running desk and the agents' lines.
    pub desk: crate::agents::service::AgentDeskService,
    /// The lines answered calls are bridged through.
    pub lines: crate::agents::lines::LinesHandle,
    /// The receiver of the desk's decisions about the dialer's calls (`AgentsSetup::dialer`).
    pub desk_outputs: mpsc::UnboundedReceiver<crate::agents::desk::DeskOutput>,
    /// The safe-harbour message.
    pub safe_harbour: super::placement::Announcement,
    /// Ends the glue between desk and dialer.
    pub shutdown: watch::Receiver<bool>,
}

/// The pacer's view of the trunks: each one's channels and attempts per minute.
pub fn trunk_limits(trunks: &[callgate_sip::trunk::Trunk]) -> Vec<(TrunkId, TrunkLimits)> {
    trunks
        .iter()
        .filter_map(|t| {
            TrunkId::new(t.name.as_str()).ok().map(|id| {
                (
                    id,
                    TrunkLimits {
                        max_concurrent: t.max_channels,
                        max_per_minute: t.max_cps.saturating_mul(60),
                    },
                )
            })
        })
        .collect()
}

/// Starts the SIP engine on `[sip]` and the dialer on it, as the daemon runs them. Without
/// an outbox from the sync link (box not enrolled yet) the dialer opens the outbox itself;
/// what it stores goes out once the link runs. Answered calls go through a
/// [`super::dispatch::CallDispatch`]: to the agents when `agents` is given, to `robot` for
/// agentless campaigns and robot routes when given, else to the `[dialer]` announcement.
/// While `new_calls` holds a reason (the recordings disk is nearly full) no attempt starts.
pub async fn start_from_config(
    config: &crate::config::ValidConfig,
    sip: &crate::sip::config::SipSettings,
    pool: &SqlitePool,
    outbox: Option<SharedOutbox>,
    agents: Option<AgentSide>,
    robot: Option<crate::robot_call::RobotPlacement>,
    new_calls: Option<watch::Receiver<Option<String>>>,
) -> Result<DialerTask, DialerError> {
    let outbox = match outbox {
        Some(o) => o,
        None => {
            let cfg = crate::sync::service::outbox_config(config.raw.sync.outbox_quota_mib);
            let ob = UplinkOutbox::open(pool.clone(), cfg).await?;
            Arc::new(RwLock::new(Arc::new(ob)))
        }
    };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    // Every `[sip]` listener (UDP, TCP, TLS) and each trunk on its transport.
    let router = UdpTrunkRouter::start_from_settings(sip, seed, false).await?;
    let (first, last) = config.dialer.ports;
    let settings = DialerSettings {
        media_ip: config.dialer.media_address.unwrap_or(sip.listen.ip()),
        ports: Arc::new(RtpPortRange::new(first, last)?),
        ring_timeout: config.dialer.ring_timeout,
        trunks: trunk_limits(&sip.trunks),
        recording: config.recording.clone(),
        pacing: PacingConfig::default(),
    };
    let announcement: Arc<dyn AnsweredCallPlacement> = Arc::new(dialer_announcement(config)?);
    let (control, mut receiver) = DialerControl::channel();
    if let Some(held) = new_calls {
        receiver = receiver.with_new_calls(held);
    }
    let mut dispatch = super::dispatch::CallDispatch::new(announcement).with_robot(
        robot
            .clone()
            .map(|r| Arc::new(r) as Arc<dyn AnsweredCallPlacement>),
    );
    let glue = match agents {
        Some(side) => {
            // Inbound calls bridged to agents are recorded as the dialer's own are.
            if let Some(recording) = &settings.recording {
                side.lines
                    .record_calls(recording.clone(), SqliteSegmentStore::new(pool.clone()));
            }
            let agents = super::dispatch::AgentPlacement::start(
                side.desk.clone(),
                side.lines,
                side.safe_harbour,
                control.clone(),
                side.desk_outputs,
            );
            // Robot scripts' `transfer` steps reach the agents through the same desk: the
            // campaigns' scripts and the inbound callers' overflow scripts.
            let transfer = Arc::new(super::dispatch::DeskTransfer::new(agents.clone()));
            if let Some(r) = &robot {
                r.set_transfer(Some(transfer.clone()));
            }
            side.desk.set_transfer(transfer);
            dispatch = dispatch.with_agents(agents);
            Some((side.desk, side.shutdown))
        }
        None => None,
    };
    let detection = config.dialer.machine_detection;
    tracing::info!(
        sip = %sip.listen,
        media = %settings.media_ip,
        trunks = settings.trunks.len(),
        placement = ?dispatch,
        machine_detection = ?detection,
        "SIP engine and campaign executor started"
    );
    let placement: Arc<dyn AnsweredCallPlacement> =
        if detection == super::dispatch::MachineDetection::Off {
            Arc::new(dispatch)
        } else {
            // Machines hear the campaign script's `on_machine` message when the robot runs,
            // else their call ends at once.
            let machine: Arc<dyn crate::robot_call::MachineAnswer> = match robot {
                Some(r) => Arc::new(r),
                None => Arc::new(crate::robot_call::EndMachineCalls),
            };
            let (verdict_tx, verdict_rx) = mpsc::unbounded_channel();
            receiver = receiver.with_verdicts(verdict_rx);
            Arc::new(super::dispatch::ScreenedDispatch::new(
                dispatch,
                detection,
                machine,
                crate::robot_call::ScreenSettings::default(),
                verdict_tx,
            ))
        };
    let task = DialerTask::start_with_control(
        settings,
        pool.clone(),
        outbox,
        router,
        placement,
        (control, receiver),
    )
    .await?;
    if let Some((desk, shutdown)) = glue {
        super::dispatch::connect_agents(desk, task.control(), shutdown);
    }
    Ok(task)
}

/// The `[dialer]` announcement: its WAV when configured, else a short tone sequence.
pub fn dialer_announcement(
    config: &crate::config::ValidConfig,
) -> Result<super::placement::Announcement, DialerError> {
    Ok(match &config.dialer.announcement {
        Some(path) => {
            super::placement::Announcement::from_wav_file(path, CallOutcome::AnsweredHuman)?
        }
        None => super::placement::Announcement::new(
            callgate_media::prompt::Prompt::tones(&[(440.0, 400, 200), (660.0, 400, 200)], 8_000),
            CallOutcome::AnsweredHuman,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_result_commit_is_tried_again_while_the_store_is_busy_and_other_errors_end_it() {
        let tries = AtomicU32::new(0);
        let stored = retry_while_busy("test", || {
            let n = tries.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 3 {
                    Err(DialerError::Outbox(crate::sync::SyncError::Store(
                        sqlx::Error::PoolTimedOut,
                    )))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert!(stored.is_ok(), "{stored:?}");
        assert_eq!(
            tries.load(Ordering::SeqCst),
            4,
            "three busy tries, then the commit"
        );

        let tries = AtomicU32::new(0);
        let stored = retry_while_busy("test", || {
            tries.fetch_add(1, Ordering::SeqCst);
            async { Err(DialerError::Store(sqlx::Error::RowNotFound)) }
        })
        .await;
        assert!(matches!(
            stored,
            Err(DialerError::Store(sqlx::Error::RowNotFound))
        ));
        assert_eq!(
            tries.load(Ordering::SeqCst),
            1,
            "a real failure is not retried"
        );
    }
}
