//! The coordinator's MQTT driver: connects to the broker with its own certificate
//! (`coordinator.callgate`, issued by the organisation CA), subscribes to every appliance's
//! uplink and status, applies each uplink message ([`super::apply`]) and answers with
//! cumulative acks on `.../down` once the effect is committed.
//!
//! What it refuses, each logged with the sender (the topic's appliance, which the broker
//! vouches for) and counted in `callgate_sync_uplink_rejected_total{reason}`: undecodable
//! payloads, an envelope naming another appliance than its topic, unknown and revoked
//! appliances. The stream goes on after each.
//!
//! With replicas (`sync.replica`), each applies and acknowledges the sequenced uplink only
//! of the appliances it owns ([`super::ownership`]); every replica still follows every
//! appliance's presence, hellos and downlink acks, so its own downlink outboxes stay in step.

use super::apply::{apply_many, high_water, ApplianceBatch, Applied};
use super::downlink::DownlinkOutboxes;
use super::ownership::BucketOwnership;
use super::settings::SyncConfig;
use super::SyncError;
use crate::enroll::pki::{OrgCa, COORDINATOR_IDENTITY};
use crate::enroll::registry::{self, ApplianceState};
use crate::store::Store;
use callgate_common::ids::ApplianceId;
use callgate_common::outbox::{ClockSkew, Inbox, Verdict};
use callgate_common::time::UnixMillis;
use callgate_common::topics::{self, TopicKind};
use callgate_common::wire::{Downlink, DownlinkEnvelope, Uplink, UplinkEnvelope};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Loads (issuing on first use) the coordinator's broker-client identity under `pki_dir`
/// and builds the rustls client configuration: ring provider, trusting only the org CA.
pub fn client_tls(ca: &OrgCa) -> Result<Arc<rustls::ClientConfig>, SyncError> {
    let dir = ca.dir();
    let cert_path = dir.join("coordinator.pem");
    let key_path = dir.join("coordinator.key");
    if !cert_path.exists() {
        let (cert, key) = ca.issue_client(COORDINATOR_IDENTITY, 825)?;
        write_file(&key_path, &key, true)?;
        write_file(&cert_path, &cert, false)?;
    }
    let tls = |e: &dyn std::fmt::Display| SyncError::Tls(e.to_string());
    let chain = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls(&e))?;
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| tls(&e))?;
    let mut roots = rustls::RootCertStore::empty();
    let ca_der = CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).map_err(|e| tls(&e))?;
    roots.add(ca_der).map_err(|e| tls(&e))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls(&e))?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .map_err(|e| tls(&e))?;
    Ok(Arc::new(config))
}

fn write_file(path: &Path, text: &str, private: bool) -> Result<(), SyncError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()).map(|()| f));
    match &mut f {
        Ok(f) => f
            .sync_all()
            .map_err(|e| SyncError::Tls(format!("{}: {e}", path.display()))),
        Err(e) => Err(SyncError::Tls(format!("{}: {e}", path.display()))),
    }
}

enum LinkEvent {
    Connected,
    Message { topic: String, payload: Vec<u8> },
    Down(String),
}

/// Per-appliance receive state.
struct Peer {
    inbox: Inbox,
    state: Option<ApplianceState>,
    checked_at: Instant,
    /// Whether its clock skew is over the threshold: logged and counted when this changes,
    /// not for every message (a backlog of thousands would log each one).
    skew_alarm: bool,
}

/// How long a looked-up appliance state (enrolled, revoked) is trusted before re-reading.
const STATE_TTL: Duration = Duration::from_secs(5);

/// Runs the link until `shutdown` resolves.
///
/// One task owns the MQTT client's event loop; this loop routes each uplink and status
/// message by the appliance its topic names to one of `sync.apply_shards` apply tasks
/// ([`shard`]) and sends the downlink. A shard owns its appliances' receive state, batches
/// what is queued and commits the batch of all its appliances in one transaction
/// ([`apply_many`]): an appliance's messages always reach the same shard in arrival order,
/// so per-appliance order holds while shards apply concurrently.
pub async fn run(
    store: Store,
    ca: Arc<OrgCa>,
    downlink: Arc<DownlinkOutboxes>,
    ownership: Arc<BucketOwnership>,
    config: &SyncConfig,
    local_broker: Option<&std::path::Path>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), SyncError> {
    let Ok(Some((host, port))) = config.broker_addr() else {
        return Ok(());
    };
    let tls = client_tls(&ca)?;
    let client_id = match &config.replica {
        Some(r) => format!("{COORDINATOR_IDENTITY}-{r}"),
        None => COORDINATOR_IDENTITY.to_string(),
    };
    let mut opts = match local_broker {
        // The embedded broker in this process: its local socket (see its driver).
        Some(path) => {
            let mut o = MqttOptions::new(client_id, path.to_string_lossy(), 0);
            o.set_transport(Transport::unix());
            o
        }
        None => {
            let mut o = MqttOptions::new(client_id, host, port);
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
            o
        }
    };
    opts.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(false)
        .set_inflight(500)
        .set_max_packet_size(512 * 1024, 512 * 1024);
    let (client, mut eventloop) = AsyncClient::new(opts, 8192);
    let (tx, mut events) = mpsc::channel(4096);
    let pump = tokio::spawn(async move {
        let mut delay = Duration::from_millis(200);
        loop {
            let ev = match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    delay = Duration::from_millis(200);
                    Some(LinkEvent::Connected)
                }
                Ok(Event::Incoming(Packet::Publish(p))) => Some(LinkEvent::Message {
                    topic: p.topic,
                    payload: p.payload.to_vec(),
                }),
                Ok(_) => None,
                Err(e) => {
                    let _ = tx.send(LinkEvent::Down(e.to_string())).await;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                    None
                }
            };
            if let Some(ev) = ev {
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
        }
    });
    let uplinks = if config.shared_subscription {
        topics::shared_uplinks()
    } else {
        topics::all_uplinks()
    };
    let ctx = Arc::new(Context {
        store: store.clone(),
        ca,
        downlink: downlink.clone(),
        skew_limit: Duration::from_secs(config.clock_skew_alarm_secs),
        shared: config.shared_subscription,
        client: client.clone(),
        ownership,
    });
    let shards: Vec<mpsc::Sender<(String, Vec<u8>)>> = (0..config.apply_shards(store.backend()))
        .map(|_| {
            let (tx, rx) = mpsc::channel(4096);
            tokio::spawn(shard(ctx.clone(), rx));
            tx
        })
        .collect();
    tokio::pin!(shutdown);
    let mut refresh_at = Instant::now();
    let result = loop {
        let now = Instant::now();
        if now >= refresh_at {
            // Rows other replicas stored for our appliances; cores of ones we lost.
            refresh_at = now + Duration::from_secs(1);
            if let Err(e) = downlink.refresh(now).await {
                tracing::warn!(error = %e, "refreshing the downlink outboxes failed");
            }
        }
        let downlink_timer = downlink.tick(now).await;
        match downlink.due().await {
            Ok(due) => {
                for (app, t, body) in due {
                    let env = DownlinkEnvelope::new(app.clone(), t.seq, UnixMillis::now(), body);
                    if let Err(e) = client.try_publish(
                        topics::downlink(&app),
                        QoS::AtLeastOnce,
                        false,
                        env.encode(),
                    ) {
                        tracing::debug!(appliance = %app, error = %e, "downlink deferred");
                        break;
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "downlink outbox failed");
                break Err(e);
            }
        }
        let deadline = downlink_timer.unwrap_or(refresh_at).min(refresh_at);
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            () = downlink.stored() => {}
            () = tokio::time::sleep_until(deadline.into()) => {}
            ev = events.recv() => match ev {
                None => break Ok(()),
                Some(LinkEvent::Connected) => {
                    tracing::info!("coordinator connected to the broker");
                    metrics::gauge!("callgate_sync_broker_connected").set(1.0);
                    if let Err(e) = super::presence::all_offline(store.pool(), UnixMillis::now()).await {
                        tracing::warn!(error = %e, "resetting presence failed");
                    }
                    let _ = client.try_subscribe(&uplinks, QoS::AtLeastOnce);
                    let _ = client.try_subscribe(topics::all_statuses(), QoS::AtLeastOnce);
                }
                Some(LinkEvent::Down(reason)) => {
                    tracing::warn!(%reason, "coordinator lost the broker");
                    metrics::gauge!("callgate_sync_broker_connected").set(0.0);
                }
                Some(LinkEvent::Message { topic, payload }) => {
                    // By the topic's appliance segment: `callgate/v1/{id}/...`.
                    let key = topic.split('/').nth(2).unwrap_or("");
                    let i = (shard_hash(key) % shards.len() as u64) as usize;
                    if shards[i].send((topic, payload)).await.is_err() {
                        break Ok(());
                    }
                }
            }
        }
    };
    drop(shards);
    let _ = client.try_disconnect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    pump.abort();
    result
}

/// FNV-1a over an appliance id: which shard applies its messages.
pub fn shard_hash(appliance: &str) -> u64 {
    appliance.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The most messages one shard commits in one transaction. Each commit costs a handful of
/// statements whatever its size (see [`apply_many`]) and one fsync, so larger batches
/// amortise both; the bound keeps a batch's memory and its acks' wait short, and its
/// biggest table's rows (9 parameters each) within one statement.
const BATCH_MAX: usize = 2048;

/// One apply task: owns the receive state of the appliances routed to it, takes what is
/// queued (up to [`BATCH_MAX`] messages), commits it in one transaction, then sends the
/// acks.
async fn shard(ctx: Arc<Context>, mut rx: mpsc::Receiver<(String, Vec<u8>)>) {
    let mut peers: HashMap<ApplianceId, Peer> = HashMap::new();
    let mut epoch = ctx.ownership.epoch();
    loop {
        let now = Instant::now();
        for (app, peer) in peers.iter_mut() {
            if let Some(up_to) = peer.inbox.poll_ack(now) {
                send_ack(&ctx.client, app, up_to);
            }
        }
        let deadline = peers
            .values()
            .filter_map(|p| p.inbox.poll_timeout())
            .min()
            .unwrap_or(now + Duration::from_secs(3600));
        tokio::select! {
            () = tokio::time::sleep_until(deadline.into()) => {}
            msg = rx.recv() => {
                let Some(first) = msg else { return };
                if ctx.ownership.epoch() != epoch {
                    // Buckets moved: another replica may have applied past the cached marks.
                    epoch = ctx.ownership.epoch();
                    peers.clear();
                }
                let mut batch = Vec::new();
                let mut next = Some(first);
                let mut taken = 0;
                while let Some((topic, payload)) = next.take() {
                    if let Err(e) = on_message(&ctx, &mut peers, &topic, &payload, &mut batch).await {
                        tracing::error!(%topic, error = %e, "handling uplink failed");
                        metrics::counter!("callgate_sync_apply_errors_total").increment(1);
                    }
                    taken += 1;
                    if taken < BATCH_MAX {
                        next = rx.try_recv().ok();
                    }
                }
                flush(&ctx, &mut peers, batch).await;
            }
        }
    }
}

/// Commits a batch: every appliance's messages in one transaction, each appliance in its
/// own savepoint (see [`apply_many`]).
async fn flush(ctx: &Context, peers: &mut HashMap<ApplianceId, Peer>, batch: Vec<Pending>) {
    if batch.is_empty() {
        return;
    }
    let mut order: Vec<ApplianceId> = Vec::new();
    let mut groups: HashMap<ApplianceId, (ApplianceBatch, bool)> = HashMap::new();
    for p in batch {
        let entry = groups.entry(p.env.appliance.clone()).or_insert_with(|| {
            order.push(p.env.appliance.clone());
            (
                ApplianceBatch {
                    appliance: p.env.appliance.clone(),
                    envs: Vec::new(),
                    skew_ms: 0,
                },
                false,
            )
        });
        entry.0.envs.push(p.env);
        entry.0.skew_ms = p.skew_ms;
        entry.1 |= p.unverified;
    }
    let mut pending: Vec<ApplianceBatch> = order
        .iter()
        .filter_map(|a| groups.get(a).map(|(b, _)| b.clone()))
        .collect();
    // Per appliance: the highest mark this shard stored and the messages it applied, the
    // mark a replay or gap showed, or the error.
    let mut stored: HashMap<ApplianceId, (u64, Vec<UplinkEnvelope>)> = HashMap::new();
    let mut seen: HashMap<ApplianceId, Result<u64, sqlx::Error>> = HashMap::new();
    // On a `$share` subscription the message before a gap may be in another replica's
    // transaction right now: give it a moment, then try what is left (twice at most).
    let attempts = if ctx.shared { 3 } else { 1 };
    for attempt in 0..attempts {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let results = match apply_many(ctx.store.pool(), &pending, UnixMillis::now()).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "committing an uplink batch failed; the boxes will resend");
                metrics::counter!("callgate_sync_apply_errors_total").increment(1);
                for b in &pending {
                    seen.entry(b.appliance.clone()).or_insert(Ok(0));
                }
                break;
            }
        };
        let mut again = Vec::new();
        for (outcome, batch) in results.into_iter().zip(sorted(&pending)) {
            let app = outcome.appliance;
            match outcome.applied {
                Ok(Applied::Stored { seq }) => {
                    let entry = stored.entry(app.clone()).or_insert((0, Vec::new()));
                    entry.0 = entry.0.max(seq);
                    entry.1.extend(
                        batch
                            .envs
                            .iter()
                            .filter(|e| e.seq > outcome.before && e.seq <= seq)
                            .cloned(),
                    );
                    let left: Vec<UplinkEnvelope> =
                        batch.envs.iter().filter(|e| e.seq > seq).cloned().collect();
                    if !left.is_empty() {
                        again.push(ApplianceBatch {
                            envs: left,
                            ..batch.clone()
                        });
                    }
                }
                Ok(Applied::Gap { high_water, .. }) => {
                    seen.insert(app, Ok(high_water));
                    again.push(batch.clone());
                }
                Ok(Applied::Replay { high_water }) => {
                    seen.insert(app, Ok(high_water));
                }
                Err(e) => {
                    seen.insert(app, Err(e));
                }
            }
        }
        pending = again;
        if pending.is_empty() {
            break;
        }
    }
    for app in order {
        let unverified = groups.get(&app).is_some_and(|g| g.1);
        let left_behind = pending.iter().any(|b| b.appliance == app);
        if let Some((seq, applied)) = stored.remove(&app) {
            for env in &applied {
                metrics::counter!("callgate_sync_uplink_applied_total").increment(1);
                // From the box's publish to our commit (both clocks; skew included).
                metrics::histogram!("callgate_sync_uplink_lag_ms")
                    .record(UnixMillis::now().millis_since(env.sent_at) as f64);
                if let Uplink::CertificateRenewal { csr } = &env.body {
                    renew(ctx, &app, csr).await;
                }
            }
            if unverified || left_behind || ctx.shared {
                // The cache may no longer match the database: ack what is committed now
                // and read the mark again at the next message.
                send_ack(&ctx.client, &app, seq);
                peers.remove(&app);
            }
            continue;
        }
        match seen.remove(&app) {
            Some(Ok(high_water)) => {
                // Another replica moved the mark, or a gap: follow the database.
                if high_water > 0 {
                    send_ack(&ctx.client, &app, high_water);
                }
                peers.remove(&app);
            }
            Some(Err(e)) => {
                tracing::error!(appliance = %app, error = %e, "applying uplink failed; the box will resend");
                metrics::counter!("callgate_sync_apply_errors_total").increment(1);
                peers.remove(&app);
            }
            None => {
                peers.remove(&app);
            }
        }
    }
}

/// `batches` in the order [`apply_many`] takes (and reports) them: by appliance id.
fn sorted(batches: &[ApplianceBatch]) -> Vec<&ApplianceBatch> {
    let mut v: Vec<&ApplianceBatch> = batches.iter().collect();
    v.sort_by(|a, b| a.appliance.as_str().cmp(b.appliance.as_str()));
    v
}

/// Answers a renewal request. Not in the apply transaction: if this fails or the process
/// dies here, the box asks again within the hour (renewal is idempotent).
async fn renew(ctx: &Context, app: &ApplianceId, csr: &str) {
    match registry::renew(ctx.store.pool(), &ctx.ca, app, csr).await {
        Ok(issued) => {
            tracing::info!(appliance = %app, serial = %issued.serial, "certificate renewed");
            let cert = Downlink::Certificate {
                pem: issued.cert_pem,
            };
            if let Err(e) = ctx.downlink.send(app, &cert).await {
                tracing::error!(appliance = %app, error = %e, "storing the renewed certificate failed");
            }
        }
        Err(e) => tracing::warn!(appliance = %app, error = %e, "renewal refused"),
    }
}

fn send_ack(client: &AsyncClient, app: &ApplianceId, up_to: u64) {
    let env = DownlinkEnvelope::new(app.clone(), 0, UnixMillis::now(), Downlink::Ack { up_to });
    if let Err(e) = client.try_publish(topics::downlink(app), QoS::AtLeastOnce, false, env.encode())
    {
        tracing::debug!(appliance = %app, error = %e, "ack deferred");
    }
}

fn reject(app: &str, reason: &'static str, detail: &dyn std::fmt::Display) {
    tracing::warn!(appliance = app, reason, %detail, "uplink message dropped");
    metrics::counter!("callgate_sync_uplink_rejected_total", "reason" => reason).increment(1);
}

/// What handling one message needs.
struct Context {
    store: Store,
    ca: Arc<OrgCa>,
    downlink: Arc<DownlinkOutboxes>,
    skew_limit: Duration,
    /// On a `$share` subscription: other replicas apply this appliance's messages too.
    shared: bool,
    client: AsyncClient,
    /// Which appliances' sequenced uplink this replica applies.
    ownership: Arc<BucketOwnership>,
}

/// A message waiting for its batch's commit.
struct Pending {
    env: UplinkEnvelope,
    skew_ms: i64,
    /// Ahead of the cached mark: only the database can say whether it applies.
    unverified: bool,
}

async fn on_message(
    ctx: &Context,
    peers: &mut HashMap<ApplianceId, Peer>,
    topic: &str,
    payload: &[u8],
    batch: &mut Vec<Pending>,
) -> Result<(), SyncError> {
    let (store, skew_limit) = (&ctx.store, ctx.skew_limit);
    let Some((app, kind)) = topics::parse(topic) else {
        reject("?", "foreign_topic", &topic);
        return Ok(());
    };
    if kind == TopicKind::Status {
        let status = String::from_utf8_lossy(payload);
        tracing::info!(appliance = %app, %status, "appliance presence");
        if status == "offline" {
            ctx.downlink.disconnected(&app).await;
            super::presence::status(store.pool(), &app, false, UnixMillis::now()).await?;
        } else if status == "online" {
            ctx.downlink.seen(&app, Instant::now()).await?;
            super::presence::status(store.pool(), &app, true, UnixMillis::now()).await?;
        }
        return Ok(());
    }
    if kind != TopicKind::Up {
        return Ok(());
    }
    let env = match UplinkEnvelope::decode(payload) {
        Ok(env) => env,
        Err(e) => {
            reject(app.as_str(), "undecodable", &e);
            return Ok(());
        }
    };
    if env.appliance != app {
        reject(
            app.as_str(),
            "envelope_topic_mismatch",
            &format_args!("envelope names `{}`", env.appliance),
        );
        return Ok(());
    }
    let now = Instant::now();
    let pool = store.pool();
    if !peers.contains_key(&app) {
        let hw = high_water(pool, &app).await?;
        peers.insert(
            app.clone(),
            Peer {
                inbox: Inbox::new(hw, Duration::from_millis(20), 64),
                state: None,
                checked_at: now,
                skew_alarm: false,
            },
        );
    }
    let peer = peers.get_mut(&app).expect("inserted above");
    if peer.state.is_none() || now.duration_since(peer.checked_at) > STATE_TTL {
        peer.state = registry::state(pool, &app).await?;
        peer.checked_at = now;
    }
    match peer.state {
        Some(ApplianceState::Enrolled) => {}
        Some(ApplianceState::Revoked) => {
            reject(app.as_str(), "revoked", &"appliance is revoked");
            return Ok(());
        }
        _ => {
            reject(app.as_str(), "not_enrolled", &"appliance is not enrolled");
            return Ok(());
        }
    }
    if !matches!(env.body, Uplink::Hello(_)) {
        // Still connected from before our restart: it will not say Hello again.
        ctx.downlink.seen(&app, now).await?;
    }
    let wall = UnixMillis::now();
    let skew = ClockSkew::measure(env.sent_at, wall, skew_limit);
    if skew.alarm && !peer.skew_alarm {
        tracing::warn!(appliance = %app, skew_ms = skew.skew_ms, "appliance clock skew over the threshold (includes time queued on the way)");
        metrics::counter!("callgate_sync_clock_skew_alarms_total").increment(1);
    } else if !skew.alarm && peer.skew_alarm {
        tracing::info!(appliance = %app, skew_ms = skew.skew_ms, "appliance clock skew back under the threshold");
    }
    peer.skew_alarm = skew.alarm;
    match &env.body {
        Uplink::Hello(h) => {
            tracing::info!(appliance = %app, firmware = %h.firmware, skew_ms = skew.skew_ms, "appliance hello");
            peer.inbox.peer_reconnected(now);
            ctx.downlink.connected(&app, now).await?;
            super::presence::hello(pool, &app, &h.firmware, wall).await?;
            return Ok(());
        }
        Uplink::Ack { up_to } => {
            ctx.downlink.acked(&app, now, *up_to).await?;
            return Ok(());
        }
        _ => {}
    }
    if !ctx.ownership.owns(app.as_str()) {
        // Another replica applies and acknowledges it.
        metrics::counter!("callgate_sync_uplink_not_owned_total").increment(1);
        return Ok(());
    }
    if env.seq == 0 {
        reject(app.as_str(), "unsequenced", &"sequenced kind with seq 0");
        return Ok(());
    }
    // Fast path for replays and gaps, from the cached mark.
    match peer.inbox.classify(now, env.seq) {
        Verdict::Apply => {}
        Verdict::Duplicate => {
            metrics::counter!("callgate_sync_uplink_replays_total").increment(1);
            return Ok(());
        }
        Verdict::Gap { .. } if ctx.shared => {
            // Another replica may have applied the messages in between: the database
            // decides (its mark row's lock orders the replicas).
            batch.push(Pending {
                env,
                skew_ms: skew.skew_ms,
                unverified: true,
            });
            return Ok(());
        }
        Verdict::Gap { .. } | Verdict::Unsequenced => {
            metrics::counter!("callgate_sync_uplink_gaps_total").increment(1);
            return Ok(());
        }
    }
    // Counted as applied now so the next message of the batch is in order; acks go out
    // only after the batch commits (the shard polls them after `flush`), and a failed
    // commit drops this cached state so the database decides again.
    peer.inbox.applied(now, env.seq);
    batch.push(Pending {
        env,
        skew_ms: skew.skew_ms,
        unverified: false,
    });
    Ok(())
}
