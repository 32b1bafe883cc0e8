//! The lease scheduler: one pass ([`Scheduler::tick`], time passed in) brings what every
//! enrolled appliance was sent in line with the database, through its durable downlink
//! outbox (`crate::sync::downlink`):
//!
//! 1. expired leases return their contacts; attempt results from the uplink are settled;
//! 2. a [`CampaignBrief`] for each campaign an appliance has a share of, again after every
//!    change (its version grows per appliance), and a last one with `running: false` when
//!    the share goes or the campaign is archived;
//! 3. leases of campaigns that stopped dialing for an appliance (paused, stopped, out of
//!    date range, share removed) are revoked, and every delivered one gets a
//!    `LeaseRevoked`;
//! 4. for online appliances: a [`PacingGrant`] per campaign (the appliance's trunk limits,
//!    [`super::limits`], split between the campaigns it dials), sent when it changes and
//!    refreshed before it expires (a box that loses the cloud stops when it expires), and
//!    the undialled leased contacts topped up to a target sized by the appliance's share
//!    of the campaign (`lease_pool * share / total shares`);
//! 5. every held lease not yet sent is packed (chunked under the payload limit) and sent.
//!
//! Every step is driven by database state (`sync_feed`, `contact_leases.sent_at`,
//! `revoke_sent_at`), so a crash between two steps is caught up on the next pass; a
//! message stored twice is harmless (newest version wins, same lease id). Coordinator
//! replicas may each run the scheduler: a pass works only while its replica holds the
//! leader lease ([`super::leader`]); the others' passes do nothing until it lapses.
//!
//! Must not: publish (the sync link does), or decide compliance itself
//! ([`super::lease_contacts_to_push`] does, through `callgate_common::compliance`).

use super::leader::LeaderLease;
use super::limits::{self, ApplianceLimits};
use super::push;
use super::LeaseError;
use crate::campaigns::{self, Campaign, CampaignState, DialMode as SpecDialMode};
use crate::compliance;
use crate::contacts::vault::NumberVault;
use crate::store::Store;
use crate::sync::downlink::DownlinkOutboxes;
use crate::sync::feed::{digest, FeedBook};
use crate::sync::{presence, SyncError};
use callgate_common::ids::{ApplianceId, CampaignId, LeaseId};
use callgate_common::time::UnixMillis;
use callgate_common::wire::{CampaignBrief, DialMode, Downlink, PacingGrant};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// `[sync.dialer]`: how the scheduler feeds the appliances' dialers.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DialerFeedConfig {
    /// Milliseconds between passes.
    pub tick_ms: u64,
    /// Undialled contacts kept leased per campaign, split between its appliances by share.
    pub lease_pool: u32,
    /// How long a lease holds its contacts.
    pub lease_ttl_secs: u64,
    /// How long a pacing grant is valid; refreshed when half of it is left.
    pub grant_ttl_secs: u64,
    /// Attempts in flight per appliance (its trunks), split between the campaigns it
    /// dials; an appliance's own limits (`appliance_limits`) take precedence.
    pub grant_max_concurrent: u32,
    /// Attempts started per minute per appliance, split the same way.
    pub grant_max_attempts_per_minute: u32,
    /// How long a replica's leadership of the scheduler lasts unless renewed by its next
    /// pass (many passes, so a slow pass does not hand the role over).
    pub leader_ttl_secs: u64,
    /// This replica's name in the leader lease; unset: the host's name, so a restarted
    /// coordinator takes its role straight back. Replicas on one host need distinct names.
    pub replica_id: Option<String>,
}

impl Default for DialerFeedConfig {
    fn default() -> Self {
        DialerFeedConfig {
            tick_ms: 1_000,
            lease_pool: 200,
            lease_ttl_secs: 900,
            grant_ttl_secs: 60,
            grant_max_concurrent: 30,
            grant_max_attempts_per_minute: 120,
            leader_ttl_secs: 30,
            replica_id: None,
        }
    }
}

/// Why a pass failed (the next pass starts over from the database).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FeedError {
    /// Leasing, a campaign, a profile or a number failed.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// The downlink outbox refused a message.
    #[error(transparent)]
    Outbox(#[from] SyncError),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

impl From<campaigns::CampaignError> for FeedError {
    fn from(e: campaigns::CampaignError) -> Self {
        FeedError::Lease(e.into())
    }
}

impl From<compliance::PolicyError> for FeedError {
    fn from(e: compliance::PolicyError) -> Self {
        FeedError::Lease(e.into())
    }
}

/// What one pass stored in the outboxes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    pub briefs: u64,
    pub grants: u64,
    /// Lease messages (one per envelope).
    pub leases: u64,
    pub contacts_leased: u64,
    pub revocations: u64,
    pub attempts_settled: u64,
    /// Call tasks whose time came, put at the head of their campaign's queue.
    pub call_tasks_enrolled: u64,
    /// Whether this replica led the pass (a follower's pass does nothing).
    pub led: bool,
}

/// The scheduler over one store and the downlink outboxes.
#[derive(Debug, Clone)]
pub struct Scheduler {
    store: Store,
    vault: NumberVault,
    outboxes: Arc<DownlinkOutboxes>,
    config: DialerFeedConfig,
    leader: LeaderLease,
}

/// An appliance's share of a campaign, with the campaign.
struct Assignment<'a> {
    app: ApplianceId,
    campaign: &'a Campaign,
    share: u32,
    total: u32,
}

fn dial_mode(m: SpecDialMode) -> DialMode {
    match m {
        SpecDialMode::Preview => DialMode::Preview,
        SpecDialMode::Progressive => DialMode::Progressive,
        SpecDialMode::Predictive => DialMode::Predictive,
        SpecDialMode::Agentless => DialMode::Agentless,
    }
}

fn dialing(c: &Campaign, now: UnixMillis) -> bool {
    c.state == CampaignState::Scheduled && c.spec.in_date_range(now)
}

impl Scheduler {
    pub fn new(
        store: Store,
        vault: NumberVault,
        outboxes: Arc<DownlinkOutboxes>,
        config: DialerFeedConfig,
    ) -> Scheduler {
        let ttl_ms = (config.leader_ttl_secs.max(1) * 1000) as i64;
        let leader = match config.replica_id.clone().or_else(host_name) {
            Some(id) => LeaderLease::new("lease-scheduler", &id, ttl_ms),
            None => LeaderLease::random("lease-scheduler", ttl_ms),
        };
        Scheduler {
            store,
            vault,
            outboxes,
            config,
            leader,
        }
    }

    /// This replica's claim on the scheduler's leadership.
    pub fn leader(&self) -> &LeaderLease {
        &self.leader
    }

    /// One pass at `now`; does nothing unless this replica holds (or takes) the leader
    /// lease.
    pub async fn tick(&self, now: UnixMillis) -> Result<TickReport, FeedError> {
        let mut report = TickReport::default();
        let lead = self.leader.acquire(&self.store, now).await?;
        if !lead.held {
            tracing::debug!(leader = %lead.holder, term = lead.term, "scheduler pass skipped: another replica leads");
            return Ok(report);
        }
        report.led = true;
        super::expire_leases(&self.store, now).await?;
        report.attempts_settled = push::settle_reported_attempts(&self.store, 1_000).await?;
        report.call_tasks_enrolled = crate::call_tasks::schedule_due(&self.store, now)
            .await
            .map_err(|e| match e {
                crate::call_tasks::CallTaskError::Db(db) => FeedError::Db(db),
                other => FeedError::Db(sqlx::Error::Protocol(other.to_string())),
            })?
            .enrolled;
        let pool = self.store.pool();
        let enrolled: HashSet<String> = crate::enroll::registry::enrolled(pool)
            .await
            .map_err(|e| FeedError::Outbox(e.into()))?
            .into_iter()
            .map(|a| a.to_string())
            .collect();
        let online = presence::online(pool).await?;
        let ids: Vec<(i64,)> = sqlx::query_as(
            "SELECT id FROM campaigns WHERE state IN ('scheduled', 'paused', 'stopped') \
             ORDER BY id",
        )
        .fetch_all(pool)
        .await?;
        let mut list = Vec::with_capacity(ids.len());
        for (id,) in ids {
            list.push(campaigns::get(&self.store, id).await?);
        }
        let mut assignments = Vec::new();
        for c in &list {
            let total: u32 = c.spec.appliances.iter().map(|a| a.share).sum();
            for a in &c.spec.appliances {
                if !enrolled.contains(&a.appliance) || a.share == 0 {
                    continue;
                }
                let Ok(app) = ApplianceId::new(&a.appliance) else {
                    continue;
                };
                assignments.push(Assignment {
                    app,
                    campaign: c,
                    share: a.share,
                    total: total.max(1),
                });
            }
        }
        let mut book = FeedBook::load(pool).await?;
        report.briefs = self.briefs(&mut book, &assignments, now).await?;
        let fed: HashSet<i64> = list
            .iter()
            .filter(|c| !c.spec.appliances.is_empty())
            .map(|c| c.id)
            .collect();
        report.revocations = self.revocations(&fed, &assignments, now).await?;
        // Each appliance's trunk limits are split between the campaigns it dials now.
        let mut dialed: HashMap<&str, Vec<i64>> = HashMap::new();
        for a in assignments.iter().filter(|a| dialing(a.campaign, now)) {
            dialed
                .entry(a.app.as_str())
                .or_default()
                .push(a.campaign.id);
        }
        let mut trunks: HashMap<&str, ApplianceLimits> = HashMap::new();
        for a in assignments
            .iter()
            .filter(|a| online.contains(a.app.as_str()))
        {
            if a.campaign.state == CampaignState::Stopped {
                continue;
            }
            let whole = match trunks.get(a.app.as_str()) {
                Some(l) => *l,
                None => {
                    let l = limits::get(&self.store, a.app.as_str()).await?.unwrap_or(
                        ApplianceLimits {
                            max_concurrent: self.config.grant_max_concurrent,
                            max_attempts_per_minute: self.config.grant_max_attempts_per_minute,
                        },
                    );
                    trunks.insert(a.app.as_str(), l);
                    l
                }
            };
            let mine = dialed.get(a.app.as_str());
            let part = match mine.and_then(|ids| ids.iter().position(|&id| id == a.campaign.id)) {
                Some(i) => whole.part(i, mine.map_or(1, Vec::len)),
                None => whole,
            };
            if self.grant(&mut book, a, part, now).await? {
                report.grants += 1;
            }
        }
        report.contacts_leased = self.top_up(&assignments, &online, now).await?;
        report.leases = self.send_unsent(now).await?;
        Ok(report)
    }

    async fn briefs(
        &self,
        book: &mut FeedBook,
        assignments: &[Assignment<'_>],
        now: UnixMillis,
    ) -> Result<u64, FeedError> {
        let mut sent = 0;
        let mut profiles = HashMap::new();
        let mut current = HashSet::new();
        for a in assignments {
            let item = format!("campaign:{}", a.campaign.id);
            current.insert((a.app.to_string(), item.clone()));
            if self
                .send_brief(book, &mut profiles, &a.app, a.campaign, &item, true, now)
                .await?
            {
                sent += 1;
            }
        }
        // Shares removed, campaigns archived or back in draft: a last brief, not running.
        for (app, item) in book.items_with_prefix("campaign:") {
            if current.contains(&(app.clone(), item.clone())) || book.digest(&app, &item) == GONE {
                continue;
            }
            let Ok(app_id) = ApplianceId::new(&app) else {
                continue;
            };
            let id: i64 = item["campaign:".len()..].parse().unwrap_or(0);
            match campaigns::get(&self.store, id).await {
                Ok(c) => {
                    self.send_brief(book, &mut profiles, &app_id, &c, &item, false, now)
                        .await?;
                    sent += 1;
                }
                Err(e) => tracing::warn!(campaign = id, error = %e, "campaign gone; no last brief"),
            }
            book.put(
                self.store.pool(),
                &app,
                &item,
                book.version(&app, &item),
                GONE,
                now,
                None,
            )
            .await?;
        }
        Ok(sent)
    }

    #[allow(clippy::too_many_arguments)]
    async fn send_brief(
        &self,
        book: &mut FeedBook,
        profiles: &mut HashMap<i64, callgate_common::compliance::ComplianceProfile>,
        app: &ApplianceId,
        c: &Campaign,
        item: &str,
        assigned: bool,
        now: UnixMillis,
    ) -> Result<bool, FeedError> {
        let profile = match profiles.get(&c.spec.compliance_profile_id) {
            Some(p) => p.clone(),
            None => {
                let p = compliance::get_profile(&self.store, c.spec.compliance_profile_id)
                    .await?
                    .profile;
                profiles.insert(c.spec.compliance_profile_id, p.clone());
                p
            }
        };
        let mut brief = CampaignBrief {
            campaign: CampaignId(c.id as u64),
            version: 0,
            name: c.spec.name.clone(),
            dial_mode: dial_mode(c.spec.dial_mode),
            running: assigned && dialing(c, now),
            profile,
            window: c.spec.calling_window.clone(),
            caller_id: c.spec.caller_id.clone(),
            script: c.spec.script.clone(),
            disposition_codes: c.spec.disposition_codes.clone(),
            wrap_up_seconds: c.spec.wrap_up_seconds,
            recording_consent_announcement: c.spec.recording_consent_announcement,
            robot_script: (c.spec.dial_mode == SpecDialMode::Agentless)
                .then(|| c.spec.script.clone()),
        };
        let d = digest(&brief);
        if assigned && book.digest(app.as_str(), item) == d {
            return Ok(false);
        }
        brief.version = book.version(app.as_str(), item) + 1;
        self.outboxes
            .send(app, &Downlink::Campaign(brief.clone()))
            .await?;
        book.put(
            self.store.pool(),
            app.as_str(),
            item,
            brief.version,
            &d,
            now,
            None,
        )
        .await?;
        tracing::info!(appliance = %app, campaign = c.id, version = brief.version, running = brief.running, "campaign brief stored for the appliance");
        Ok(true)
    }

    async fn revocations(
        &self,
        fed: &HashSet<i64>,
        assignments: &[Assignment<'_>],
        now: UnixMillis,
    ) -> Result<u64, FeedError> {
        let pool = self.store.pool();
        let may_dial: HashSet<(String, i64)> = assignments
            .iter()
            .filter(|a| dialing(a.campaign, now))
            .map(|a| (a.app.to_string(), a.campaign.id))
            .collect();
        let active: Vec<(i64, i64, String)> = sqlx::query_as(
            "SELECT id, campaign_id, appliance FROM contact_leases WHERE state = 'active' \
             AND expires_at > $1",
        )
        .bind(now.0)
        .fetch_all(pool)
        .await?;
        // A fed campaign's lease goes when its box may no longer dial it; a lease handed
        // out over REST for a campaign with no shares goes when the campaign itself may no
        // longer be dialled (paused, stopped, archived, past its date range).
        let mut unfed_dialing: HashMap<i64, bool> = HashMap::new();
        for (lease, campaign, app) in active {
            let revoke = if fed.contains(&campaign) {
                !may_dial.contains(&(app, campaign))
            } else {
                let dials = match unfed_dialing.get(&campaign) {
                    Some(d) => *d,
                    None => {
                        let d = match campaigns::get(&self.store, campaign).await {
                            Ok(c) => dialing(&c, now),
                            Err(campaigns::CampaignError::NotFound(_)) => false,
                            Err(e) => return Err(e.into()),
                        };
                        unfed_dialing.insert(campaign, d);
                        d
                    }
                };
                !dials
            };
            if revoke {
                super::revoke_lease(&self.store, lease).await?;
            }
        }
        let mut sent = 0;
        for due in push::revocations_due(&self.store).await? {
            let Ok(app) = ApplianceId::new(&due.appliance) else {
                push::mark_revoke_sent(&self.store, due.lease, now).await?;
                continue;
            };
            let reason = self.revoke_reason(due.campaign, app.as_str()).await;
            self.outboxes
                .send(
                    &app,
                    &Downlink::LeaseRevoked {
                        lease: LeaseId(due.lease as u64),
                        reason,
                    },
                )
                .await?;
            push::mark_revoke_sent(&self.store, due.lease, now).await?;
            sent += 1;
        }
        Ok(sent)
    }

    async fn revoke_reason(&self, campaign: i64, app: &str) -> String {
        match campaigns::get(&self.store, campaign).await {
            Ok(c) if !c.spec.appliances.iter().any(|a| a.appliance == app) => {
                "share removed".into()
            }
            Ok(c) if c.state != CampaignState::Scheduled => format!("campaign {}", c.state),
            Ok(_) => "campaign outside its date range".into(),
            Err(_) => "campaign gone".into(),
        }
    }

    async fn grant(
        &self,
        book: &mut FeedBook,
        a: &Assignment<'_>,
        trunk: ApplianceLimits,
        now: UnixMillis,
    ) -> Result<bool, FeedError> {
        let ttl = (self.config.grant_ttl_secs * 1000) as i64;
        let g = super::pacing_grant(
            &self.store,
            a.campaign.id,
            a.app.as_str(),
            trunk.max_concurrent,
            trunk.max_attempts_per_minute,
            ttl,
            now,
        )
        .await?;
        let item = format!("grant:{}", a.campaign.id);
        let d = digest(&(
            g.max_concurrent,
            g.max_attempts_per_minute,
            g.abandon_budget,
        ));
        let expires = book.expires_at(a.app.as_str(), &item);
        let fresh = expires.is_some_and(|e| e - now.0 > ttl / 2);
        if fresh && book.digest(a.app.as_str(), &item) == d {
            return Ok(false);
        }
        let wire = PacingGrant {
            campaign: CampaignId(a.campaign.id as u64),
            max_concurrent: g.max_concurrent,
            max_attempts_per_minute: g.max_attempts_per_minute,
            abandon_budget: g.abandon_budget,
            expires_at: UnixMillis(g.expires_at),
        };
        self.outboxes
            .send(&a.app, &Downlink::PacingGrant(wire))
            .await?;
        let version = book.version(a.app.as_str(), &item) + 1;
        book.put(
            self.store.pool(),
            a.app.as_str(),
            &item,
            version,
            &d,
            now,
            Some(g.expires_at),
        )
        .await?;
        Ok(true)
    }

    async fn top_up(
        &self,
        assignments: &[Assignment<'_>],
        online: &HashSet<String>,
        now: UnixMillis,
    ) -> Result<u64, FeedError> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT l.appliance, cc.campaign_id, COUNT(*) FROM campaign_contacts cc \
             JOIN contact_leases l ON l.id = cc.lease_id \
             WHERE cc.state = 'leased' AND l.state = 'active' AND l.expires_at > $1 \
             GROUP BY l.appliance, cc.campaign_id",
        )
        .bind(now.0)
        .fetch_all(self.store.pool())
        .await?;
        let outstanding: HashMap<(String, i64), i64> =
            rows.into_iter().map(|(a, c, n)| ((a, c), n)).collect();
        let ttl = (self.config.lease_ttl_secs * 1000) as i64;
        let mut leased = 0;
        for a in assignments {
            if !online.contains(a.app.as_str()) || !dialing(a.campaign, now) {
                continue;
            }
            let target = target_for(self.config.lease_pool, a.share, a.total);
            let held = outstanding
                .get(&(a.app.to_string(), a.campaign.id))
                .copied()
                .unwrap_or(0)
                .max(0) as u64;
            let Some(need) = top_up_need(target, held) else {
                continue;
            };
            match super::lease_contacts_to_push(
                &self.store,
                &self.vault,
                a.campaign.id,
                a.app.as_str(),
                need.min(10_000) as u32,
                ttl,
                now,
            )
            .await
            {
                Ok(l) if l.contacts.is_empty() => {
                    super::return_lease(&self.store, l.id).await?;
                }
                Ok(l) => leased += l.contacts.len() as u64,
                Err(LeaseError::NotDialing { .. }) => {}
                Err(e) => {
                    tracing::warn!(appliance = %a.app, campaign = a.campaign.id, error = %e, "top-up failed")
                }
            }
        }
        Ok(leased)
    }

    async fn send_unsent(&self, now: UnixMillis) -> Result<u64, FeedError> {
        let mut sent = 0;
        for lease in push::unsent_leases(&self.store, now).await? {
            let Some((app, messages)) =
                push::pack_lease(&self.store, &self.vault, lease, now).await?
            else {
                continue;
            };
            for m in messages {
                let id = m.lease.0 as i64;
                if !m.contacts.is_empty() {
                    self.outboxes.send(&app, &Downlink::ContactLease(m)).await?;
                    sent += 1;
                }
                push::mark_lease_sent(&self.store, id, now).await?;
            }
        }
        Ok(sent)
    }
}

/// The host's name, when the system says it.
fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// The digest of a feed item that was withdrawn (last brief sent, not running).
const GONE: &str = "gone";

/// Undialled contacts an appliance should hold: its share of the pool, at least one.
pub fn target_for(pool: u32, share: u32, total: u32) -> u64 {
    let total = u64::from(total.max(1));
    (u64::from(pool) * u64::from(share)).div_ceil(total).max(1)
}

/// How many to lease now: topped up once below three quarters of the target (or empty),
/// so a pass does not issue a lease per dialled contact.
pub fn top_up_need(target: u64, held: u64) -> Option<u64> {
    if held >= target {
        return None;
    }
    let need = target - held;
    (held == 0 || need * 4 >= target).then_some(need)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_follow_the_share_and_top_ups_wait_for_a_quarter() {
        assert_eq!(target_for(200, 1, 4), 50);
        assert_eq!(target_for(200, 3, 4), 150);
        assert_eq!(target_for(10, 1, 1000), 1);
        assert_eq!(top_up_need(50, 0), Some(50));
        assert_eq!(top_up_need(50, 45), None);
        assert_eq!(top_up_need(50, 37), Some(13));
        assert_eq!(top_up_need(50, 50), None);
        assert_eq!(top_up_need(50, 60), None);
    }
}
