//! The coordinator feeds an appliance's dialer over the real link: a real MQTT client
//! (rumqttc over mutual TLS with the box's own certificate, as the appliance connects)
//! says Hello and receives, decodes and acks a campaign brief, a pacing grant, a contact
//! lease, a do-not-call delta for a leased number and the lease's revocation when the
//! campaign is paused (all set up through the REST API and the CLI of the real
//! coordinator). After a `kill -9` and restart of the coordinator, resent messages are
//! byte-for-byte the ones already seen under the same sequence numbers, nothing is issued
//! again, and a replayed uplink is applied once.

#[macro_use]
mod sync_common;

use callgate_appliance::sync::identity::IdentityDir;
use callgate_common::compliance::{CallingWindow, ComplianceProfile};
use callgate_common::ids::{AgentId, ApplianceId};
use callgate_common::time::UnixMillis;
use callgate_common::topics;
use callgate_common::wire::{
    AgentEvent, AgentState, Downlink, DownlinkEnvelope, Hello, Uplink, UplinkEnvelope,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use sync_common::{BrokerKind, World};
use tokio::sync::mpsc;

const BOX: &str = "branch-1";

/// The test's stand-in for the appliance's link: what it received, by sequence number.
struct FakeBox {
    client: AsyncClient,
    incoming: mpsc::UnboundedReceiver<Vec<u8>>,
    pump: tokio::task::JoinHandle<()>,
    /// Every sequenced message received, by seq (a resend must be identical).
    seen: BTreeMap<u64, Downlink>,
    /// Highest seq applied in order.
    applied: u64,
}

impl FakeBox {
    async fn connect(w: &World, applied: u64, seen: BTreeMap<u64, Downlink>) -> FakeBox {
        let tls = IdentityDir::in_data_dir(&w.path(BOX))
            .client_tls()
            .expect("the box's identity");
        let mut opts = MqttOptions::new(BOX, "127.0.0.1", w.broker_addr.port());
        opts.set_keep_alive(Duration::from_secs(5))
            .set_clean_session(true)
            .set_max_packet_size(512 * 1024, 512 * 1024)
            .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        let (tx, incoming) = mpsc::unbounded_channel();
        let pump = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send(p.payload.to_vec()).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        let app = ApplianceId::new(BOX).unwrap();
        client
            .subscribe(topics::downlink(&app), QoS::AtLeastOnce)
            .await
            .unwrap();
        let mut b = FakeBox {
            client,
            incoming,
            pump,
            seen,
            applied,
        };
        b.send(
            0,
            Uplink::Hello(Hello {
                firmware: "test-box 1.0".into(),
                started_at: UnixMillis::now(),
                downlink_applied: applied,
            }),
        )
        .await;
        b
    }

    async fn send(&mut self, seq: u64, body: Uplink) {
        let app = ApplianceId::new(BOX).unwrap();
        let env = UplinkEnvelope::new(app.clone(), seq, UnixMillis::now(), body);
        self.client
            .publish(topics::uplink(&app), QoS::AtLeastOnce, false, env.encode())
            .await
            .unwrap();
    }

    /// Receives (and acks) until a new message satisfies `want`; fails after `limit`.
    async fn until(&mut self, limit: Duration, want: impl Fn(&Downlink) -> bool) -> Downlink {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let payload = tokio::time::timeout(left, self.incoming.recv())
                .await
                .unwrap_or_else(|_| panic!("nothing wanted within {limit:?}; seen {:?}", self.seen))
                .expect("pump alive");
            if let Some(body) = self.take(&payload).await {
                if want(&body) {
                    return body;
                }
            }
        }
    }

    /// Everything new arriving within `window`.
    async fn drain(&mut self, window: Duration) -> Vec<Downlink> {
        let deadline = Instant::now() + window;
        let mut out = Vec::new();
        while let Ok(Some(p)) = tokio::time::timeout_at(deadline.into(), self.incoming.recv()).await
        {
            if let Some(body) = self.take(&p).await {
                out.push(body);
            }
        }
        out
    }

    /// Decodes one payload; a message seen before must be identical; acks in order.
    /// Returns the body of a sequenced message not seen before.
    async fn take(&mut self, payload: &[u8]) -> Option<Downlink> {
        let env = DownlinkEnvelope::decode(payload).expect("a downlink envelope");
        assert_eq!(env.appliance.as_str(), BOX);
        if env.seq == 0 {
            return None; // an ack of our uplink
        }
        if let Some(before) = self.seen.get(&env.seq) {
            assert_eq!(
                before, &env.body,
                "seq {} resent with other content",
                env.seq
            );
            self.ack().await;
            return None;
        }
        assert_eq!(env.seq, self.applied + 1, "in order, no gap");
        self.seen.insert(env.seq, env.body.clone());
        self.applied = env.seq;
        self.ack().await;
        Some(env.body)
    }

    async fn ack(&mut self) {
        let up_to = self.applied;
        self.send(0, Uplink::Ack { up_to }).await;
    }

    fn close(self) -> (u64, BTreeMap<u64, Downlink>) {
        self.pump.abort();
        (self.applied, self.seen)
    }
}

struct Rest {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Rest {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {path}: {status} {v}");
        v
    }
}

fn cli(w: &World, args: &[&str]) -> String {
    let out = std::process::Command::new(callgate_system_tests::binary("callgate-coordinator"))
        .args(["-c", &w.coord_config()])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn a_box_receives_its_lease_grant_dnc_delta_and_revocation_and_replays_are_harmless(
    kind: BrokerKind,
) {
    let mut w = World::with_broker(&[BOX], kind);
    let path = w.path("coordinator.toml");
    let mut config = std::fs::read_to_string(&path).unwrap();
    config.push_str("[sync.dialer]\ntick_ms = 200\nlease_pool = 6\ngrant_ttl_secs = 3600\n");
    std::fs::write(&path, config).unwrap();
    w.start_broker();
    w.start_coordinator().await;
    let token = cli(
        &w,
        &["create-api-token", "--name", "t", "--scopes", "admin"],
    );
    let csv = w.path("contacts.csv");
    let mut rows = String::from("phone,timezone,tier\n");
    for i in 0..10 {
        rows.push_str(&format!("+1312555{:04},America/Chicago,gold\n", 2000 + i));
    }
    std::fs::write(&csv, rows).unwrap();
    cli(
        &w,
        &[
            "import-contacts",
            "--list",
            "spring",
            "--default-region",
            "US",
            csv.to_str().unwrap(),
        ],
    );
    let rest = Rest {
        base: format!("http://{}", w.http_addr),
        token,
        http: reqwest::Client::new(),
    };
    let lists = rest.call("GET", "/api/v1/contact-lists", None).await;
    let list = lists["items"][0]["id"].as_i64().unwrap();
    let all_day = CallingWindow {
        start_minute: 0,
        end_minute: 1440,
        days: (0..7).collect(),
        holidays: vec![],
    };
    let mut profile = serde_json::to_value(ComplianceProfile {
        window: all_day.clone(),
        ..ComplianceProfile::us()
    })
    .unwrap();
    profile["name"] = json!("round the clock");
    let profile = rest
        .call("POST", "/api/v1/compliance-profiles", Some(profile))
        .await;

    let mut b = FakeBox::connect(&w, 0, BTreeMap::new()).await;
    let campaign = rest
        .call(
            "POST",
            "/api/v1/campaigns",
            Some(json!({
                "name": "renewals",
                "kind": "service",
                "dial_mode": "progressive",
                "compliance_profile_id": profile["id"],
                "calling_window": all_day,
                "caller_id": "+14155550100",
                "appliances": [{"appliance": BOX, "share": 1}],
                "contact_lists": [list],
            })),
        )
        .await;
    let id = campaign["id"].as_i64().unwrap();
    rest.call(
        "POST",
        &format!("/api/v1/campaigns/{id}/actions/schedule"),
        None,
    )
    .await;

    let limit = Duration::from_secs(30);
    let brief = b
        .until(limit, |m| matches!(m, Downlink::Campaign(c) if c.running))
        .await;
    let Downlink::Campaign(brief) = brief else {
        unreachable!()
    };
    assert_eq!(brief.name, "renewals");
    assert_eq!(brief.caller_id, "+14155550100");
    let grant = b
        .until(limit, |m| matches!(m, Downlink::PacingGrant(_)))
        .await;
    let Downlink::PacingGrant(grant) = grant else {
        unreachable!()
    };
    assert_eq!(grant.max_concurrent, 30);
    assert!(
        grant.expires_at > UnixMillis::now(),
        "a grant with a future expiry"
    );
    let lease = b
        .until(limit, |m| matches!(m, Downlink::ContactLease(_)))
        .await;
    let Downlink::ContactLease(lease) = lease else {
        unreachable!()
    };
    assert_eq!(lease.contacts.len(), 6, "the whole pool for the only share");
    assert!(lease
        .contacts
        .iter()
        .all(|c| c.fields.contains(&("tier".to_string(), "gold".to_string()))));
    let number = lease.contacts[0].number.clone();

    rest.call(
        "POST",
        "/api/v1/dnc",
        Some(json!([{"number": number.e164(), "reason": "asked not to be called"}])),
    )
    .await;
    let delta = b.until(limit, |m| matches!(m, Downlink::DncDelta(_))).await;
    let Downlink::DncDelta(delta) = delta else {
        unreachable!()
    };
    assert_eq!(delta.added.len(), 1);
    assert_eq!(delta.added[0].0, number);

    // An agent event goes up (seq 1) before the pause.
    let event = Uplink::AgentEvent(AgentEvent {
        agent: AgentId(1),
        state: AgentState::Ready,
        at: UnixMillis::now(),
        call: None,
        campaign: None,
    });
    b.send(1, event.clone()).await;

    rest.call(
        "POST",
        &format!("/api/v1/campaigns/{id}/actions/pause"),
        None,
    )
    .await;
    let revoked = b
        .until(limit, |m| matches!(m, Downlink::LeaseRevoked { .. }))
        .await;
    assert!(
        matches!(&revoked, Downlink::LeaseRevoked { lease: l, reason } if *l == lease.lease && reason == "campaign paused"),
        "{revoked:?}"
    );
    assert!(
        b.seen
            .values()
            .any(|m| matches!(m, Downlink::Campaign(c) if !c.running && c.version == 2)),
        "the paused brief goes too (before the revocation)"
    );
    // Let the last acks land, then kill the coordinator mid-life.
    b.drain(Duration::from_secs(1)).await;
    let (applied, seen) = b.close();
    w.kill_coordinator();
    w.start_coordinator().await;
    let mut b = FakeBox::connect(&w, applied, seen).await;
    b.send(1, event).await; // the same uplink again, after the restart
    let after = b.drain(Duration::from_secs(4)).await;
    assert!(
        !after.iter().any(|m| matches!(
            m,
            Downlink::ContactLease(_) | Downlink::LeaseRevoked { .. } | Downlink::DncDelta(_)
        )),
        "nothing issued twice after the restart: {after:?}"
    );
    let revocations = b
        .seen
        .values()
        .filter(|m| matches!(m, Downlink::LeaseRevoked { lease: l, .. } if *l == lease.lease))
        .count();
    assert_eq!(revocations, 1);
    let db = w.db().await;
    let (events,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM agent_events WHERE appliance = $1")
            .bind(BOX)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(events, 1, "the replayed uplink applied once");
    let (leased,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM contacts WHERE lease_id IS NOT NULL")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(
        leased, 0,
        "the revoked lease's contacts are back in the pool"
    );
    // Everything the box acked is gone from the coordinator's outbox.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (left,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM sync_downlink WHERE appliance = $1")
                .bind(BOX)
                .fetch_one(&db)
                .await
                .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} downlink messages never acked"
        );
        b.drain(Duration::from_millis(200)).await;
    }
    db.close().await;
}

on_both_brokers!(a_box_receives_its_lease_grant_dnc_delta_and_revocation_and_replays_are_harmless);
