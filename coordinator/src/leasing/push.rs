//! Leases as the appliance receives them, and what comes back over the link.
//!
//! - [`pack_lease`] reads a held lease back from the database and builds the wire
//!   [`ContactLease`]s for it: number (decrypted here, never logged), zones, attempts, the
//!   number's attempts inside the cap windows, its do-not-call entries, fields, tags, last
//!   outcome and last agent. One lease is one envelope: a lease whose envelope would pass
//!   [`MAX_PAYLOAD_BYTES`] is split into several leases in the database first.
//! - [`unsent_leases`] / [`mark_lease_sent`] and [`revocations_due`] / [`mark_revoke_sent`]:
//!   what the scheduler still has to store in an appliance's outbox, driven by the database
//!   so a crash between a hold and its send is caught up on the next pass.
//! - [`return_from_appliance`]: an appliance's `LeaseReturn`, inside the uplink transaction.
//! - [`settle_reported_attempts`]: attempt results stored by the uplink, applied to the
//!   contact queue ([`super::record_attempt`], idempotent by attempt id).
//!
//! Must not: publish anything itself (the sync room's outbox does), or write a number in
//! clear anywhere but the returned message.

use super::LeaseError;
use crate::compliance;
use crate::contacts::vault::NumberVault;
use crate::store::Store;
use callgate_common::ids::{AgentId, ApplianceId, CampaignId, ContactId, LeaseId};
use callgate_common::time::UnixMillis;
use callgate_common::wire::{
    AttemptResult, ContactLease, Downlink, DownlinkEnvelope, LeasedContact, MAX_PAYLOAD_BYTES,
};
use sqlx::{Any, Transaction};

/// Room left under [`MAX_PAYLOAD_BYTES`] for what the size estimate cannot see.
const MARGIN: usize = 512;

/// Encoded size of `body` in an envelope for `app` with the largest header it can get.
pub fn envelope_len(app: &ApplianceId, body: &Downlink) -> usize {
    DownlinkEnvelope::new(app.clone(), u64::MAX, UnixMillis(i64::MAX), body.clone())
        .encode()
        .len()
}

/// A lease read back for sending.
struct Loaded {
    appliance: ApplianceId,
    lease: ContactLease,
}

async fn load(
    store: &Store,
    vault: &NumberVault,
    lease: i64,
    now: UnixMillis,
) -> Result<Option<Loaded>, LeaseError> {
    let head: Option<(i64, String, i64, i64, String)> = sqlx::query_as(
        "SELECT campaign_id, appliance, issued_at, expires_at, state FROM contact_leases \
         WHERE id = $1",
    )
    .bind(lease)
    .fetch_optional(store.pool())
    .await?;
    let Some((campaign, appliance, issued_at, expires_at, state)) = head else {
        return Ok(None);
    };
    let Ok(appliance) = ApplianceId::new(&appliance) else {
        return Ok(None);
    };
    if state != "active" {
        return Ok(None);
    }
    type Row = (
        i64,
        Vec<u8>,
        Vec<u8>,
        String,
        i64,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<i64>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT c.id, c.number_index, c.number_cipher, c.time_zones, cc.attempts, c.fields, \
         c.tags, cc.last_outcome, c.last_disposition, c.last_agent_id \
         FROM campaign_contacts cc JOIN contacts c ON c.id = cc.contact_id \
         WHERE cc.lease_id = $1 AND cc.campaign_id = $2 AND cc.state = 'leased' \
         AND c.lease_id = $3 \
         ORDER BY cc.priority DESC, cc.next_attempt_at, cc.contact_id",
    )
    .bind(lease)
    .bind(campaign)
    .bind(lease)
    .fetch_all(store.pool())
    .await?;
    let indexes: Vec<Vec<u8>> = rows.iter().map(|r| r.1.clone()).collect();
    let mut conn = store.pool().acquire().await?;
    let dnc = compliance::dnc_of_many(&mut conn, &indexes).await?;
    let recent = compliance::recent_attempts_many(&mut conn, &indexes, now).await?;
    drop(conn);
    let mut contacts = Vec::with_capacity(rows.len());
    for (id, index, cipher, zones, attempts, fields, tags, outcome, disposition, agent) in rows {
        let mut recent_attempts = recent.get(&index).cloned().unwrap_or_default();
        recent_attempts.sort();
        contacts.push(LeasedContact {
            contact: ContactId(id as u64),
            number: vault.open(&cipher)?,
            time_zones: zones
                .split(',')
                .filter(|z| !z.is_empty())
                .map(str::to_string)
                .collect(),
            attempts: attempts.max(0) as u32,
            recent_attempts,
            dnc: dnc.get(&index).cloned().unwrap_or_default(),
            fields: fields_of(&fields),
            tags: tags
                .split(',')
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect(),
            last_outcome: disposition.or(outcome),
            last_agent: agent.map(|a| AgentId(a as u64)),
        });
    }
    Ok(Some(Loaded {
        appliance,
        lease: ContactLease {
            lease: LeaseId(lease as u64),
            campaign: CampaignId(campaign as u64),
            issued_at: UnixMillis(issued_at),
            expires_at: UnixMillis(expires_at),
            contacts,
        },
    }))
}

/// Custom fields (a JSON object) as `(name, value)` pairs; non-string values as JSON text.
fn fields_of(json: &str) -> Vec<(String, String)> {
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(serde_json::Value::Object(map)) => map
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Splits `contacts` (in order) into groups whose lease envelope stays under the limit;
/// a contact that cannot fit even alone is returned apart.
fn pack(
    app: &ApplianceId,
    head: &ContactLease,
    contacts: Vec<LeasedContact>,
) -> (Vec<Vec<LeasedContact>>, Vec<LeasedContact>) {
    let empty = ContactLease {
        contacts: Vec::new(),
        ..head.clone()
    };
    // The contact count's varint grows by at most 4 bytes.
    let base = envelope_len(app, &Downlink::ContactLease(empty)) + 4;
    let budget = MAX_PAYLOAD_BYTES - MARGIN;
    let mut groups: Vec<Vec<LeasedContact>> = Vec::new();
    let mut oversized = Vec::new();
    let mut current: Vec<LeasedContact> = Vec::new();
    let mut size = base;
    for c in contacts {
        let len = postcard::to_stdvec(&c).map_or(usize::MAX, |b| b.len());
        if base.saturating_add(len) > budget {
            oversized.push(c);
            continue;
        }
        if size + len > budget {
            groups.push(std::mem::take(&mut current));
            size = base;
        }
        size += len;
        current.push(c);
    }
    if !current.is_empty() || groups.is_empty() {
        groups.push(current);
    }
    (groups, oversized)
}

/// The wire leases for held lease `lease`, splitting it in the database when one envelope
/// cannot carry it. `None` when the lease is no longer active. Contacts too large for any
/// envelope leave the queue (`blocked`) with a warning naming the contact.
pub async fn pack_lease(
    store: &Store,
    vault: &NumberVault,
    lease: i64,
    now: UnixMillis,
) -> Result<Option<(ApplianceId, Vec<ContactLease>)>, LeaseError> {
    let Some(Loaded {
        appliance,
        lease: whole,
    }) = load(store, vault, lease, now).await?
    else {
        return Ok(None);
    };
    let head = ContactLease {
        contacts: Vec::new(),
        ..whole.clone()
    };
    let (groups, oversized) = pack(&appliance, &head, whole.contacts);
    let mut tx = store.pool().begin().await?;
    for c in &oversized {
        tracing::warn!(
            contact = c.contact.0,
            lease,
            "contact too large for one downlink message; taken out of the campaign queue"
        );
        sqlx::query(
            "UPDATE campaign_contacts SET state = 'blocked', lease_id = NULL \
             WHERE lease_id = $1 AND contact_id = $2",
        )
        .bind(lease)
        .bind(c.contact.0 as i64)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE contacts SET lease_id = NULL, lease_expires_at = NULL \
             WHERE id = $1 AND lease_id = $2",
        )
        .bind(c.contact.0 as i64)
        .bind(lease)
        .execute(&mut *tx)
        .await?;
    }
    let mut out = Vec::with_capacity(groups.len());
    for (i, group) in groups.into_iter().enumerate() {
        let id = if i == 0 {
            lease
        } else {
            let (id,): (i64,) = sqlx::query_as(
                "INSERT INTO contact_leases (campaign_id, appliance, issued_at, expires_at, \
                 state) VALUES ($1, $2, $3, $4, 'active') RETURNING id",
            )
            .bind(head.campaign.0 as i64)
            .bind(appliance.as_str())
            .bind(head.issued_at.0)
            .bind(head.expires_at.0)
            .fetch_one(&mut *tx)
            .await?;
            let ids = numbered(3, group.len());
            let sql =
                format!("UPDATE contacts SET lease_id = $1 WHERE lease_id = $2 AND id IN ({ids})");
            let mut q = sqlx::query(&sql).bind(id).bind(lease);
            for c in &group {
                q = q.bind(c.contact.0 as i64);
            }
            q.execute(&mut *tx).await?;
            let sql = format!(
                "UPDATE campaign_contacts SET lease_id = $1 WHERE lease_id = $2 \
                 AND contact_id IN ({ids})"
            );
            let mut q = sqlx::query(&sql).bind(id).bind(lease);
            for c in &group {
                q = q.bind(c.contact.0 as i64);
            }
            q.execute(&mut *tx).await?;
            id
        };
        out.push(ContactLease {
            lease: LeaseId(id as u64),
            contacts: group,
            ..head.clone()
        });
    }
    tx.commit().await?;
    Ok(Some((appliance, out)))
}

fn numbered(first: usize, n: usize) -> String {
    (0..n)
        .map(|i| format!("${}", first + i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Active leases not yet stored in their appliance's outbox, oldest first.
pub async fn unsent_leases(store: &Store, now: UnixMillis) -> Result<Vec<i64>, sqlx::Error> {
    let rows: Vec<(i64,)> = sqlx::query_as(
        "SELECT id FROM contact_leases WHERE state = 'active' AND sent_at IS NULL \
         AND expires_at > $1 ORDER BY id",
    )
    .bind(now.0)
    .fetch_all(store.pool())
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Records that `lease` is in its appliance's outbox.
pub async fn mark_lease_sent(
    store: &Store,
    lease: i64,
    now: UnixMillis,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE contact_leases SET sent_at = $1 WHERE id = $2")
        .bind(now.0)
        .bind(lease)
        .execute(store.pool())
        .await?;
    Ok(())
}

/// A delivered lease the coordinator took back whose appliance was not told yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueRevocation {
    pub lease: i64,
    pub appliance: String,
    pub campaign: i64,
}

/// Every delivered lease revoked and not yet announced.
pub async fn revocations_due(store: &Store) -> Result<Vec<DueRevocation>, sqlx::Error> {
    let rows: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT id, appliance, campaign_id FROM contact_leases WHERE state = 'revoked' \
         AND sent_at IS NOT NULL AND revoke_sent_at IS NULL ORDER BY id",
    )
    .fetch_all(store.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(lease, appliance, campaign)| DueRevocation {
            lease,
            appliance,
            campaign,
        })
        .collect())
}

/// Records that the revocation of `lease` is in its appliance's outbox.
pub async fn mark_revoke_sent(
    store: &Store,
    lease: i64,
    now: UnixMillis,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE contact_leases SET revoke_sent_at = $1 WHERE id = $2")
        .bind(now.0)
        .bind(lease)
        .execute(store.pool())
        .await?;
    Ok(())
}

/// Puts `contacts` of `lease` back in the queue because `appliance` handed them back
/// undialled; only contacts that lease still holds, and only if it is that appliance's.
/// The lease ends (`returned`) once it holds nothing. Runs inside the uplink transaction.
pub async fn return_from_appliance(
    tx: &mut Transaction<'_, Any>,
    appliance: &str,
    lease: i64,
    contacts: &[ContactId],
) -> Result<u64, sqlx::Error> {
    let owner: Option<(String, String)> =
        sqlx::query_as("SELECT appliance, state FROM contact_leases WHERE id = $1")
            .bind(lease)
            .fetch_optional(&mut **tx)
            .await?;
    let Some((owner, state)) = owner else {
        return Ok(0);
    };
    if owner != appliance || state != "active" {
        return Ok(0);
    }
    let mut returned = 0;
    for chunk in contacts.chunks(500) {
        let ids = numbered(2, chunk.len());
        let sql = format!(
            "UPDATE campaign_contacts SET state = 'ready', lease_id = NULL \
             WHERE lease_id = $1 AND state = 'leased' AND contact_id IN ({ids})"
        );
        let mut q = sqlx::query(&sql).bind(lease);
        for c in chunk {
            q = q.bind(c.0 as i64);
        }
        returned += q.execute(&mut **tx).await?.rows_affected();
        let sql = format!(
            "UPDATE contacts SET lease_id = NULL, lease_expires_at = NULL \
             WHERE lease_id = $1 AND id IN ({ids})"
        );
        let mut q = sqlx::query(&sql).bind(lease);
        for c in chunk {
            q = q.bind(c.0 as i64);
        }
        q.execute(&mut **tx).await?;
    }
    let (left,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM campaign_contacts WHERE lease_id = $1 AND state = 'leased'",
    )
    .bind(lease)
    .fetch_one(&mut **tx)
    .await?;
    if left == 0 {
        sqlx::query(
            "UPDATE contact_leases SET state = 'returned' WHERE id = $1 AND state = 'active'",
        )
        .bind(lease)
        .execute(&mut **tx)
        .await?;
    }
    Ok(returned)
}

/// Applies up to `limit` attempt results the uplink stored and nobody settled yet to the
/// contact queue; returns how many were settled. A result naming a contact or campaign
/// the coordinator does not know is settled as unusable (logged), never retried forever;
/// a database failure leaves it for the next pass.
pub async fn settle_reported_attempts(store: &Store, limit: i64) -> Result<u64, LeaseError> {
    let rows: Vec<(String, String, Vec<u8>)> = sqlx::query_as(
        "SELECT attempt_id, appliance, record FROM attempt_results WHERE settled_at IS NULL \
         ORDER BY ended_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(store.pool())
    .await?;
    let mut settled = 0;
    for (id, appliance, record) in rows {
        match postcard::from_bytes::<AttemptResult>(&record) {
            Ok(r) => match super::record_attempt(store, &appliance, &r).await {
                Ok(_) => {}
                Err(e @ (LeaseError::UnknownContact { .. } | LeaseError::Campaign(_))) => {
                    tracing::warn!(attempt = %id, %appliance, error = %e, "attempt result names nothing the coordinator works; kept, not applied");
                }
                Err(e) => return Err(e),
            },
            Err(e) => {
                tracing::warn!(attempt = %id, %appliance, error = %e, "stored attempt result unreadable; kept, not applied");
            }
        }
        sqlx::query("UPDATE attempt_results SET settled_at = $1 WHERE attempt_id = $2")
            .bind(UnixMillis::now().0)
            .bind(&id)
            .execute(store.pool())
            .await?;
        settled += 1;
    }
    Ok(settled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use callgate_common::phone::PhoneNumber;

    fn contact(i: u64, field_bytes: usize) -> LeasedContact {
        LeasedContact {
            contact: ContactId(i),
            number: PhoneNumber::parse("+14155550123", None).unwrap(),
            time_zones: vec!["America/Los_Angeles".into()],
            attempts: 0,
            recent_attempts: vec![],
            dnc: vec![],
            fields: vec![("notes".into(), "x".repeat(field_bytes))],
            tags: vec![],
            last_outcome: None,
            last_agent: None,
        }
    }

    #[test]
    fn packing_keeps_every_envelope_under_the_limit_and_the_order() {
        let app = ApplianceId::new("branch-1").unwrap();
        let head = ContactLease {
            lease: LeaseId(1),
            campaign: CampaignId(2),
            issued_at: UnixMillis(0),
            expires_at: UnixMillis(1),
            contacts: vec![],
        };
        let all: Vec<_> = (0..100).map(|i| contact(i, 10_000)).collect();
        let (groups, oversized) = pack(&app, &head, all);
        assert!(oversized.is_empty());
        assert!(
            groups.len() >= 4,
            "1 MB of contacts in {} groups",
            groups.len()
        );
        let mut order = Vec::new();
        for g in groups {
            order.extend(g.iter().map(|c| c.contact.0));
            let body = Downlink::ContactLease(ContactLease {
                contacts: g,
                ..head.clone()
            });
            assert!(envelope_len(&app, &body) <= MAX_PAYLOAD_BYTES);
        }
        assert_eq!(order, (0..100).collect::<Vec<_>>());
        let (groups, oversized) = pack(&app, &head, vec![contact(7, MAX_PAYLOAD_BYTES)]);
        assert_eq!(oversized.len(), 1);
        assert_eq!(groups.len(), 1);
        assert!(groups[0].is_empty());
    }
}
