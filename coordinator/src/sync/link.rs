//! The coordinator's MQTT driver: connects to the broker with its own certificate
//! (`coordinator.callgate`, issued by the organisation CA), subscribes to every appliance's
//! uplink and status, applies each uplink message ([`super::apply`]) and answers with
//! cumulative acks on `.../down` once the effect is committed.
//!
//! What it refuses, each logged with the sender (the topic's appliance, which the broker
//! vouches for) and counted in `callgate_sync_uplink_rejected_total{reason}`: undecodable
//! payloads, an envelope naming another appliance than its topic, unknown and revoked
//! appliances. The stream goes on after each.

use super::apply::{apply_batch, high_water, Applied};
use super::downlink::DownlinkOutboxes;
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
}

/// How long a looked-up appliance state (enrolled, revoked) is trusted before re-reading.
const STATE_TTL: Duration = Duration::from_secs(5);

/// Runs the link until `shutdown` resolves.
pub async fn run(
    store: Store,
    ca: &OrgCa,
    downlink: &DownlinkOutboxes,
    config: &SyncConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), SyncError> {
    let Ok(Some((host, port))) = config.broker_addr() else {
        return Ok(());
    };
    let tls = client_tls(ca)?;
    let mut opts = MqttOptions::new(COORDINATOR_IDENTITY, host, port);
    opts.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(false)
        .set_inflight(500)
        .set_max_packet_size(512 * 1024, 512 * 1024)
        .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
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
    let skew_limit = Duration::from_secs(config.clock_skew_alarm_secs);
    let mut peers: HashMap<ApplianceId, Peer> = HashMap::new();
    tokio::pin!(shutdown);
    let result = loop {
        let now = Instant::now();
        for (app, peer) in peers.iter_mut() {
            if let Some(up_to) = peer.inbox.poll_ack(now) {
                send_ack(&client, app, up_to);
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
        let deadline = peers
            .values()
            .filter_map(|p| p.inbox.poll_timeout())
            .chain(downlink_timer)
            .min()
            .unwrap_or(now + Duration::from_secs(3600));
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            () = downlink.stored() => {}
            () = tokio::time::sleep_until(deadline.into()) => {}
            ev = events.recv() => match ev {
                None => break Ok(()),
                Some(first) => {
                    // Take what is already queued (up to a batch) so consecutive messages of
                    // an appliance commit in one transaction.
                    let ctx = Context { store: &store, ca, downlink, skew_limit };
                    let mut batch = Vec::new();
                    let mut next = Some(first);
                    let mut taken = 0;
                    while let Some(ev) = next.take() {
                        match ev {
                            LinkEvent::Connected => {
                                tracing::info!("coordinator connected to the broker");
                                metrics::gauge!("callgate_sync_broker_connected").set(1.0);
                                if let Err(e) = super::presence::all_offline(store.pool(), UnixMillis::now()).await {
                                    tracing::warn!(error = %e, "resetting presence failed");
                                }
                                let _ = client.try_subscribe(&uplinks, QoS::AtLeastOnce);
                                let _ = client.try_subscribe(topics::all_statuses(), QoS::AtLeastOnce);
                            }
                            LinkEvent::Down(reason) => {
                                tracing::warn!(%reason, "coordinator lost the broker");
                                metrics::gauge!("callgate_sync_broker_connected").set(0.0);
                            }
                            LinkEvent::Message { topic, payload } => {
                                if let Err(e) = on_message(&ctx, &mut peers, &topic, &payload, &mut batch).await {
                                    tracing::error!(%topic, error = %e, "handling uplink failed");
                                    metrics::counter!("callgate_sync_apply_errors_total").increment(1);
                                }
                            }
                        }
                        taken += 1;
                        if taken < 512 {
                            next = events.try_recv().ok();
                        }
                    }
                    flush(&ctx, &mut peers, batch).await;
                }
            }
        }
    };
    let _ = client.try_disconnect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    pump.abort();
    result
}

/// Commits a batch: one transaction per appliance, in arrival order.
async fn flush(
    ctx: &Context<'_>,
    peers: &mut HashMap<ApplianceId, Peer>,
    batch: Vec<(UplinkEnvelope, i64)>,
) {
    let mut order: Vec<ApplianceId> = Vec::new();
    let mut groups: HashMap<ApplianceId, (Vec<UplinkEnvelope>, i64)> = HashMap::new();
    for (env, skew) in batch {
        let entry = groups.entry(env.appliance.clone()).or_insert_with(|| {
            order.push(env.appliance.clone());
            (Vec::new(), 0)
        });
        entry.0.push(env);
        entry.1 = skew;
    }
    let pool = ctx.store.pool();
    for app in order {
        let Some((envs, skew)) = groups.remove(&app) else {
            continue;
        };
        let wall = UnixMillis::now();
        match apply_batch(pool, &app, &envs, wall, skew).await {
            Ok(Applied::Stored { seq }) => {
                let done = envs.iter().filter(|e| e.seq <= seq);
                for env in done {
                    metrics::counter!("callgate_sync_uplink_applied_total").increment(1);
                    // From the box's publish to our commit (both clocks; skew included).
                    metrics::histogram!("callgate_sync_uplink_lag_ms")
                        .record(UnixMillis::now().millis_since(env.sent_at) as f64);
                    if let Uplink::CertificateRenewal { csr } = &env.body {
                        renew(ctx, &app, csr).await;
                    }
                }
                if envs.last().is_some_and(|e| e.seq > seq) {
                    peers.remove(&app);
                }
            }
            Ok(Applied::Replay { .. } | Applied::Gap { .. }) => {
                // Another replica moved the mark: follow the database.
                peers.remove(&app);
            }
            Err(e) => {
                tracing::error!(appliance = %app, error = %e, "applying uplink failed; the box will resend");
                metrics::counter!("callgate_sync_apply_errors_total").increment(1);
                peers.remove(&app);
            }
        }
    }
}

/// Answers a renewal request. Not in the apply transaction: if this fails or the process
/// dies here, the box asks again within the hour (renewal is idempotent).
async fn renew(ctx: &Context<'_>, app: &ApplianceId, csr: &str) {
    match registry::renew(ctx.store.pool(), ctx.ca, app, csr).await {
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
struct Context<'a> {
    store: &'a Store,
    ca: &'a OrgCa,
    downlink: &'a DownlinkOutboxes,
    skew_limit: Duration,
}

async fn on_message(
    ctx: &Context<'_>,
    peers: &mut HashMap<ApplianceId, Peer>,
    topic: &str,
    payload: &[u8],
    batch: &mut Vec<(UplinkEnvelope, i64)>,
) -> Result<(), SyncError> {
    let (store, skew_limit) = (ctx.store, ctx.skew_limit);
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
    if skew.alarm {
        tracing::warn!(appliance = %app, skew_ms = skew.skew_ms, "appliance clock skew over the threshold");
        metrics::counter!("callgate_sync_clock_skew_alarms_total").increment(1);
    }
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
        Verdict::Gap { .. } | Verdict::Unsequenced => {
            metrics::counter!("callgate_sync_uplink_gaps_total").increment(1);
            return Ok(());
        }
    }
    // Counted as applied now so the next message of the batch is in order; acks go out
    // only after the batch commits (the main loop polls them after `flush`), and a failed
    // commit drops this cached state so the database decides again.
    peer.inbox.applied(now, env.seq);
    batch.push((env, skew.skew_ms));
    Ok(())
}
