//! Who may use the local web UI, and how they prove it.
//!
//! - The box ships with **no default password**. At first boot the technician creates the
//!   admin account with the setup code printed on the box's label ([`SetupCode`]; on the
//!   image a root-only file shown on the serial console).
//! - Passwords are stored as argon2id hashes ([`hash_password`]); the account works without
//!   the cloud.
//! - Failed logins are throttled per source address and for the account as a whole
//!   ([`LoginThrottle`], a sans-IO core with explicit time).
//! - Sessions ([`Sessions`]) live in the box's SQLite store under the SHA-256 of their cookie
//!   value, expire after an idle period and an absolute lifetime, and each carries the CSRF
//!   token every form must return.
//! - Every store write of the web pages (technician and agent) goes through
//!   [`write_retrying`]: it takes SQLite's write lock first (`BEGIN IMMEDIATE`) and retries a
//!   busy store for a bounded time, so a page does not answer 503 while the store is merely
//!   busy with the dialer's and the outbox's commits.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use callgate_common::time::UnixMillis;
use futures_util::future::BoxFuture;
use ring::rand::{SecureRandom, SystemRandom};
use sqlx::{SqliteConnection, SqlitePool};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a page's store write keeps retrying a busy store before it reports the failure.
/// Each try itself waits out the store's busy timeout (5 s) first.
pub(crate) const BUSY_RETRY_FOR: Duration = Duration::from_secs(30);

/// Whether `e` means the store is busy rather than broken: the write lock stayed taken past
/// the busy timeout (`SQLITE_BUSY`, `SQLITE_LOCKED` and their extended codes), or no pooled
/// connection came free in time. Such a write can succeed when tried again.
pub(crate) fn is_busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(d) => d
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|c| matches!(c & 0xff, 5 | 6)),
        _ => false,
    }
}

/// Runs `op` in one write transaction (`BEGIN IMMEDIATE`, see
/// [`crate::sync::outbox_store::begin_write`]) and commits it. A busy store ([`is_busy`]) is
/// tried again with a growing pause, each retry logged, for at most [`BUSY_RETRY_FOR`];
/// other errors, and a store still busy after that, are returned. `what` names the write in
/// the log.
pub(crate) async fn write_retrying<T, F>(
    pool: &SqlitePool,
    what: &'static str,
    op: F,
) -> Result<T, sqlx::Error>
where
    F: for<'c> FnMut(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, sqlx::Error>>,
{
    write_retrying_for(pool, what, BUSY_RETRY_FOR, op).await
}

/// [`write_retrying`] with its bound given.
async fn write_retrying_for<T, F>(
    pool: &SqlitePool,
    what: &'static str,
    retry_for: Duration,
    mut op: F,
) -> Result<T, sqlx::Error>
where
    F: for<'c> FnMut(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, sqlx::Error>>,
{
    let started = Instant::now();
    let mut pause = Duration::from_millis(20);
    let mut attempt = 1u32;
    loop {
        let result = async {
            let mut tx = crate::sync::outbox_store::begin_write(pool).await?;
            let value = op(&mut tx).await?;
            tx.commit().await?;
            Ok(value)
        }
        .await;
        match result {
            Err(e) if is_busy(&e) && started.elapsed() + pause < retry_for => {
                tracing::warn!(error = %e, what, attempt, "store busy; the web page's write is tried again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
                attempt += 1;
            }
            Err(e) => {
                if is_busy(&e) {
                    tracing::error!(error = %e, what, attempt, "store still busy; the web page's write gave up");
                }
                return Err(e);
            }
            Ok(v) => return Ok(v),
        }
    }
}

/// Why an account could not be created or a password changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccountError {
    /// The setup code did not match the one on the box's label.
    #[error("the setup code is not the one on the box's label")]
    WrongSetupCode,
    /// The admin account already exists; setup is over.
    #[error("the admin account already exists")]
    AlreadySetUp,
    /// The username is empty, too long or has characters other than letters, digits, `.-_`.
    #[error("username must be 1 to 32 letters, digits, `.`, `-` or `_`")]
    BadUsername,
    /// The password is too weak.
    #[error("password {0}")]
    WeakPassword(&'static str),
    /// The two password fields differ.
    #[error("the two passwords differ")]
    PasswordMismatch,
    /// The current password given for a change is wrong.
    #[error("the current password is wrong")]
    WrongCurrentPassword,
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
}

impl From<sqlx::Error> for AccountError {
    fn from(e: sqlx::Error) -> Self {
        AccountError::Store(e.to_string())
    }
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && std::hint::black_box(a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y))) == 0
}

/// Random bytes as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut buf)
        .expect("the system random source is available");
    hex::encode(buf)
}

/// An argon2id hash (PHC string) of `password` with a fresh salt.
pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .expect("the system random source is available");
    let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid salt length");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters hashes any password")
        .to_string()
}

/// Whether `password` matches the PHC `hash`.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Checks a new password against the policy.
pub fn check_new_password(
    username: &str,
    password: &str,
    confirm: &str,
    setup_code: Option<&str>,
) -> Result<(), AccountError> {
    if password != confirm {
        return Err(AccountError::PasswordMismatch);
    }
    if password.chars().count() < 12 {
        return Err(AccountError::WeakPassword("must be at least 12 characters"));
    }
    if password.len() > 256 {
        return Err(AccountError::WeakPassword("must be at most 256 bytes"));
    }
    if password.eq_ignore_ascii_case(username) {
        return Err(AccountError::WeakPassword("must differ from the username"));
    }
    if setup_code.is_some_and(|c| password.eq_ignore_ascii_case(c)) {
        return Err(AccountError::WeakPassword(
            "must differ from the setup code",
        ));
    }
    Ok(())
}

fn check_username(username: &str) -> Result<(), AccountError> {
    let ok = !username.is_empty()
        && username.len() <= 32
        && username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(AccountError::BadUsername)
    }
}

/// The code on the box's label that authorises creating the admin account.
#[derive(Clone)]
pub struct SetupCode(String);

impl std::fmt::Debug for SetupCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SetupCode(***)")
    }
}

/// Letters and digits that cannot be misread on a label (no 0/O, 1/I/L).
const LABEL_ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";

impl SetupCode {
    /// Reads the code from `path`; on a development machine with no label, creates it (mode
    /// 0600) so the file plays the label's part.
    pub fn load_or_create(path: &Path) -> std::io::Result<SetupCode> {
        match std::fs::read_to_string(path) {
            Ok(s) => Ok(SetupCode(s.trim().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut raw = [0u8; 10];
                SystemRandom::new()
                    .fill(&mut raw)
                    .map_err(|_| std::io::Error::other("no system randomness"))?;
                let code: String = raw
                    .iter()
                    .map(|b| LABEL_ALPHABET[usize::from(*b) % LABEL_ALPHABET.len()] as char)
                    .collect();
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)?;
                writeln!(f, "{code}")?;
                Ok(SetupCode(code))
            }
            Err(e) => Err(e),
        }
    }

    /// Compares in constant time, ignoring case, spaces and dashes.
    pub fn matches(&self, typed: &str) -> bool {
        let norm = |s: &str| -> Vec<u8> {
            s.bytes()
                .filter(|b| !b" -".contains(b))
                .map(|b| b.to_ascii_uppercase())
                .collect()
        };
        let (a, b) = (norm(&self.0), norm(typed));
        constant_time_eq(&a, &b)
    }

    /// The code itself (for the password policy).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Limits on failed logins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failures from one address within `window_ms` that lock that address.
    pub per_source: u32,
    /// Failures from all addresses within `window_ms` that lock the account.
    pub per_account: u32,
    /// The counting window, and how long a lock lasts.
    pub window_ms: i64,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        ThrottlePolicy {
            per_source: 5,
            per_account: 20,
            window_ms: 15 * 60 * 1000,
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Failures {
    first_ms: i64,
    count: u32,
    locked_until_ms: Option<i64>,
}

impl Failures {
    fn locked(&self, now: i64) -> Option<i64> {
        self.locked_until_ms.filter(|u| *u > now)
    }
    fn fail(&mut self, now: i64, limit: u32, window: i64) {
        if now - self.first_ms > window {
            *self = Failures {
                first_ms: now,
                ..Failures::default()
            };
        }
        self.count += 1;
        if self.count >= limit {
            self.locked_until_ms = Some(now + window);
        }
    }
}

/// Failed-login accounting: a sans-IO core, time passed in.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    policy: ThrottlePolicy,
    sources: HashMap<IpAddr, Failures>,
    account: Failures,
}

/// Sources remembered at most; the oldest are forgotten first (a flood of addresses cannot
/// grow the map without bound, and the account-wide limit still holds).
const MAX_SOURCES: usize = 10_000;

impl LoginThrottle {
    /// A throttle with `policy`.
    pub fn new(policy: ThrottlePolicy) -> Self {
        LoginThrottle {
            policy,
            ..LoginThrottle::default()
        }
    }

    /// `Err(until)` when logins from `source` are locked at `now`.
    pub fn check(&self, now: UnixMillis, source: IpAddr) -> Result<(), UnixMillis> {
        let until = [
            self.sources.get(&source).and_then(|f| f.locked(now.0)),
            self.account.locked(now.0),
        ]
        .into_iter()
        .flatten()
        .max();
        match until {
            Some(u) => Err(UnixMillis(u)),
            None => Ok(()),
        }
    }

    /// A wrong password from `source`.
    pub fn record_failure(&mut self, now: UnixMillis, source: IpAddr) {
        if self.sources.len() >= MAX_SOURCES && !self.sources.contains_key(&source) {
            let window = self.policy.window_ms;
            self.sources
                .retain(|_, f| f.locked(now.0).is_some() || now.0 - f.first_ms <= window);
            if self.sources.len() >= MAX_SOURCES {
                if let Some(oldest) = self
                    .sources
                    .iter()
                    .min_by_key(|(_, f)| f.first_ms)
                    .map(|(ip, _)| *ip)
                {
                    self.sources.remove(&oldest);
                }
            }
        }
        let p = self.policy;
        self.sources
            .entry(source)
            .or_insert_with(|| Failures {
                first_ms: now.0,
                ..Failures::default()
            })
            .fail(now.0, p.per_source, p.window_ms);
        self.account.fail(now.0, p.per_account, p.window_ms);
    }

    /// A successful login from `source` clears that source's failures.
    pub fn record_success(&mut self, source: IpAddr) {
        self.sources.remove(&source);
    }
}

/// How long sessions last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    /// Idle time after which a session ends.
    pub idle_ms: i64,
    /// Lifetime after which a session ends however active.
    pub absolute_ms: i64,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy {
            idle_ms: 30 * 60 * 1000,
            absolute_ms: 12 * 3600 * 1000,
        }
    }
}

/// A logged-in technician.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The account.
    pub username: String,
    /// The token every form must carry.
    pub csrf_token: String,
}

/// The admin account and sessions in the box's store.
#[derive(Debug, Clone)]
pub struct Sessions {
    pool: SqlitePool,
    policy: SessionPolicy,
}

pub(crate) fn token_hash(token: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
}

impl Sessions {
    /// Accounts and sessions in `pool`.
    pub fn new(pool: SqlitePool, policy: SessionPolicy) -> Self {
        Sessions { pool, policy }
    }

    /// Whether first-boot setup is done.
    pub async fn admin_exists(&self) -> Result<bool, AccountError> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM web_admin")
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    /// First-boot setup: creates the only admin account.
    pub async fn create_admin(
        &self,
        now: UnixMillis,
        code: &SetupCode,
        typed_code: &str,
        username: &str,
        password: &str,
        confirm: &str,
    ) -> Result<(), AccountError> {
        if !code.matches(typed_code) {
            return Err(AccountError::WrongSetupCode);
        }
        check_username(username)?;
        check_new_password(username, password, confirm, Some(code.as_str()))?;
        let hash = hash_password(password);
        // One statement in a write transaction: SQLite holds the write lock before it reads,
        // so no other writer (the dialer settling its store at start) can commit in between.
        let username_owned = username.to_string();
        let inserted = write_retrying(&self.pool, "first admin account", |c| {
            let (username, hash) = (username_owned.clone(), hash.clone());
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO web_admin SELECT ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM web_admin)",
                )
                .bind(username)
                .bind(hash)
                .bind(now.0)
                .bind(now.0)
                .execute(c)
                .await
            })
        })
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(AccountError::AlreadySetUp);
        }
        Ok(())
    }

    /// Checks a login; `Ok(true)` when the credentials are right.
    pub async fn verify(&self, username: &str, password: &str) -> Result<bool, AccountError> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT password_hash FROM web_admin WHERE username = ?")
                .bind(username)
                .fetch_optional(&self.pool)
                .await?;
        Ok(match row {
            Some((hash,)) => verify_password(&hash, password),
            None => {
                // Same work for an unknown user, so timing does not reveal usernames.
                let _ = verify_password(dummy_hash(), password);
                false
            }
        })
    }

    /// Starts a session; returns the cookie value.
    pub async fn open(&self, now: UnixMillis, username: &str) -> Result<String, AccountError> {
        let token = random_hex(32);
        let (hash, username, csrf) = (token_hash(&token), username.to_string(), random_hex(16));
        write_retrying(&self.pool, "technician session", |c| {
            let (hash, username, csrf) = (hash.clone(), username.clone(), csrf.clone());
            Box::pin(async move {
                sqlx::query("INSERT INTO web_session VALUES (?, ?, ?, ?, ?)")
                    .bind(hash)
                    .bind(username)
                    .bind(csrf)
                    .bind(now.0)
                    .bind(now.0)
                    .execute(c)
                    .await
            })
        })
        .await?;
        Ok(token)
    }

    /// The live session for `token` at `now`, extending its idle timer; expired sessions are
    /// deleted.
    pub async fn lookup(
        &self,
        now: UnixMillis,
        token: &str,
    ) -> Result<Option<Session>, AccountError> {
        let hash = token_hash(token);
        let row: Option<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT username, csrf_token, created_at_ms, last_seen_ms FROM web_session WHERE token_hash = ?",
        )
        .bind(&hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some((username, csrf_token, created, seen)) = row else {
            return Ok(None);
        };
        if now.0 - seen > self.policy.idle_ms || now.0 - created > self.policy.absolute_ms {
            write_retrying(&self.pool, "expired technician session", |c| {
                let hash = hash.clone();
                Box::pin(async move {
                    sqlx::query("DELETE FROM web_session WHERE token_hash = ?")
                        .bind(hash)
                        .execute(c)
                        .await
                })
            })
            .await?;
            return Ok(None);
        }
        write_retrying(&self.pool, "technician session seen", |c| {
            let hash = hash.clone();
            Box::pin(async move {
                sqlx::query("UPDATE web_session SET last_seen_ms = ? WHERE token_hash = ?")
                    .bind(now.0)
                    .bind(hash)
                    .execute(c)
                    .await
            })
        })
        .await?;
        Ok(Some(Session {
            username,
            csrf_token,
        }))
    }

    /// Ends one session.
    pub async fn close(&self, token: &str) -> Result<(), AccountError> {
        let hash = token_hash(token);
        write_retrying(&self.pool, "technician logout", |c| {
            let hash = hash.clone();
            Box::pin(async move {
                sqlx::query("DELETE FROM web_session WHERE token_hash = ?")
                    .bind(hash)
                    .execute(c)
                    .await
            })
        })
        .await?;
        Ok(())
    }

    /// Changes the password and ends every other session of the account.
    pub async fn change_password(
        &self,
        now: UnixMillis,
        username: &str,
        current: &str,
        new: &str,
        confirm: &str,
        keep_token: &str,
    ) -> Result<(), AccountError> {
        if !self.verify(username, current).await? {
            return Err(AccountError::WrongCurrentPassword);
        }
        check_new_password(username, new, confirm, None)?;
        let (hash, username, keep) = (
            hash_password(new),
            username.to_string(),
            token_hash(keep_token),
        );
        write_retrying(&self.pool, "password change", |c| {
            let (hash, username, keep) = (hash.clone(), username.clone(), keep.clone());
            Box::pin(async move {
                sqlx::query(
                    "UPDATE web_admin SET password_hash = ?, updated_at_ms = ? WHERE username = ?",
                )
                .bind(hash)
                .bind(now.0)
                .bind(&username)
                .execute(&mut *c)
                .await?;
                sqlx::query("DELETE FROM web_session WHERE username = ? AND token_hash <> ?")
                    .bind(&username)
                    .bind(keep)
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        })
        .await?;
        Ok(())
    }
}

/// An argon2id hash of a random password, verified against for unknown usernames.
pub(crate) fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password(&random_hex(16)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    #[test]
    fn five_failures_lock_one_source_for_the_window_and_not_the_others() {
        let mut t = LoginThrottle::new(ThrottlePolicy::default());
        for i in 0..5 {
            assert!(t.check(UnixMillis(i * 1000), ip(1)).is_ok(), "attempt {i}");
            t.record_failure(UnixMillis(i * 1000), ip(1));
        }
        assert_eq!(
            t.check(UnixMillis(5_000), ip(1)),
            Err(UnixMillis(4_000 + 900_000))
        );
        assert!(
            t.check(UnixMillis(5_000), ip(2)).is_ok(),
            "other sources still log in"
        );
        assert!(
            t.check(UnixMillis(904_001), ip(1)).is_ok(),
            "the lock expires"
        );
    }

    #[test]
    fn failures_spread_over_many_sources_lock_the_account() {
        let mut t = LoginThrottle::new(ThrottlePolicy::default());
        for i in 0..20u8 {
            t.record_failure(UnixMillis(i64::from(i)), ip(i));
        }
        assert!(
            t.check(UnixMillis(100), ip(200)).is_err(),
            "account-wide lock"
        );
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let mut t = LoginThrottle::new(ThrottlePolicy::default());
        for i in 0..10 {
            // One failure every 20 minutes: never 5 within 15 minutes.
            t.record_failure(UnixMillis(i * 20 * 60 * 1000), ip(1));
            assert!(t.check(UnixMillis(i * 20 * 60 * 1000 + 1), ip(1)).is_ok());
        }
    }

    #[test]
    fn a_flood_of_addresses_cannot_grow_the_map_without_bound() {
        let mut t = LoginThrottle::new(ThrottlePolicy {
            per_account: u32::MAX,
            ..ThrottlePolicy::default()
        });
        for i in 0..(MAX_SOURCES as u32 + 500) {
            t.record_failure(UnixMillis(i64::from(i)), IpAddr::from(i.to_be_bytes()));
        }
        assert!(t.sources.len() <= MAX_SOURCES);
    }

    #[test]
    fn password_policy_names_what_is_wrong() {
        assert_eq!(
            check_new_password("tech", "short", "short", None),
            Err(AccountError::WeakPassword("must be at least 12 characters"))
        );
        assert_eq!(
            check_new_password("tech", "longenough-1", "longenough-2", None),
            Err(AccountError::PasswordMismatch)
        );
        assert!(check_new_password("technician12", "TECHNICIAN12", "TECHNICIAN12", None).is_err());
        assert!(
            check_new_password("t", "ABCDEFGHJKMN", "ABCDEFGHJKMN", Some("abcdefghjkmn")).is_err()
        );
        assert!(check_new_password(
            "tech",
            "correct horse battery",
            "correct horse battery",
            None
        )
        .is_ok());
    }

    #[test]
    fn hashes_verify_only_their_own_password_and_the_dummy_is_well_formed() {
        let h = hash_password("correct horse battery");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "correct horse battery"));
        assert!(!verify_password(&h, "correct horse batterY"));
        assert!(PasswordHash::new(dummy_hash()).is_ok());
    }

    #[test]
    fn setup_codes_are_created_once_private_and_compared_leniently() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("label/setup-code");
        let code = SetupCode::load_or_create(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = SetupCode::load_or_create(&path).unwrap();
        assert_eq!(code.as_str(), again.as_str());
        let typed = format!(
            "{}-{}",
            &code.as_str()[..5],
            code.as_str()[5..].to_lowercase()
        );
        assert!(code.matches(&typed));
        assert!(!code.matches("WRONGCODE2"));
        assert!(!format!("{code:?}").contains(code.as_str()));
    }

    /// A store whose busy timeout is short, so a held write lock shows as `SQLITE_BUSY` fast.
    async fn impatient_store(dir: &Path) -> SqlitePool {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.join("busy.db"))
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_millis(50));
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (v INTEGER)")
            .execute(&pool)
            .await
            .unwrap();
        pool
    }

    fn insert(
        v: i64,
    ) -> impl for<'c> FnMut(&'c mut SqliteConnection) -> BoxFuture<'c, Result<(), sqlx::Error>>
    {
        move |c| {
            Box::pin(async move {
                sqlx::query("INSERT INTO t VALUES (?)")
                    .bind(v)
                    .execute(c)
                    .await
                    .map(|_| ())
            })
        }
    }

    #[tokio::test]
    async fn a_page_write_waits_out_a_busy_store_and_gives_up_only_after_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let pool = impatient_store(dir.path()).await;
        // Another writer holds the write lock for 600 ms (far past the 50-ms busy timeout).
        let mut holder = crate::sync::outbox_store::begin_write(&pool).await.unwrap();
        sqlx::query("INSERT INTO t VALUES (0)")
            .execute(&mut *holder)
            .await
            .unwrap();
        let plain = sqlx::query("INSERT INTO t VALUES (9)").execute(&pool).await;
        assert!(
            plain.as_ref().is_err_and(is_busy),
            "the set-up must make a plain write fail busy: {plain:?}"
        );
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(600)).await;
            holder.commit().await.unwrap();
        });
        write_retrying_for(&pool, "test", Duration::from_secs(20), insert(1))
            .await
            .expect("the write succeeds once the lock is free");
        release.await.unwrap();
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM t WHERE v IN (0, 1)")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(
            n, 2,
            "the holder's row and the retried write are both there"
        );

        // A lock held longer than the bound: the write reports busy, after the bound, not never.
        let mut holder = crate::sync::outbox_store::begin_write(&pool).await.unwrap();
        sqlx::query("INSERT INTO t VALUES (2)")
            .execute(&mut *holder)
            .await
            .unwrap();
        let started = Instant::now();
        let r = write_retrying_for(&pool, "test", Duration::from_millis(300), insert(3)).await;
        assert!(r.as_ref().is_err_and(is_busy), "{r:?}");
        assert!(started.elapsed() >= Duration::from_millis(150));
        holder.commit().await.unwrap();
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM t WHERE v = 3")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, 0, "a write that gave up left nothing half-done");
    }

    async fn sessions(policy: SessionPolicy) -> (Sessions, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).await.unwrap();
        (Sessions::new(store.pool().clone(), policy), dir)
    }

    #[tokio::test]
    async fn first_boot_setup_happens_once_and_needs_the_label_code() {
        let (s, dir) = sessions(SessionPolicy::default()).await;
        let code = SetupCode::load_or_create(&dir.path().join("code")).unwrap();
        let now = UnixMillis(1);
        let pw = "correct horse battery";
        assert_eq!(
            s.create_admin(now, &code, "nope", "tech", pw, pw).await,
            Err(AccountError::WrongSetupCode)
        );
        assert!(
            !s.admin_exists().await.unwrap(),
            "nothing created on a refusal"
        );
        s.create_admin(now, &code, code.as_str(), "tech", pw, pw)
            .await
            .unwrap();
        assert_eq!(
            s.create_admin(now, &code, code.as_str(), "other", pw, pw)
                .await,
            Err(AccountError::AlreadySetUp)
        );
        assert!(s.verify("tech", pw).await.unwrap());
        assert!(!s.verify("tech", "wrong password!").await.unwrap());
        assert!(!s.verify("nobody", pw).await.unwrap());
    }

    #[tokio::test]
    async fn sessions_expire_when_idle_and_at_their_absolute_limit() {
        let policy = SessionPolicy {
            idle_ms: 1_000,
            absolute_ms: 5_000,
        };
        let (s, dir) = sessions(policy).await;
        let code = SetupCode::load_or_create(&dir.path().join("code")).unwrap();
        let pw = "correct horse battery";
        s.create_admin(UnixMillis(0), &code, code.as_str(), "tech", pw, pw)
            .await
            .unwrap();
        let token = s.open(UnixMillis(0), "tech").await.unwrap();
        // Active every 900 ms: survives idle checks until the absolute limit.
        for t in (900..5_000).step_by(900) {
            assert!(
                s.lookup(UnixMillis(t), &token).await.unwrap().is_some(),
                "at {t}"
            );
        }
        assert!(s.lookup(UnixMillis(5_001), &token).await.unwrap().is_none());
        let idle = s.open(UnixMillis(10_000), "tech").await.unwrap();
        assert!(s.lookup(UnixMillis(11_001), &idle).await.unwrap().is_none());
        assert!(s
            .lookup(UnixMillis(0), "not-a-token")
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn a_password_change_ends_the_other_sessions() {
        let (s, dir) = sessions(SessionPolicy::default()).await;
        let code = SetupCode::load_or_create(&dir.path().join("code")).unwrap();
        let pw = "correct horse battery";
        s.create_admin(UnixMillis(0), &code, code.as_str(), "tech", pw, pw)
            .await
            .unwrap();
        let mine = s.open(UnixMillis(0), "tech").await.unwrap();
        let other = s.open(UnixMillis(0), "tech").await.unwrap();
        let new = "another long passphrase";
        assert_eq!(
            s.change_password(UnixMillis(1), "tech", "wrong", new, new, &mine)
                .await,
            Err(AccountError::WrongCurrentPassword)
        );
        s.change_password(UnixMillis(1), "tech", pw, new, new, &mine)
            .await
            .unwrap();
        assert!(s.lookup(UnixMillis(2), &mine).await.unwrap().is_some());
        assert!(s.lookup(UnixMillis(2), &other).await.unwrap().is_none());
        assert!(s.verify("tech", new).await.unwrap());
    }
}
