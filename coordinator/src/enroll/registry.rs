//! The `appliances` and `claim_codes` tables: registration with a one-time claim code
//! (single use, 24 h), enrollment (a CSR signed for the registered name), offline
//! provisioning, renewal and revocation. A revoked appliance is refused by the sync link
//! and left out of the broker ACL.

use super::pki::{Issued, OrgCa};
use super::EnrollError;
use callgate_common::ids::ApplianceId;
use callgate_common::time::UnixMillis;
use sqlx::AnyPool;

/// How long a claim code stays valid.
pub const CLAIM_TTL_MS: i64 = 24 * 3600 * 1000;

/// An appliance's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplianceState {
    /// Registered by HQ, claim code issued, no certificate yet.
    Registered,
    /// Holds a valid certificate.
    Enrolled,
    /// Refused everywhere.
    Revoked,
}

impl ApplianceState {
    fn as_str(self) -> &'static str {
        match self {
            ApplianceState::Registered => "registered",
            ApplianceState::Enrolled => "enrolled",
            ApplianceState::Revoked => "revoked",
        }
    }

    fn parse(s: &str) -> ApplianceState {
        match s {
            "registered" => ApplianceState::Registered,
            "enrolled" => ApplianceState::Enrolled,
            _ => ApplianceState::Revoked,
        }
    }
}

fn hash_code(code: &str) -> String {
    let normalised: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    ring::digest::digest(&ring::digest::SHA256, normalised.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn new_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let bytes = uuid::Uuid::new_v4();
    let chars: String = bytes
        .as_bytes()
        .iter()
        .take(16)
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    format!(
        "{}-{}-{}-{}",
        &chars[0..4],
        &chars[4..8],
        &chars[8..12],
        &chars[12..16]
    )
}

/// The state of `name`, if registered.
pub async fn state(
    pool: &AnyPool,
    name: &ApplianceId,
) -> Result<Option<ApplianceState>, EnrollError> {
    let row: Option<(String,)> = sqlx::query_as("SELECT state FROM appliances WHERE name = $1")
        .bind(name.as_str())
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|(s,)| ApplianceState::parse(&s)))
}

/// Registers `name` at `site` (or issues a fresh code for a registered, not yet enrolled
/// one) and returns its one-time claim code.
pub async fn register(
    pool: &AnyPool,
    name: &ApplianceId,
    site: &str,
    now: UnixMillis,
) -> Result<String, EnrollError> {
    let mut tx = crate::store::begin_write(pool).await?;
    let code = register_in(&mut tx, name, site, now).await?;
    tx.commit().await?;
    Ok(code)
}

/// [`register`] inside the caller's transaction (which commits it, or not).
pub async fn register_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    name: &ApplianceId,
    site: &str,
    now: UnixMillis,
) -> Result<String, EnrollError> {
    let existing: Option<(String,)> =
        sqlx::query_as("SELECT state FROM appliances WHERE name = $1")
            .bind(name.as_str())
            .fetch_optional(&mut **tx)
            .await?;
    match existing.map(|(s,)| ApplianceState::parse(&s)) {
        Some(ApplianceState::Enrolled) => {
            return Err(EnrollError::AlreadyEnrolled(name.to_string()))
        }
        Some(ApplianceState::Revoked) => return Err(EnrollError::Revoked(name.to_string())),
        Some(ApplianceState::Registered) => {}
        None => {
            sqlx::query(
                "INSERT INTO appliances (name, site, state, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(name.as_str())
            .bind(site)
            .bind(ApplianceState::Registered.as_str())
            .bind(now.0)
            .execute(&mut **tx)
            .await?;
        }
    }
    let code = new_code();
    sqlx::query("INSERT INTO claim_codes (code_hash, appliance, expires_at) VALUES ($1, $2, $3)")
        .bind(hash_code(&code))
        .bind(name.as_str())
        .bind(now.0 + CLAIM_TTL_MS)
        .execute(&mut **tx)
        .await?;
    Ok(code)
}

/// Redeems a claim code with the box's CSR: the code is spent and the certificate issued
/// in one transaction. Each refusal has its own error.
pub async fn enroll(
    pool: &AnyPool,
    ca: &OrgCa,
    code: &str,
    csr_pem: &str,
    now: UnixMillis,
) -> Result<(ApplianceId, Issued), EnrollError> {
    let mut tx = pool.begin().await?;
    let row: Option<(String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT appliance, expires_at, used_at FROM claim_codes WHERE code_hash = $1",
    )
    .bind(hash_code(code))
    .fetch_optional(&mut *tx)
    .await?;
    let (name, expires_at, used_at) = row.ok_or(EnrollError::ClaimUnknown)?;
    if used_at.is_some() {
        return Err(EnrollError::ClaimUsed);
    }
    if now.0 > expires_at {
        return Err(EnrollError::ClaimExpired);
    }
    let name = ApplianceId::new(name)?;
    let (st,): (String,) = sqlx::query_as("SELECT state FROM appliances WHERE name = $1")
        .bind(name.as_str())
        .fetch_one(&mut *tx)
        .await?;
    match ApplianceState::parse(&st) {
        ApplianceState::Enrolled => return Err(EnrollError::AlreadyEnrolled(name.to_string())),
        ApplianceState::Revoked => return Err(EnrollError::Revoked(name.to_string())),
        ApplianceState::Registered => {}
    }
    let issued = ca.sign_appliance_csr(csr_pem, &name, false)?;
    sqlx::query("UPDATE claim_codes SET used_at = $1 WHERE code_hash = $2")
        .bind(now.0)
        .bind(hash_code(code))
        .execute(&mut *tx)
        .await?;
    set_enrolled(&mut tx, &name, &issued).await?;
    tx.commit().await?;
    Ok((name, issued))
}

/// Offline provisioning (a CSR carried from the box by a technician): registers and
/// enrolls in one step. Refuses an enrolled or revoked name like [`enroll`].
pub async fn provision(
    pool: &AnyPool,
    ca: &OrgCa,
    name: &ApplianceId,
    site: &str,
    csr_pem: &str,
    now: UnixMillis,
) -> Result<Issued, EnrollError> {
    // The box named itself in its CSR: insist on it before spending a code.
    ca.sign_appliance_csr(csr_pem, name, true)?;
    let code = register(pool, name, site, now).await?;
    Ok(enroll(pool, ca, &code, csr_pem, now).await?.1)
}

/// Renews an enrolled appliance's certificate from a fresh CSR (new key on the box).
pub async fn renew(
    pool: &AnyPool,
    ca: &OrgCa,
    name: &ApplianceId,
    csr_pem: &str,
) -> Result<Issued, EnrollError> {
    match state(pool, name).await? {
        Some(ApplianceState::Enrolled) => {}
        Some(ApplianceState::Revoked) => return Err(EnrollError::Revoked(name.to_string())),
        _ => return Err(EnrollError::UnknownAppliance(name.to_string())),
    }
    let issued = ca.sign_appliance_csr(csr_pem, name, true)?;
    let mut tx = pool.begin().await?;
    set_enrolled(&mut tx, name, &issued).await?;
    tx.commit().await?;
    Ok(issued)
}

async fn set_enrolled(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    name: &ApplianceId,
    issued: &Issued,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE appliances SET state = $1, cert_serial = $2, cert_not_after = $3 WHERE name = $4",
    )
    .bind(ApplianceState::Enrolled.as_str())
    .bind(&issued.serial)
    .bind(issued.not_after)
    .bind(name.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Revokes `name`: the sync link refuses it and the next broker ACL leaves it out.
pub async fn revoke(pool: &AnyPool, name: &ApplianceId) -> Result<(), EnrollError> {
    let mut tx = pool.begin().await?;
    revoke_in(&mut tx, name).await?;
    tx.commit().await?;
    Ok(())
}

/// [`revoke`] inside the caller's transaction (which commits it, or not).
pub async fn revoke_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    name: &ApplianceId,
) -> Result<(), EnrollError> {
    let done = sqlx::query("UPDATE appliances SET state = $1 WHERE name = $2")
        .bind(ApplianceState::Revoked.as_str())
        .bind(name.as_str())
        .execute(&mut **tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(EnrollError::UnknownAppliance(name.to_string()));
    }
    Ok(())
}

/// An appliance as HQ sees it: registration, certificate, presence and last telemetry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApplianceView {
    pub name: String,
    pub site: String,
    /// `registered`, `enrolled` or `revoked`.
    pub state: String,
    pub created_at: i64,
    /// When its certificate expires, once enrolled.
    pub cert_not_after: Option<i64>,
    /// Connected to the broker now.
    pub online: bool,
    /// Since when it has been online (when online).
    pub online_since: Option<i64>,
    /// Since when it has been offline (when it was seen once and is offline now).
    pub offline_since: Option<i64>,
    /// The last time anything was heard from it.
    pub last_seen_at: Option<i64>,
    /// Firmware from its last Hello.
    pub firmware: Option<String>,
    /// From its last telemetry.
    pub active_calls: Option<i64>,
    /// From its last telemetry: messages waiting on the box.
    pub outbox_depth: Option<i64>,
}

type ViewRow = (
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

const VIEW_SQL: &str = "SELECT a.name, a.site, a.state, a.created_at, a.cert_not_after, \
     p.online, p.since, p.last_seen_at, p.firmware, u.last_seen_at, t.active_calls, \
     t.outbox_depth FROM appliances a \
     LEFT JOIN appliance_presence p ON p.appliance = a.name \
     LEFT JOIN sync_uplink_state u ON u.appliance = a.name \
     LEFT JOIN appliance_telemetry t ON t.appliance = a.name";

fn view_of(r: ViewRow) -> ApplianceView {
    let online = r.5 == Some(1);
    let seen = [r.7.filter(|t| *t > 0), r.9].into_iter().flatten().max();
    ApplianceView {
        name: r.0,
        site: r.1,
        state: r.2,
        created_at: r.3,
        cert_not_after: r.4,
        online,
        online_since: if online { r.6 } else { None },
        offline_since: if r.5 == Some(0) { r.6 } else { None },
        last_seen_at: seen,
        firmware: r.8,
        active_calls: r.10,
        outbox_depth: r.11,
    }
}

/// Appliances by name, `limit` of them, those named after `after` (from the first without).
pub async fn page(
    pool: &AnyPool,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<ApplianceView>, EnrollError> {
    // Keyed by name, not by position: an appliance registered or removed between two
    // pages neither repeats nor hides another.
    let rows: Vec<ViewRow> = sqlx::query_as(&format!(
        "{VIEW_SQL} WHERE a.name > $1 ORDER BY a.name LIMIT $2"
    ))
    .bind(after.unwrap_or(""))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(view_of).collect())
}

/// One appliance, if registered.
pub async fn view(pool: &AnyPool, name: &str) -> Result<Option<ApplianceView>, EnrollError> {
    let row: Option<ViewRow> = sqlx::query_as(&format!("{VIEW_SQL} WHERE a.name = $1"))
        .bind(name)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(view_of))
}

/// Every enrolled (not revoked) appliance, for the broker ACL.
pub async fn enrolled(pool: &AnyPool) -> Result<Vec<ApplianceId>, EnrollError> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM appliances WHERE state = $1 ORDER BY name")
            .bind(ApplianceState::Enrolled.as_str())
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(n,)| ApplianceId::new(n).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn csr(cn: &str) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.serialize_request(&key).unwrap().pem().unwrap()
    }

    #[tokio::test]
    async fn claim_codes_are_single_use_expire_and_each_refusal_is_distinct() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), None).await.unwrap();
        let ca = OrgCa::load_or_create(&dir.path().join("pki")).unwrap();
        let pool = store.pool();
        let name = ApplianceId::new("branch-1").unwrap();
        let t0 = UnixMillis(1_700_000_000_000);
        let code = register(pool, &name, "leeds", t0).await.unwrap();

        let wrong = enroll(pool, &ca, "AAAA-BBBB-CCCC-DDDD", &csr("branch-1"), t0).await;
        assert!(matches!(wrong, Err(EnrollError::ClaimUnknown)));
        let (who, _) = enroll(pool, &ca, &code.to_lowercase(), &csr("branch-1"), t0)
            .await
            .unwrap();
        assert_eq!(who, name);
        let used = enroll(pool, &ca, &code, &csr("branch-1"), t0).await;
        assert!(matches!(used, Err(EnrollError::ClaimUsed)));
        let again = register(pool, &name, "leeds", t0).await;
        assert!(matches!(again, Err(EnrollError::AlreadyEnrolled(_))));

        let other = ApplianceId::new("branch-2").unwrap();
        let code2 = register(pool, &other, "york", t0).await.unwrap();
        let late = enroll(
            pool,
            &ca,
            &code2,
            &csr("branch-2"),
            t0.plus_millis(CLAIM_TTL_MS + 1),
        )
        .await;
        assert!(matches!(late, Err(EnrollError::ClaimExpired)));

        assert_eq!(enrolled(pool).await.unwrap(), vec![name.clone()]);
        renew(pool, &ca, &name, &csr("branch-1")).await.unwrap();
        revoke(pool, &name).await.unwrap();
        assert_eq!(enrolled(pool).await.unwrap(), vec![]);
        assert!(matches!(
            renew(pool, &ca, &name, &csr("branch-1")).await,
            Err(EnrollError::Revoked(_))
        ));
    }
}
