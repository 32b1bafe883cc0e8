//! The appliance's MQTT driver: rumqttc over rustls (mutual TLS with the box's certificate),
//! keep-alive, a retained `offline` last will on `.../status`, a persistent session, and
//! reconnects with capped exponential backoff and jitter.
//!
//! It owns the socket and the timers and nothing else: what to send and when to resend is
//! the outbox core's decision ([`UplinkOutbox`]), and after every (re)connection everything
//! unacknowledged is sent again from the outbox, whatever rumqttc kept or dropped.

use super::backoff::Backoff;
use super::identity::IdentityDir;
use super::load::fnv1a64;
use super::outbox_store::{begin_write, read_state, write_state, UplinkOutbox, DOWNLINK_APPLIED};
use super::status::{LinkStatus, LinkStatusCell};
use super::SyncError;
use callgate_common::ids::ApplianceId;
use callgate_common::outbox::{ClockSkew, Inbox, OutboxEvent, Verdict};
use callgate_common::time::UnixMillis;
use callgate_common::topics;
use callgate_common::wire::{Downlink, DownlinkEnvelope, Hello, Uplink, UplinkEnvelope};
use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use sqlx::SqlitePool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How the link behaves.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// This box (its certificate's subject).
    pub appliance: ApplianceId,
    /// Broker host name or IP, as its certificate names it.
    pub broker_host: String,
    /// Broker TLS port.
    pub broker_port: u16,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// First reconnect delay.
    pub backoff_base: Duration,
    /// Longest reconnect delay.
    pub backoff_cap: Duration,
    /// Clock skew beyond this raises the alarm.
    pub clock_skew_alarm: Duration,
    /// Reported in `Hello`.
    pub firmware: String,
    /// Ask for a new certificate when the current one has less than this left.
    pub renew_before: Duration,
    /// Where the link publishes its state for the status page.
    pub status: LinkStatusCell,
}

/// Why [`run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkExit {
    /// `shutdown` resolved.
    Stopped,
    /// A renewed certificate was installed: run again to connect with it.
    IdentityRenewed,
}

impl LinkSettings {
    /// Defaults for `appliance` against `host:port`.
    pub fn new(appliance: ApplianceId, broker_host: String, broker_port: u16) -> LinkSettings {
        LinkSettings {
            appliance,
            broker_host,
            broker_port,
            keep_alive: Duration::from_secs(30),
            backoff_base: Duration::from_millis(200),
            backoff_cap: Duration::from_secs(30),
            clock_skew_alarm: Duration::from_secs(5),
            firmware: env!("CARGO_PKG_VERSION").into(),
            renew_before: Duration::from_secs(30 * 86_400),
            status: LinkStatusCell::new(LinkStatus::not_enrolled()),
        }
    }
}

enum LinkEvent {
    Connected { session_present: bool },
    Message(Vec<u8>),
    Down(String),
}

/// Runs the link until `shutdown` resolves. Returns an error only when the outbox and its
/// table may disagree (a failed write): the caller reopens the outbox and calls again.
pub async fn run(
    settings: LinkSettings,
    identity: &IdentityDir,
    pool: SqlitePool,
    outbox: Arc<UplinkOutbox>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<LinkExit, SyncError> {
    settings.status.connecting(UnixMillis::now());
    let tls = identity.client_tls()?;
    let app = settings.appliance.clone();
    let mut opts = MqttOptions::new(app.as_str(), &settings.broker_host, settings.broker_port);
    opts.set_keep_alive(settings.keep_alive)
        .set_clean_session(false)
        .set_inflight(200)
        .set_last_will(LastWill::new(
            topics::status(&app),
            "offline",
            QoS::AtLeastOnce,
            true,
        ))
        .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    let (client, eventloop) = AsyncClient::new(opts, 4096);
    let (events_tx, mut events) = mpsc::channel(1024);
    let backoff = Backoff::new(
        settings.backoff_base,
        settings.backoff_cap,
        fnv1a64(app.as_str()),
    );
    let pump = tokio::spawn(drive_eventloop(eventloop, events_tx, backoff));
    let result = serve(
        &settings,
        identity,
        &client,
        &pool,
        &outbox,
        &mut events,
        shutdown,
    )
    .await;
    // Best effort: a clean goodbye instead of the will.
    let _ = client.try_publish(topics::status(&app), QoS::AtLeastOnce, true, "offline");
    let _ = client.try_disconnect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    pump.abort();
    result
}

/// Owns rumqttc's event loop in its own task (its `poll` is not cancel-safe), forwarding
/// what matters and sleeping the backoff after a failure.
async fn drive_eventloop(
    mut eventloop: EventLoop,
    events: mpsc::Sender<LinkEvent>,
    mut backoff: Backoff,
) {
    loop {
        let next = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff.reset();
                Some(LinkEvent::Connected {
                    session_present: ack.session_present,
                })
            }
            Ok(Event::Incoming(Packet::Publish(p))) => Some(LinkEvent::Message(p.payload.to_vec())),
            Ok(_) => None,
            Err(e) => {
                let _ = events.send(LinkEvent::Down(e.to_string())).await;
                tokio::time::sleep(backoff.next_delay()).await;
                None
            }
        };
        if let Some(ev) = next {
            if events.send(ev).await.is_err() {
                return;
            }
        }
    }
}

async fn serve(
    settings: &LinkSettings,
    identity: &IdentityDir,
    client: &AsyncClient,
    pool: &SqlitePool,
    outbox: &UplinkOutbox,
    events: &mut mpsc::Receiver<LinkEvent>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<LinkExit, SyncError> {
    let app = &settings.appliance;
    let mut renewal_asked: Option<Instant> = None;
    let mut renewal_check = Instant::now();
    let up = topics::uplink(app);
    let mut inbox = Inbox::new(
        read_state(pool, DOWNLINK_APPLIED).await?,
        Duration::from_millis(50),
        32,
    );
    let started_at = UnixMillis::now();
    let mut connected = false;
    let mut skew_alarm = false;
    tokio::pin!(shutdown);
    loop {
        // Publish whatever the outbox hands out.
        'publish: loop {
            if !connected {
                break;
            }
            let batch = outbox.next_transmits(64).await?;
            if batch.is_empty() {
                break;
            }
            for (t, body) in batch {
                let env = UplinkEnvelope::new(app.clone(), t.seq, UnixMillis::now(), body);
                if let Err(e) = client.try_publish(&up, QoS::AtLeastOnce, false, env.encode()) {
                    // The request queue is full; the resend timer brings it back.
                    tracing::debug!(seq = t.seq, error = %e, "publish deferred");
                    break 'publish;
                }
                metrics::counter!("callgate_sync_uplink_published_total").increment(1);
            }
        }
        for ev in outbox.events().await {
            match ev {
                OutboxEvent::QuotaAlarmRaised { used, quota } => {
                    tracing::error!(used, quota, "sync outbox near its disk quota");
                    metrics::gauge!("callgate_sync_outbox_quota_alarm").set(1.0);
                }
                OutboxEvent::QuotaAlarmCleared { used, quota } => {
                    tracing::info!(used, quota, "sync outbox back under its alarm level");
                    metrics::gauge!("callgate_sync_outbox_quota_alarm").set(0.0);
                }
                other => tracing::info!(?other, "sync outbox event"),
            }
        }
        let now = Instant::now();
        if connected && now >= renewal_check {
            renewal_check = now + Duration::from_secs(3600);
            let stale =
                renewal_asked.is_none_or(|t| now.duration_since(t) > Duration::from_secs(3600));
            if stale && renewal_due(identity, settings.renew_before) {
                let csr = identity.generate_renewal_csr(app)?;
                outbox.send(&Uplink::CertificateRenewal { csr }).await?;
                renewal_asked = Some(now);
                tracing::info!("certificate renewal requested");
            }
        }
        if let Some(up_to) = inbox.poll_ack(now) {
            let ack = UplinkEnvelope::new(app.clone(), 0, UnixMillis::now(), Uplink::Ack { up_to });
            let _ = client.try_publish(&up, QoS::AtLeastOnce, false, ack.encode());
        }
        let deadline = [outbox.tick(now).await, inbox.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + Duration::from_secs(3600))
            .min(renewal_check.max(now + Duration::from_millis(10)));
        tokio::select! {
            () = &mut shutdown => return Ok(LinkExit::Stopped),
            () = outbox.stored() => {}
            () = tokio::time::sleep_until(deadline.into()) => {}
            ev = events.recv() => match ev {
                None => return Ok(LinkExit::Stopped),
                Some(LinkEvent::Connected { session_present }) => {
                    tracing::info!(session_present, "link up");
                    settings.status.online(UnixMillis::now());
                    metrics::gauge!("callgate_sync_link_up").set(1.0);
                    connected = true;
                    renewal_check = Instant::now();
                    outbox.connected(Instant::now()).await;
                    inbox.peer_reconnected(Instant::now());
                    let _ = client.try_subscribe(topics::downlink(app), QoS::AtLeastOnce);
                    let _ = client.try_publish(topics::status(app), QoS::AtLeastOnce, true, "online");
                    let hello = UplinkEnvelope::new(app.clone(), 0, UnixMillis::now(), Uplink::Hello(Hello {
                        firmware: settings.firmware.clone(),
                        started_at,
                        downlink_applied: inbox.high_water(),
                    }));
                    let _ = client.try_publish(&up, QoS::AtLeastOnce, false, hello.encode());
                }
                Some(LinkEvent::Down(reason)) => {
                    if connected {
                        tracing::warn!(%reason, "link down");
                    } else {
                        tracing::debug!(%reason, "broker unreachable");
                    }
                    metrics::gauge!("callgate_sync_link_up").set(0.0);
                    settings.status.offline(UnixMillis::now(), &reason);
                    connected = false;
                    outbox.disconnected().await;
                }
                Some(LinkEvent::Message(bytes)) => {
                    settings.status.downlink(UnixMillis::now());
                    if on_downlink(settings, identity, pool, outbox, &mut inbox, &mut skew_alarm, &bytes).await? {
                        if let Some(up_to) = inbox.poll_ack(Instant::now() + Duration::from_secs(3600)) {
                            let ack = UplinkEnvelope::new(app.clone(), 0, UnixMillis::now(), Uplink::Ack { up_to });
                            let _ = client.try_publish(&up, QoS::AtLeastOnce, false, ack.encode());
                        }
                        tracing::info!("renewed certificate installed; reconnecting with it");
                        return Ok(LinkExit::IdentityRenewed);
                    }
                }
            }
        }
    }
}

/// Applies downlink message `seq` and records it as applied, in one transaction, so a
/// replay is harmless. Dialer holdings (campaigns, leases, revocations, grants, do-not-call)
/// and the agent roster get their effects here; other kinds get theirs with their issues.
///
/// The transaction is `BEGIN IMMEDIATE` ([`begin_write`]): the effects read before they
/// write, and a deferred transaction would meet `SQLITE_BUSY_SNAPSHOT` whenever the outbox
/// (or the dialler) committed between the read and the first write.
pub async fn apply_downlink(pool: &SqlitePool, seq: u64, body: &Downlink) -> Result<(), SyncError> {
    let mut tx = begin_write(pool).await?;
    write_state(&mut tx, DOWNLINK_APPLIED, seq).await?;
    let dialer = crate::dialer::store::apply_downlink(&mut tx, body).await?;
    if let Downlink::AgentRoster(_) | Downlink::RoutingPolicy { .. } = body {
        crate::agents::roster::apply_downlink(&mut tx, body).await?;
    }
    tx.commit().await?;
    if dialer {
        crate::dialer::store::notify_changed();
    }
    Ok(())
}

/// Whether the certificate has less than `before` left (or cannot be read).
fn renewal_due(identity: &IdentityDir, before: Duration) -> bool {
    match identity.not_after() {
        Ok(not_after) => {
            let left = not_after - UnixMillis::now().0 / 1000;
            left < i64::try_from(before.as_secs()).unwrap_or(i64::MAX)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the certificate's expiry");
            false
        }
    }
}

/// Handles one downlink payload; returns whether a renewed identity was installed.
async fn on_downlink(
    settings: &LinkSettings,
    identity: &IdentityDir,
    pool: &SqlitePool,
    outbox: &UplinkOutbox,
    inbox: &mut Inbox,
    skew_alarm: &mut bool,
    bytes: &[u8],
) -> Result<bool, SyncError> {
    let env = match DownlinkEnvelope::decode(bytes) {
        Ok(env) => env,
        Err(e) => {
            tracing::warn!(error = %e, len = bytes.len(), "dropping undecodable downlink");
            metrics::counter!("callgate_sync_downlink_rejected_total").increment(1);
            return Ok(false);
        }
    };
    if env.appliance != settings.appliance {
        tracing::warn!(envelope = %env.appliance, "dropping downlink addressed to another appliance");
        return Ok(false);
    }
    let skew = ClockSkew::measure(env.sent_at, UnixMillis::now(), settings.clock_skew_alarm);
    metrics::gauge!("callgate_sync_clock_skew_ms").set(skew.skew_ms as f64);
    // Logged when the alarm rises or clears, not for every message while it holds.
    if skew.alarm && !*skew_alarm {
        tracing::warn!(
            skew_ms = skew.skew_ms,
            "clock skew with the coordinator over the threshold (includes time queued on the way)"
        );
    } else if !skew.alarm && *skew_alarm {
        tracing::info!(
            skew_ms = skew.skew_ms,
            "clock skew with the coordinator back under the threshold"
        );
    }
    *skew_alarm = skew.alarm;
    let now = Instant::now();
    match env.body {
        Downlink::Ack { up_to } => match outbox.acked(now, up_to).await {
            Ok(n) => {
                metrics::counter!("callgate_sync_uplink_acked_total").increment(n as u64);
            }
            Err(SyncError::Outbox(e)) => tracing::warn!(error = %e, "ignoring impossible ack"),
            Err(e) => return Err(e),
        },
        body => match inbox.classify(now, env.seq) {
            Verdict::Apply => {
                let mut renewed = false;
                if let Downlink::Certificate { pem } = &body {
                    match identity.install_renewed(pem) {
                        Ok(()) => renewed = true,
                        Err(e) => tracing::error!(error = %e, "renewed certificate refused"),
                    }
                }
                apply_downlink(pool, env.seq, &body).await?;
                inbox.applied(now, env.seq);
                return Ok(renewed);
            }
            Verdict::Duplicate | Verdict::Gap { .. } | Verdict::Unsequenced => {}
        },
    }
    Ok(false)
}
