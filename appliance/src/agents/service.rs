//! The tokio driver around [`AgentDesk`]: it owns the desk's timer, writes every agent event
//! to the durable outbox and every disposition to the store in the order the desk produced
//! them, hands call decisions to the call side over a channel, reloads the roster and the
//! routing policy when the sync link stores new versions, and tells the agent page when
//! anything changed.
//!
//! The lead starts it from `server.rs` with [`AgentDeskService::start`] and gives the
//! returned receiver of [`DeskOutput`]s (connect, safe harbour, queue position, overflow,
//! phone legs) to the dialer/inbound driver, which calls back [`AgentDeskService::offer`],
//! [`AgentDeskService::enqueue_inbound`], [`AgentDeskService::call_bridged`],
//! [`AgentDeskService::call_ended`] and the phone-leg methods.
//!
//! Must not: touch SIP or media; decide anything the desk decides.

use super::desk::{
    AgentDesk, AgentView, DeskOutput, DeskSettings, InboundCall, OfferDecision, OfferedCall,
    PacingCounts,
};
use super::script::ScreenPop;
use super::{roster, AgentsError};
use crate::sync::outbox_store::UplinkOutbox;
use callgate_common::ids::{AgentGroupId, AgentId, CallId, CampaignId};
use callgate_common::time::UnixMillis;
use callgate_common::wire::{AgentEvent, CampaignBrief, Uplink};
use futures_util::future::BoxFuture;
use serde::Serialize;
use sqlx::SqlitePool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify, RwLock};

/// The outbox as the sync service shares it (replaced in place after a store failure).
pub type SharedOutbox = Arc<RwLock<Arc<UplinkOutbox>>>;

/// A contact shown to a preview agent before it dials (masked number only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreviewCard {
    /// The campaign.
    pub campaign: u64,
    /// What the agent sees: campaign name, customer, masked number, fields, script.
    pub pop: ScreenPop,
}

/// The dialer's preview side, as the agent page uses it (the dialer plugs it in with
/// [`AgentDeskService::set_preview`]).
pub trait PreviewDialer: Send + Sync + 'static {
    /// The preview campaigns the box holds now: id and name.
    fn campaigns(&self) -> Vec<(CampaignId, String)>;
    /// The next contact of `campaign`, reserved for `agent`; `None` when none is left.
    fn next(
        &self,
        agent: AgentId,
        campaign: CampaignId,
    ) -> BoxFuture<'static, Result<Option<PreviewCard>, String>>;
    /// Dials the contact `agent` has on screen.
    fn dial(&self, agent: AgentId) -> BoxFuture<'static, Result<(), String>>;
}

/// How often the stored roster/policy versions are checked for a change.
const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// A batch of desk outputs, written in order.
struct Batch {
    id: u64,
    outputs: Vec<DeskOutput>,
}

struct Inner {
    desk: Mutex<(AgentDesk, u64)>,
    journal: mpsc::UnboundedSender<Batch>,
    written: watch::Receiver<u64>,
    calls: mpsc::UnboundedSender<DeskOutput>,
    changed: watch::Sender<u64>,
    timer: Notify,
    pool: SqlitePool,
    /// Who hears every agent event (the dialer's pacing), in order.
    subscribers: Mutex<Vec<mpsc::UnboundedSender<AgentEvent>>>,
    /// Dispositions until the call side (the dialer, the agents' lines) takes them for the
    /// call record.
    dispositions: Mutex<HashMap<CallId, String>>,
    /// The dialer's preview side, once it runs.
    preview: std::sync::OnceLock<Arc<dyn PreviewDialer>>,
    /// The transfer hook for inbound callers' robot scripts, once the dialer runs.
    transfer: std::sync::OnceLock<Arc<dyn crate::robot_call::AgentTransfer>>,
    /// The contact each preview agent has on screen.
    cards: Mutex<HashMap<AgentId, PreviewCard>>,
    /// The outbox agent events go to (inbound call records too).
    outbox: Option<SharedOutbox>,
    /// Turns true when the desk stops.
    shutdown: watch::Receiver<bool>,
}

/// Dispositions kept for the dialer at most; beyond it (the dialer is not taking them) the
/// oldest are dropped — they stay in `agent_disposition` in the store.
const KEPT_DISPOSITIONS: usize = 10_000;

/// A handle to the running desk; clones share it.
#[derive(Clone)]
pub struct AgentDeskService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AgentDeskService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentDeskService")
    }
}

impl AgentDeskService {
    /// Loads the stored roster and policy into a desk and starts its timer and writer
    /// tasks (they end when `shutdown` turns true). Returns the handle and the channel of
    /// call decisions for the call side. `outbox` is `None` while the box is not enrolled:
    /// agent events are then only logged (no coordinator exists to send them to).
    pub async fn start(
        pool: SqlitePool,
        outbox: Option<SharedOutbox>,
        settings: DeskSettings,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(AgentDeskService, mpsc::UnboundedReceiver<DeskOutput>), AgentsError> {
        let mut desk = AgentDesk::new(settings);
        let now = UnixMillis::now();
        desk.set_roster(now, &roster::load_roster(&pool).await?);
        if let Some((_, policy)) = roster::load_routing_policy(&pool).await? {
            desk.set_policy(policy);
        }
        resume_wrap_ups(&mut desk, &pool, now).await;
        let versions = roster::versions(&pool).await?;
        let (journal, journal_rx) = mpsc::unbounded_channel();
        let (written_tx, written) = watch::channel(0);
        let (calls, calls_rx) = mpsc::unbounded_channel();
        let (changed, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            desk: Mutex::new((desk, 0)),
            journal,
            written,
            calls,
            changed,
            timer: Notify::new(),
            pool: pool.clone(),
            subscribers: Mutex::new(Vec::new()),
            dispositions: Mutex::new(HashMap::new()),
            preview: std::sync::OnceLock::new(),
            transfer: std::sync::OnceLock::new(),
            cards: Mutex::new(HashMap::new()),
            outbox: outbox.clone(),
            shutdown: shutdown.clone(),
        });
        let service = AgentDeskService { inner };
        tokio::spawn(write_journal(pool, outbox, journal_rx, written_tx));
        tokio::spawn(run_timer(service.clone(), versions, shutdown));
        Ok((service, calls_rx))
    }

    /// Runs `f` on the desk at the current time and dispatches what it produced; returns
    /// `f`'s result and the id of the batch holding the outputs.
    fn with_desk<R>(&self, f: impl FnOnce(&mut AgentDesk, UnixMillis) -> R) -> (R, u64) {
        let mut guard = self.inner.desk.lock().unwrap_or_else(|p| p.into_inner());
        let (desk, last_batch) = &mut *guard;
        let result = f(desk, UnixMillis::now());
        let outputs: Vec<DeskOutput> = std::iter::from_fn(|| desk.poll_output()).collect();
        if outputs.is_empty() {
            return (result, *last_batch);
        }
        *last_batch += 1;
        let id = *last_batch;
        for o in &outputs {
            match o {
                DeskOutput::Agent { event, .. } => {
                    let mut subscribers = self
                        .inner
                        .subscribers
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    subscribers.retain(|s| s.send(event.clone()).is_ok());
                }
                DeskOutput::Disposition { call, code, .. } => {
                    let mut kept = self
                        .inner
                        .dispositions
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    if kept.len() >= KEPT_DISPOSITIONS {
                        kept.clear();
                    }
                    kept.insert(*call, code.clone());
                    let _ = self.inner.calls.send(o.clone());
                }
                // The call side may not be listening (no dialer yet): nothing to route then.
                _ => {
                    let _ = self.inner.calls.send(o.clone());
                }
            }
        }
        // The writer only stops with the runtime.
        let _ = self.inner.journal.send(Batch { id, outputs });
        drop(guard);
        self.inner.changed.send_modify(|n| *n += 1);
        self.inner.timer.notify_one();
        (result, id)
    }

    /// Waits until the outputs of batch `id` are durable.
    async fn durable(&self, id: u64) {
        let mut w = self.inner.written.clone();
        // An error means the writer is gone (runtime shutting down): nothing to wait for.
        let _ = w.wait_for(|n| *n >= id).await;
    }

    /// Waits until everything the desk produced so far is durable.
    pub async fn flushed(&self) {
        let id = self.with_desk(|_, _| ()).1;
        self.durable(id).await;
    }

    /// Logs an agent in (see [`AgentDesk::log_in`]).
    pub async fn log_in(&self, agent: AgentId) -> Result<bool, AgentsError> {
        let (r, id) = self.with_desk(|d, now| d.log_in(now, agent));
        self.durable(id).await;
        r
    }

    /// Logs an agent out from the page.
    pub async fn log_out(&self, agent: AgentId, reason: &str) -> Result<(), AgentsError> {
        let (r, id) = self.with_desk(|d, now| d.log_out(now, agent, reason));
        self.durable(id).await;
        r
    }

    /// Pauses an agent with a reason.
    pub async fn pause(&self, agent: AgentId, reason: &str) -> Result<(), AgentsError> {
        let (r, id) = self.with_desk(|d, now| d.pause(now, agent, reason));
        self.durable(id).await;
        r
    }

    /// Makes a paused agent ready.
    pub async fn ready(&self, agent: AgentId) -> Result<(), AgentsError> {
        let (r, id) = self.with_desk(|d, now| d.ready(now, agent));
        self.durable(id).await;
        r
    }

    /// Saves a disposition; returns once it and the agent's event are durable.
    pub async fn dispose(&self, agent: AgentId, code: &str) -> Result<(), AgentsError> {
        let (r, id) = self.with_desk(|d, now| d.dispose(now, agent, code));
        self.durable(id).await;
        r
    }

    /// The agent ends the call it talks on (see [`AgentDesk::hang_up`]).
    pub fn hang_up(&self, agent: AgentId) -> Result<(), AgentsError> {
        self.with_desk(|d, _| d.hang_up(agent)).0.map(|_| ())
    }

    /// Routes an answered outbound call (never waits on the disk).
    pub fn offer(&self, call: OfferedCall) -> Result<OfferDecision, AgentsError> {
        self.with_desk(|d, now| d.offer(now, call)).0
    }

    /// Routes an answered call the previewing `agent` dialled (see [`AgentDesk::offer_to`]).
    pub fn offer_to(
        &self,
        call: OfferedCall,
        agent: AgentId,
    ) -> Result<OfferDecision, AgentsError> {
        self.with_desk(|d, now| d.offer_to(now, call, agent)).0
    }

    /// Routes a call a robot script transfers to `group` (see [`AgentDesk::offer_to_group`]).
    pub fn offer_to_group(
        &self,
        call: OfferedCall,
        group: AgentGroupId,
    ) -> Result<OfferDecision, AgentsError> {
        self.with_desk(|d, now| d.offer_to_group(now, call, group))
            .0
    }

    /// Routes a call of no campaign a robot script transfers to `group` (see
    /// [`AgentDesk::offer_inbound_to_group`]).
    pub fn offer_inbound_to_group(
        &self,
        call: CallId,
        pop: ScreenPop,
        group: AgentGroupId,
    ) -> Result<OfferDecision, AgentsError> {
        self.with_desk(|d, now| d.offer_inbound_to_group(now, call, pop, group))
            .0
    }

    /// Plugs in the `transfer` hook robot scripts of inbound callers use (the dialer's desk
    /// transfer; once, later calls are ignored).
    pub fn set_transfer(&self, hook: Arc<dyn crate::robot_call::AgentTransfer>) {
        let _ = self.inner.transfer.set(hook);
    }

    /// The `transfer` hook for inbound callers' robot scripts, once plugged in.
    pub fn transfer(&self) -> Option<Arc<dyn crate::robot_call::AgentTransfer>> {
        self.inner.transfer.get().cloned()
    }

    /// Queues or connects an inbound call.
    pub fn enqueue_inbound(&self, call: InboundCall) -> Result<OfferDecision, AgentsError> {
        self.with_desk(|d, now| d.enqueue_inbound(now, call)).0
    }

    /// The call is bridged to its reserved agent.
    pub fn call_bridged(&self, call: CallId) -> bool {
        self.with_desk(|d, now| d.call_bridged(now, call)).0
    }

    /// The call ended.
    pub fn call_ended(&self, call: CallId) {
        self.with_desk(|d, now| d.call_ended(now, call));
    }

    /// The agent's nailed-up leg answered.
    pub fn phone_leg_up(&self, agent: AgentId) -> Result<(), AgentsError> {
        self.with_desk(|d, now| d.phone_leg_up(now, agent)).0
    }

    /// The agent's nailed-up leg failed or dropped.
    pub fn phone_leg_down(&self, agent: AgentId, reason: &str) {
        self.with_desk(|d, now| d.phone_leg_down(now, agent, reason));
    }

    /// Installs a campaign's wrap-up time and disposition codes.
    pub fn set_campaign(&self, brief: &CampaignBrief) {
        self.with_desk(|d, _| d.set_campaign(brief));
    }

    /// The group an inbound route names (by name or number), with its name.
    pub fn group_by_name(&self, name: &str) -> Option<(AgentGroupId, String)> {
        self.with_desk(|d, _| {
            d.group_by_name(name)
                .map(|g| (g, d.group_name(g).unwrap_or_default().to_string()))
        })
        .0
    }

    /// The counts for the pacing core.
    pub fn pacing_counts(&self) -> PacingCounts {
        self.with_desk(|d, _| d.pacing_counts()).0
    }

    /// What the agent page shows for `agent`.
    pub fn view(&self, agent: AgentId) -> Option<AgentView> {
        self.with_desk(|d, _| d.view(agent)).0
    }

    /// Plugs in the dialer's preview side (once; later calls are ignored).
    pub fn set_preview(&self, dialer: Arc<dyn PreviewDialer>) {
        let _ = self.inner.preview.set(dialer);
    }

    /// The preview campaigns an agent may ask contacts of (none without a dialer).
    pub fn preview_campaigns(&self) -> Vec<(CampaignId, String)> {
        self.inner
            .preview
            .get()
            .map(|p| p.campaigns())
            .unwrap_or_default()
    }

    /// The contact `agent` has on screen for preview.
    pub fn preview_card(&self, agent: AgentId) -> Option<PreviewCard> {
        self.inner
            .cards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&agent)
            .cloned()
    }

    fn preview_side(&self, agent: AgentId) -> Result<Arc<dyn PreviewDialer>, AgentsError> {
        let dialer = self
            .inner
            .preview
            .get()
            .cloned()
            .ok_or_else(|| AgentsError::Preview("the dialer is not running".into()))?;
        match self.view(agent).map(|v| v.state) {
            Some("ready") => Ok(dialer),
            Some(_) => Err(AgentsError::Preview(
                "be ready (not paused, not on a call) to preview a contact".into(),
            )),
            None => Err(AgentsError::UnknownAgent(agent)),
        }
    }

    /// Shows `agent` the next contact of the preview `campaign` (reserved for it).
    pub async fn preview_next(
        &self,
        agent: AgentId,
        campaign: CampaignId,
    ) -> Result<(), AgentsError> {
        if self.preview_card(agent).is_some() {
            return Err(AgentsError::Preview(
                "dial the contact on screen first".into(),
            ));
        }
        let dialer = self.preview_side(agent)?;
        let card = dialer
            .next(agent, campaign)
            .await
            .map_err(AgentsError::Preview)?
            .ok_or_else(|| AgentsError::Preview("no contact left to preview".into()))?;
        self.inner
            .cards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(agent, card);
        self.inner.changed.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Dials the contact `agent` has on screen; its answer comes to this agent.
    pub async fn preview_dial(&self, agent: AgentId) -> Result<(), AgentsError> {
        if self.preview_card(agent).is_none() {
            return Err(AgentsError::Preview("no previewed contact to dial".into()));
        }
        let dialer = self.preview_side(agent)?;
        dialer.dial(agent).await.map_err(AgentsError::Preview)?;
        self.inner
            .cards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&agent);
        self.inner.changed.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Takes the disposition saved for a call, if any (the dialer or the agents' lines put it
    /// in the call record).
    pub fn take_disposition(&self, call: CallId) -> Option<String> {
        self.inner
            .dispositions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&call)
    }

    /// Resolves when the desk stops (the box is stopping).
    pub async fn stopped(&self) {
        let mut shutdown = self.inner.shutdown.clone();
        let _ = shutdown.wait_for(|stop| *stop).await;
    }

    /// The outbox agent events go to (`None` while the box has none).
    pub fn outbox(&self) -> Option<SharedOutbox> {
        self.inner.outbox.clone()
    }

    /// Waits for the disposition of `call`, which `agent` wraps up now: the code the agent
    /// saves, or `None` when the wrap-up ends without one (`DispositionWait` decides: the
    /// agent moving on, the wrap-up's end and its grace, the overall limit) or the desk stops.
    pub fn disposition_after(
        &self,
        call: CallId,
        agent: AgentId,
    ) -> BoxFuture<'static, Option<String>> {
        use crate::dialer::wrap_up::{DispositionWait, WrapUpEnd};
        let desk = self.clone();
        Box::pin(async move {
            let max = crate::dialer::placement::WRAP_UP_WAIT_MAX;
            let mut wait = DispositionWait::new(UnixMillis::now(), max);
            let mut changes = desk.changes();
            loop {
                // Saved on the desk (under its lock, before the agent's view changes).
                match desk.take_disposition(call) {
                    Some(code) => wait.handle_saved(code),
                    None => wait.handle_agent(UnixMillis::now(), desk.holds(agent, call)),
                }
                if let Some(end) = wait.poll_end() {
                    if !matches!(end, WrapUpEnd::Saved(_)) {
                        tracing::info!(%call, %agent, end = end.label(), "the agent's wrap-up ended without a disposition");
                    }
                    return end.disposition();
                }
                let due = wait.poll_timeout().unwrap_or(UnixMillis::now());
                let sleep =
                    Duration::from_millis(due.millis_since(UnixMillis::now()).max(0) as u64);
                tokio::select! {
                    changed = changes.changed() => {
                        if changed.is_err() {
                            // The desk is gone: what it saved is all there will be.
                            return desk.take_disposition(call);
                        }
                    }
                    () = tokio::time::sleep(sleep) => wait.handle_timeout(UnixMillis::now()),
                }
            }
        })
    }

    /// Whether `agent` still holds `call` on the desk (in its wrap-up).
    pub fn holds(&self, agent: AgentId, call: CallId) -> crate::dialer::wrap_up::AgentHolds {
        use crate::dialer::wrap_up::AgentHolds;
        let held = self.view(agent).and_then(|v| {
            let c = v.call?;
            (c.call == call.to_string()).then_some((c.disposition, v.wrap_up_until_ms))
        });
        match held {
            None => AgentHolds::No,
            Some((saved, until)) => AgentHolds::Yes {
                saved,
                wrap_up_until: until.map(UnixMillis),
            },
        }
    }

    /// Every agent event from now on, in the desk's order (the dialer feeds its pacing with
    /// them), and the agents' current views to start from.
    pub fn agent_events(&self) -> (Vec<AgentView>, mpsc::UnboundedReceiver<AgentEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let views = self
            .with_desk(|d, _| {
                // Subscribed under the desk's lock: no event between the views and the
                // subscription is missed.
                self.inner
                    .subscribers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(tx);
                d.logged_in()
                    .into_iter()
                    .filter_map(|a| d.view(a))
                    .collect()
            })
            .0;
        (views, rx)
    }

    /// A receiver that changes whenever any agent's view may have changed.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    /// The store the desk reads its roster from (the agent page verifies logins there).
    pub fn pool(&self) -> &SqlitePool {
        &self.inner.pool
    }

    /// Reloads the roster and the policy from the store.
    pub async fn reload(&self) -> Result<(), AgentsError> {
        let r = roster::load_roster(&self.inner.pool).await?;
        let policy = roster::load_routing_policy(&self.inner.pool).await?;
        self.with_desk(|d, now| {
            d.set_roster(now, &r);
            if let Some((_, p)) = policy {
                d.set_policy(p);
            }
        });
        Ok(())
    }
}

/// Gives the desk the wrap-ups a previous run left (call records kept in `dialer_wrap_ups`
/// whose agent's wrap-up has not ended): each agent is back in its wrap-up at its next login
/// and may still save the call's code. A store error only costs that chance (logged).
async fn resume_wrap_ups(desk: &mut AgentDesk, pool: &SqlitePool, now: UnixMillis) {
    let kept = match crate::dialer::store::kept_records(pool).await {
        Ok(kept) => kept,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the wrap-ups the last run left; their agents start ready");
            return;
        }
    };
    for k in kept {
        let (Some(agent), Some(until)) = (k.record.agent, k.wrap_up_until) else {
            continue;
        };
        if until <= now {
            continue;
        }
        let r = &k.record;
        let pop = ScreenPop::new("", r.remote.as_ref(), &[], "");
        tracing::info!(call = %r.call, %agent, "the agent's wrap-up resumes at its next login");
        desk.resume_wrap_up(agent, r.call, r.campaign, pop, until);
    }
}

/// Wakes the desk at its deadlines and reloads the roster/policy when their stored
/// versions change.
async fn run_timer(
    service: AgentDeskService,
    mut versions: (u64, u64),
    mut shutdown: watch::Receiver<bool>,
) {
    let mut next_reload = tokio::time::Instant::now() + RELOAD_EVERY;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let deadline = service.with_desk(|d, _| d.poll_timeout()).0;
        let wake = match deadline {
            Some(at) => {
                let ms = at.millis_since(UnixMillis::now()).max(0) as u64;
                (tokio::time::Instant::now() + Duration::from_millis(ms)).min(next_reload)
            }
            None => next_reload,
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = service.inner.timer.notified() => {}
            _ = shutdown.changed() => return,
        }
        service.with_desk(|d, now| d.handle_timeout(now));
        if tokio::time::Instant::now() >= next_reload {
            next_reload = tokio::time::Instant::now() + RELOAD_EVERY;
            match roster::versions(&service.inner.pool).await {
                Ok(v) if v != versions => {
                    versions = v;
                    if let Err(e) = service.reload().await {
                        tracing::error!(error = %e, "reloading the agent roster failed");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reading the roster version failed"),
            }
        }
    }
}

/// Writes batches in order: agent events to the outbox, dispositions to the store. A
/// failed write is retried (the event is never dropped); `written` moves past a batch only
/// when all of it is durable.
async fn write_journal(
    pool: SqlitePool,
    outbox: Option<SharedOutbox>,
    mut batches: mpsc::UnboundedReceiver<Batch>,
    written: watch::Sender<u64>,
) {
    while let Some(batch) = batches.recv().await {
        for output in &batch.outputs {
            let mut delay = Duration::from_millis(50);
            loop {
                match write_one(&pool, outbox.as_ref(), output).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "agent journal write failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
        written.send_replace(batch.id);
    }
}

async fn write_one(
    pool: &SqlitePool,
    outbox: Option<&SharedOutbox>,
    output: &DeskOutput,
) -> Result<(), AgentsError> {
    match output {
        DeskOutput::Agent { event, reason } => {
            tracing::info!(agent = %event.agent, state = ?event.state, call = ?event.call, reason = reason.as_deref(), "agent state");
            if let Some(outbox) = outbox {
                let current = outbox.read().await.clone();
                current
                    .send(&Uplink::AgentEvent(event.clone()))
                    .await
                    .map_err(|e| AgentsError::Outbox(e.to_string()))?;
            }
        }
        DeskOutput::Disposition {
            call,
            agent,
            campaign,
            code,
            at,
        } => {
            // The write lock first (BEGIN IMMEDIATE), as every writer of the store.
            let mut tx = crate::sync::outbox_store::begin_write(pool).await?;
            sqlx::query(
                "INSERT INTO agent_disposition (call_id, agent_id, campaign_id, code, saved_at_ms) \
                 VALUES (?, ?, ?, ?, ?) ON CONFLICT(call_id) DO NOTHING",
            )
            .bind(call.to_string())
            .bind(agent.0 as i64)
            .bind(campaign.map(|c| c.0 as i64))
            .bind(code)
            .bind(at.0)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use callgate_common::ids::AgentGroupId;
    use callgate_common::wire::{AgentBrief, AgentGroupBrief, AgentRoster, Downlink};

    fn roster(version: u64, agents: &[u64]) -> Downlink {
        Downlink::AgentRoster(AgentRoster {
            version,
            groups: vec![AgentGroupBrief {
                group: AgentGroupId(1),
                name: "sales".into(),
            }],
            agents: agents
                .iter()
                .map(|a| AgentBrief {
                    agent: AgentId(*a),
                    name: format!("agent {a}"),
                    login: format!("a{a}"),
                    password_phc: crate::web::auth::dummy_hash().to_string(),
                    sip_username: format!("p{a}"),
                    skills: vec![],
                    groups: vec![AgentGroupId(1)],
                })
                .collect(),
        })
    }

    async fn apply(store: &Store, body: &Downlink) {
        let mut tx = store.pool().begin().await.unwrap();
        roster::apply_downlink(&mut tx, body).await.unwrap();
        tx.commit().await.unwrap();
    }

    #[tokio::test]
    async fn a_new_roster_from_the_link_reaches_the_running_desk_and_logs_out_removed_agents() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        apply(&store, &roster(1, &[1, 2])).await;
        let (_stop, stop_rx) = watch::channel(false);
        let settings = DeskSettings {
            nailed_up: false,
            ..DeskSettings::default()
        };
        let (desk, _calls) = AgentDeskService::start(store.pool().clone(), None, settings, stop_rx)
            .await
            .unwrap();
        desk.log_in(AgentId(2)).await.unwrap();
        assert_eq!(desk.pacing_counts().ready, 2 - 1);

        // A malformed roster is refused and a replayed old one ignored: agent 2 stays.
        let Downlink::AgentRoster(mut bad) = roster(3, &[1]) else {
            unreachable!()
        };
        bad.agents[0].password_phc = "not a hash".into();
        apply(&store, &Downlink::AgentRoster(bad)).await;
        apply(&store, &roster(1, &[1])).await;
        // Version 2 drops agent 2: the desk notices within its reload interval.
        apply(&store, &roster(2, &[1])).await;
        let start = std::time::Instant::now();
        while desk.view(AgentId(2)).is_some() {
            assert!(
                start.elapsed() < RELOAD_EVERY * 3,
                "the desk never picked up the new roster"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(desk.pacing_counts().ready, 0);
        assert!(desk.view(AgentId(1)).is_some());
        assert_eq!(roster::versions(store.pool()).await.unwrap().0, 2);
    }
}
