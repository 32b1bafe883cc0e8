//! What the coordinator feeds the appliances besides leases and grants, and the task that
//! runs both feeds.
//!
//! - [`FeedBook`]: per appliance and item, the version last stored in its outbox and a
//!   digest of the content (`sync_feed`), so each change goes exactly once per appliance
//!   and an appliance seen for the first time gets everything.
//! - [`Feed::tick`]: do-not-call deltas from the `dnc_changes` log, only to appliances that
//!   hold an outstanding delivered lease on the number (a box never learns numbers it does
//!   not hold); the routing policy in force; each appliance's agent roster (enabled agents
//!   whose branch is the appliance's id, with their argon2 PHC and groups).
//! - [`run`]: the task (in `all-in-one`, started by [`super::SyncTask`]) running the lease
//!   scheduler and this feed every `sync.dialer.tick_ms`; [`pass`]: one such pass. The feed
//!   runs only in a pass the scheduler led (its leader lease), so of several replicas on
//!   one database only one feeds the boxes (two would each allocate downlink messages for
//!   the same box and send every change twice).
//!
//! Must not: publish (the link does), or write a number in clear outside a delta.

use super::downlink::DownlinkOutboxes;
use super::SyncError;
use crate::contacts::vault::NumberVault;
use crate::leasing::scheduler::{DialerFeedConfig, FeedError, Scheduler};
use crate::store::Store;
use callgate_common::compliance::{DncEntry, DncScope};
use callgate_common::ids::{AgentGroupId, AgentId, ApplianceId, CampaignId};
use callgate_common::time::UnixMillis;
use callgate_common::wire::{AgentBrief, AgentGroupBrief, AgentRoster, DncDelta, Downlink};
use sqlx::AnyPool;
use std::collections::HashMap;
use std::sync::Arc;

/// SHA-256 (hex) of a value's JSON form: the change detector of the feed.
pub fn digest<T: serde::Serialize>(value: &T) -> String {
    let json = serde_json::to_vec(value).expect("feed items serialise");
    ring::digest::digest(&ring::digest::SHA256, &json)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Debug, Clone)]
struct FeedRow {
    version: u64,
    digest: String,
    expires_at: Option<i64>,
}

/// The `sync_feed` table in memory for one pass; writes go through to the database.
#[derive(Debug, Default)]
pub struct FeedBook {
    rows: HashMap<(String, String), FeedRow>,
}

impl FeedBook {
    /// Reads every row.
    pub async fn load(pool: &AnyPool) -> Result<FeedBook, sqlx::Error> {
        let rows: Vec<(String, String, i64, String, Option<i64>)> =
            sqlx::query_as("SELECT appliance, item, version, digest, expires_at FROM sync_feed")
                .fetch_all(pool)
                .await?;
        Ok(FeedBook {
            rows: rows
                .into_iter()
                .map(|(a, i, v, d, e)| {
                    (
                        (a, i),
                        FeedRow {
                            version: v.max(0) as u64,
                            digest: d,
                            expires_at: e,
                        },
                    )
                })
                .collect(),
        })
    }

    /// The version last sent (0: never).
    pub fn version(&self, app: &str, item: &str) -> u64 {
        self.rows
            .get(&(app.to_string(), item.to_string()))
            .map_or(0, |r| r.version)
    }

    /// The digest last sent ("" when never).
    pub fn digest(&self, app: &str, item: &str) -> &str {
        self.rows
            .get(&(app.to_string(), item.to_string()))
            .map_or("", |r| r.digest.as_str())
    }

    /// When what was last sent expires, for items that expire.
    pub fn expires_at(&self, app: &str, item: &str) -> Option<i64> {
        self.rows
            .get(&(app.to_string(), item.to_string()))
            .and_then(|r| r.expires_at)
    }

    /// Every (appliance, item) whose item starts with `prefix`.
    pub fn items_with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let mut v: Vec<_> = self
            .rows
            .keys()
            .filter(|(_, i)| i.starts_with(prefix))
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// Records what was sent.
    #[allow(clippy::too_many_arguments)]
    pub async fn put(
        &mut self,
        pool: &AnyPool,
        app: &str,
        item: &str,
        version: u64,
        digest: &str,
        now: UnixMillis,
        expires_at: Option<i64>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO sync_feed (appliance, item, version, digest, sent_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (appliance, item) DO UPDATE SET \
             version = excluded.version, digest = excluded.digest, sent_at = excluded.sent_at, \
             expires_at = excluded.expires_at",
        )
        .bind(app)
        .bind(item)
        .bind(version as i64)
        .bind(digest)
        .bind(now.0)
        .bind(expires_at)
        .execute(pool)
        .await?;
        self.rows.insert(
            (app.to_string(), item.to_string()),
            FeedRow {
                version,
                digest: digest.to_string(),
                expires_at,
            },
        );
        Ok(())
    }
}

/// What one feed pass stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedReport {
    pub dnc_deltas: u64,
    pub routing: u64,
    pub rosters: u64,
}

/// Do-not-call, routing and roster feed.
#[derive(Debug, Clone)]
pub struct Feed {
    store: Store,
    vault: NumberVault,
    outboxes: Arc<DownlinkOutboxes>,
}

/// Where the do-not-call change log was read up to.
const DNC_CURSOR: (&str, &str) = ("", "dnc");

impl Feed {
    pub fn new(store: Store, vault: NumberVault, outboxes: Arc<DownlinkOutboxes>) -> Feed {
        Feed {
            store,
            vault,
            outboxes,
        }
    }

    /// One pass at `now`.
    pub async fn tick(&self, now: UnixMillis) -> Result<FeedReport, FeedError> {
        let pool = self.store.pool();
        let mut book = FeedBook::load(pool).await?;
        let enrolled = crate::enroll::registry::enrolled(pool)
            .await
            .map_err(SyncError::from)?;
        let mut report = FeedReport {
            dnc_deltas: self.dnc(&mut book, now).await?,
            ..FeedReport::default()
        };
        if let Ok(current) = crate::routing::current(&self.store).await {
            let version = current.version.max(0) as u64;
            for app in &enrolled {
                if book.version(app.as_str(), "routing") >= version {
                    continue;
                }
                self.outboxes
                    .send(
                        app,
                        &Downlink::RoutingPolicy {
                            version,
                            policy: current.policy.clone(),
                        },
                    )
                    .await?;
                book.put(pool, app.as_str(), "routing", version, "", now, None)
                    .await?;
                report.routing += 1;
            }
        }
        let groups: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, name FROM agent_groups ORDER BY id")
                .fetch_all(pool)
                .await?;
        let groups: Vec<AgentGroupBrief> = groups
            .into_iter()
            .map(|(id, name)| AgentGroupBrief {
                group: AgentGroupId(id as u64),
                name,
            })
            .collect();
        for app in &enrolled {
            let mut roster = AgentRoster {
                version: 0,
                groups: groups.clone(),
                agents: self.agents_of(app).await?,
            };
            let d = digest(&roster);
            if book.digest(app.as_str(), "roster") == d {
                continue;
            }
            roster.version = book.version(app.as_str(), "roster") + 1;
            let version = roster.version;
            self.outboxes
                .send(app, &Downlink::AgentRoster(roster))
                .await?;
            book.put(pool, app.as_str(), "roster", version, &d, now, None)
                .await?;
            report.rosters += 1;
        }
        Ok(report)
    }

    async fn agents_of(&self, app: &ApplianceId) -> Result<Vec<AgentBrief>, sqlx::Error> {
        let pool = self.store.pool();
        let rows: Vec<(i64, String, String, String, String, String)> = sqlx::query_as(
            "SELECT id, name, login, password_hash, sip_username, skills FROM agents \
             WHERE branch = $1 AND enabled = 1 ORDER BY id",
        )
        .bind(app.as_str())
        .fetch_all(pool)
        .await?;
        let members: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT m.agent_id, m.group_id FROM agent_group_members m \
             JOIN agents a ON a.id = m.agent_id WHERE a.branch = $1 ORDER BY m.group_id",
        )
        .bind(app.as_str())
        .fetch_all(pool)
        .await?;
        let mut groups: HashMap<i64, Vec<AgentGroupId>> = HashMap::new();
        for (agent, group) in members {
            groups
                .entry(agent)
                .or_default()
                .push(AgentGroupId(group as u64));
        }
        Ok(rows
            .into_iter()
            .map(|(id, name, login, phc, sip, skills)| AgentBrief {
                agent: AgentId(id as u64),
                name,
                login,
                password_phc: phc,
                sip_username: sip,
                skills: skills
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
                groups: groups.remove(&id).unwrap_or_default(),
            })
            .collect())
    }

    /// Turns new `dnc_changes` rows into deltas for the holders of each number.
    async fn dnc(&self, book: &mut FeedBook, now: UnixMillis) -> Result<u64, FeedError> {
        let pool = self.store.pool();
        let cursor = book.version(DNC_CURSOR.0, DNC_CURSOR.1);
        type Change = (i64, Vec<u8>, String, Option<i64>, Option<i64>);
        let changes: Vec<Change> = sqlx::query_as(
            "SELECT id, number_index, change, campaign_id, expires_at FROM dnc_changes \
             WHERE id > $1 ORDER BY id LIMIT 1000",
        )
        .bind(cursor as i64)
        .fetch_all(pool)
        .await?;
        let Some(last) = changes.last().map(|c| c.0) else {
            return Ok(0);
        };
        let mut sent = 0;
        let mut pending: HashMap<String, (ApplianceId, DncDelta)> = HashMap::new();
        for (_, index, change, campaign, expires) in changes {
            let holders: Vec<(String, Vec<u8>)> = sqlx::query_as(
                "SELECT DISTINCT l.appliance, c.number_cipher FROM contacts c \
                 JOIN contact_leases l ON l.id = c.lease_id \
                 WHERE c.number_index = $1 AND l.state = 'active' AND l.sent_at IS NOT NULL \
                 AND l.expires_at > $2",
            )
            .bind(index.clone())
            .bind(now.0)
            .fetch_all(pool)
            .await?;
            for (app, cipher) in holders {
                let Ok(app_id) = ApplianceId::new(&app) else {
                    continue;
                };
                let number = self
                    .vault
                    .open(&cipher)
                    .map_err(crate::leasing::LeaseError::from)?;
                if change == "added" {
                    let entry = DncEntry {
                        scope: match campaign {
                            None => DncScope::Global,
                            Some(c) => DncScope::Campaign(CampaignId(c as u64)),
                        },
                        expires_at: expires.map(UnixMillis),
                    };
                    pending
                        .entry(app)
                        .or_insert_with(|| {
                            (
                                app_id,
                                DncDelta {
                                    added: Vec::new(),
                                    cleared: Vec::new(),
                                },
                            )
                        })
                        .1
                        .added
                        .push((number, entry));
                    continue;
                }
                // A removal: what was pending for this box goes first, then the number is
                // cleared, then whatever entries it still has are added again — three
                // messages in outbox order, so no reading of one delta's order matters.
                if let Some((a, delta)) = pending.remove(&app) {
                    self.outboxes.send(&a, &Downlink::DncDelta(delta)).await?;
                    sent += 1;
                }
                self.outboxes
                    .send(
                        &app_id,
                        &Downlink::DncDelta(DncDelta {
                            added: Vec::new(),
                            cleared: vec![number.clone()],
                        }),
                    )
                    .await?;
                sent += 1;
                let mut conn = pool.acquire().await?;
                let left = crate::compliance::dnc_of(&mut conn, &index).await?;
                drop(conn);
                if !left.is_empty() {
                    let added = left.into_iter().map(|e| (number.clone(), e)).collect();
                    self.outboxes
                        .send(
                            &app_id,
                            &Downlink::DncDelta(DncDelta {
                                added,
                                cleared: Vec::new(),
                            }),
                        )
                        .await?;
                    sent += 1;
                }
            }
        }
        let mut rest: Vec<_> = pending.into_values().collect();
        rest.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        for (app, delta) in rest {
            self.outboxes.send(&app, &Downlink::DncDelta(delta)).await?;
            sent += 1;
        }
        book.put(pool, DNC_CURSOR.0, DNC_CURSOR.1, last as u64, "", now, None)
            .await?;
        Ok(sent)
    }
}

/// What one [`pass`] did.
#[derive(Debug, Default)]
pub struct Pass {
    /// The scheduler's report; `None` when its pass failed.
    pub scheduler: Option<crate::leasing::scheduler::TickReport>,
    /// The feed's report; `None` when it did not run (another replica leads, or the
    /// scheduler's pass failed so leadership is unknown) or failed.
    pub feed: Option<FeedReport>,
}

/// One pass at `now`: the lease scheduler, then — only when this replica led it — the feed.
pub async fn pass(scheduler: &Scheduler, feed: &Feed, now: UnixMillis) -> Pass {
    let mut done = Pass::default();
    match scheduler.tick(now).await {
        Ok(r) => {
            if r != Default::default() {
                tracing::debug!(?r, "lease scheduler pass");
            }
            done.scheduler = Some(r);
        }
        Err(e) => {
            tracing::warn!(error = %e, "lease scheduler pass failed; next pass retries");
            metrics::counter!("callgate_dialer_feed_errors_total").increment(1);
        }
    }
    if !done.scheduler.as_ref().is_some_and(|r| r.led) {
        return done;
    }
    match feed.tick(now).await {
        Ok(r) => done.feed = Some(r),
        Err(e) => {
            tracing::warn!(error = %e, "appliance feed pass failed; next pass retries");
            metrics::counter!("callgate_dialer_feed_errors_total").increment(1);
        }
    }
    done
}

/// Runs [`pass`] every `config.tick_ms` until `shutdown`.
pub async fn run(
    scheduler: Scheduler,
    feed: Feed,
    config: DialerFeedConfig,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let every = std::time::Duration::from_millis(config.tick_ms.max(10));
    loop {
        pass(&scheduler, &feed, UnixMillis::now()).await;
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
