//! Who may use the console and what each may do.
//!
//! - Users ([`User`]) have one [`Role`]; passwords are argon2id hashes. The first admin is
//!   created from the CLI (`create-console-user`) or, when the console starts with no user
//!   at all, with a random password printed once ([`ensure_first_admin`]).
//! - [`Role::may`] is the single table of who may do what; every route asks it.
//! - Sessions ([`Sessions`]) are stored under the SHA-256 of the cookie value, expire after
//!   an idle period and an absolute lifetime, and carry the CSRF token every form returns.
//! - Failed logins are throttled per source address and per username ([`LoginThrottle`], a
//!   sans-IO core with time passed in).
//!
//! Every change to users goes through [`super::audit`] in the same transaction.

use super::audit::{self, Actor};
use super::ConsoleError;
use crate::store::Store;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use callgate_common::time::UnixMillis;
use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;
use std::collections::HashMap;
use std::net::IpAddr;

/// A console user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including users and appliances.
    Admin,
    /// Runs campaigns, contact lists and routing.
    Supervisor,
    /// Owns DNC lists and compliance profiles.
    Compliance,
    /// Reads everything, changes nothing.
    Viewer,
}

/// Something a route does that not every role may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Read any page.
    View,
    /// Create, edit, start, pause and stop campaigns; upload contact lists.
    RunCampaigns,
    /// Edit the routing policy.
    EditRouting,
    /// Manage DNC entries and compliance profiles.
    EditCompliance,
    /// Register and revoke appliances.
    ManageFleet,
    /// Create, change and disable console users.
    ManageUsers,
    /// Read the audit log.
    ReadAudit,
}

impl Role {
    /// Every role, for forms.
    pub const ALL: [Role; 4] = [
        Role::Admin,
        Role::Supervisor,
        Role::Compliance,
        Role::Viewer,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Supervisor => "supervisor",
            Role::Compliance => "compliance",
            Role::Viewer => "viewer",
        }
    }

    /// The name shown on pages.
    pub fn label(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Supervisor => "supervisor",
            Role::Compliance => "compliance officer",
            Role::Viewer => "viewer",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether this role may do `p`.
    pub fn may(self, p: Permission) -> bool {
        use Permission as P;
        match self {
            Role::Admin => true,
            Role::Supervisor => matches!(p, P::View | P::RunCampaigns | P::EditRouting),
            Role::Compliance => matches!(p, P::View | P::EditCompliance | P::ReadAudit),
            Role::Viewer => matches!(p, P::View),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// A console user (never the hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub role: Role,
    pub enabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Random bytes as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut buf)
        .expect("the system random source is available");
    hex::encode(buf)
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && std::hint::black_box(a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y))) == 0
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

fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password(&random_hex(16)))
}

/// Checks a username: 1 to 64 letters, digits, `.`, `-`, `_`, `@`.
pub fn check_username(username: &str) -> Result<(), ConsoleError> {
    let ok = !username.is_empty()
        && username.len() <= 64
        && username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ConsoleError::invalid(
            "username",
            "must be 1 to 64 letters, digits, `.`, `-`, `_` or `@`",
        ))
    }
}

/// Checks a new password: 12 to 256 bytes, not the username.
pub fn check_password(username: &str, password: &str) -> Result<(), ConsoleError> {
    if password.chars().count() < 12 {
        return Err(ConsoleError::invalid(
            "password",
            "must be at least 12 characters",
        ));
    }
    if password.len() > 256 {
        return Err(ConsoleError::invalid(
            "password",
            "must be at most 256 bytes",
        ));
    }
    if password.eq_ignore_ascii_case(username) {
        return Err(ConsoleError::invalid(
            "password",
            "must differ from the username",
        ));
    }
    Ok(())
}

type UserRow = (i64, String, String, i64, i64, i64);
const USER_COLUMNS: &str =
    "SELECT id, username, role, enabled, created_at, updated_at FROM console_users";

fn user_of(r: UserRow) -> User {
    User {
        id: r.0,
        username: r.1,
        role: Role::parse(&r.2).unwrap_or(Role::Viewer),
        enabled: r.3 != 0,
        created_at: r.4,
        updated_at: r.5,
    }
}

/// Every user, by name.
pub async fn users(store: &Store) -> Result<Vec<User>, ConsoleError> {
    let rows: Vec<UserRow> = sqlx::query_as(&format!("{USER_COLUMNS} ORDER BY username"))
        .fetch_all(store.pool())
        .await?;
    Ok(rows.into_iter().map(user_of).collect())
}

/// One user.
pub async fn user(store: &Store, id: i64) -> Result<User, ConsoleError> {
    let row: Option<UserRow> = sqlx::query_as(&format!("{USER_COLUMNS} WHERE id = $1"))
        .bind(id)
        .fetch_optional(store.pool())
        .await?;
    row.map(user_of).ok_or(ConsoleError::NotFound("user"))
}

/// Creates a user; audited as `actor`.
pub async fn create_user(
    store: &Store,
    actor: &Actor,
    username: &str,
    role: Role,
    password: &str,
) -> Result<User, ConsoleError> {
    check_username(username)?;
    check_password(username, password)?;
    let now = UnixMillis::now().0;
    let mut tx = store.begin_write().await?;
    let row: Result<(i64,), sqlx::Error> = sqlx::query_as(
        "INSERT INTO console_users (username, role, password_hash, enabled, created_at, updated_at) \
         VALUES ($1, $2, $3, 1, $4, $4) RETURNING id",
    )
    .bind(username)
    .bind(role.as_str())
    .bind(hash_password(password))
    .bind(now)
    .fetch_one(&mut *tx)
    .await;
    let id = match row {
        Ok((id,)) => id,
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(ConsoleError::invalid("username", "is already taken"))
        }
        Err(e) => return Err(e.into()),
    };
    let created = User {
        id,
        username: username.to_string(),
        role,
        enabled: true,
        created_at: now,
        updated_at: now,
    };
    audit::record(
        &mut tx,
        actor,
        "user.create",
        &format!("user:{username}"),
        None::<&User>,
        Some(&created),
    )
    .await?;
    tx.commit().await?;
    Ok(created)
}

/// Changes a user's role and enabled flag, and the password when `password` is given;
/// disabling a user or changing the password ends their sessions. Audited as `actor`.
pub async fn update_user(
    store: &Store,
    actor: &Actor,
    id: i64,
    role: Role,
    enabled: bool,
    password: Option<&str>,
) -> Result<User, ConsoleError> {
    let before = user(store, id).await?;
    if let Some(p) = password {
        check_password(&before.username, p)?;
    }
    if before.role == Role::Admin && (role != Role::Admin || !enabled) {
        let (admins,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM console_users WHERE role = 'admin' AND enabled = 1",
        )
        .fetch_one(store.pool())
        .await?;
        if admins <= 1 && before.enabled {
            return Err(ConsoleError::invalid(
                "role",
                "the last enabled admin cannot be demoted or disabled",
            ));
        }
    }
    let now = UnixMillis::now().0;
    let mut tx = store.begin_write().await?;
    sqlx::query("UPDATE console_users SET role = $1, enabled = $2, updated_at = $3 WHERE id = $4")
        .bind(role.as_str())
        .bind(i64::from(enabled))
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if let Some(p) = password {
        sqlx::query("UPDATE console_users SET password_hash = $1 WHERE id = $2")
            .bind(hash_password(p))
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    if !enabled || password.is_some() {
        sqlx::query("DELETE FROM console_sessions WHERE user_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    let after = User {
        role,
        enabled,
        updated_at: now,
        ..before.clone()
    };
    #[derive(Serialize)]
    struct Change<'a> {
        #[serde(flatten)]
        user: &'a User,
        password_changed: bool,
    }
    audit::record(
        &mut tx,
        actor,
        "user.update",
        &format!("user:{}", before.username),
        Some(&before),
        Some(&Change {
            user: &after,
            password_changed: password.is_some(),
        }),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

/// When no user exists, creates `admin` with a random password and returns it (to be
/// printed once); `None` when users exist already.
pub async fn ensure_first_admin(store: &Store) -> Result<Option<(String, String)>, ConsoleError> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM console_users")
        .fetch_one(store.pool())
        .await?;
    if n > 0 {
        return Ok(None);
    }
    let password = random_hex(12);
    create_user(store, &Actor::system(), "admin", Role::Admin, &password).await?;
    Ok(Some(("admin".to_string(), password)))
}

/// Checks a login; the user when the credentials are right and the account is enabled.
pub async fn verify_login(
    store: &Store,
    username: &str,
    password: &str,
) -> Result<Option<User>, ConsoleError> {
    let row: Option<(i64, String)> = sqlx::query_as(
        "SELECT id, password_hash FROM console_users WHERE username = $1 AND enabled = 1",
    )
    .bind(username)
    .fetch_optional(store.pool())
    .await?;
    match row {
        Some((id, hash)) if verify_password(&hash, password) => Ok(Some(user(store, id).await?)),
        Some(_) => Ok(None),
        None => {
            // Same work for an unknown user, so timing does not reveal usernames.
            let _ = verify_password(dummy_hash(), password);
            Ok(None)
        }
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

/// A logged-in user and the session's CSRF token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: User,
    pub csrf_token: String,
}

/// Sessions in the store.
#[derive(Debug, Clone)]
pub struct Sessions {
    store: Store,
    policy: SessionPolicy,
}

fn token_hash(token: &str) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        token.as_bytes(),
    ))
}

impl Sessions {
    /// Sessions in `store`.
    pub fn new(store: Store, policy: SessionPolicy) -> Self {
        Sessions { store, policy }
    }

    /// Starts a session for `user`; returns the cookie value.
    pub async fn open(&self, now: UnixMillis, user: &User) -> Result<String, ConsoleError> {
        let token = random_hex(32);
        sqlx::query(
            "INSERT INTO console_sessions (token_hash, user_id, csrf_token, created_at, last_seen_at) \
             VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(token_hash(&token))
        .bind(user.id)
        .bind(random_hex(16))
        .bind(now.0)
        .execute(self.store.pool())
        .await?;
        Ok(token)
    }

    /// The live session for `token` at `now` (its user enabled), extending its idle timer;
    /// an expired session is deleted.
    pub async fn lookup(
        &self,
        now: UnixMillis,
        token: &str,
    ) -> Result<Option<Session>, ConsoleError> {
        let hash = token_hash(token);
        let row: Option<(i64, String, i64, i64)> = sqlx::query_as(
            "SELECT user_id, csrf_token, created_at, last_seen_at FROM console_sessions \
             WHERE token_hash = $1",
        )
        .bind(&hash)
        .fetch_optional(self.store.pool())
        .await?;
        let Some((user_id, csrf_token, created, seen)) = row else {
            return Ok(None);
        };
        if now.0 - seen > self.policy.idle_ms || now.0 - created > self.policy.absolute_ms {
            self.close(token).await?;
            return Ok(None);
        }
        let user = user(&self.store, user_id).await?;
        if !user.enabled {
            self.close(token).await?;
            return Ok(None);
        }
        sqlx::query("UPDATE console_sessions SET last_seen_at = $1 WHERE token_hash = $2")
            .bind(now.0)
            .bind(&hash)
            .execute(self.store.pool())
            .await?;
        Ok(Some(Session { user, csrf_token }))
    }

    /// Ends one session.
    pub async fn close(&self, token: &str) -> Result<(), ConsoleError> {
        sqlx::query("DELETE FROM console_sessions WHERE token_hash = $1")
            .bind(token_hash(token))
            .execute(self.store.pool())
            .await?;
        Ok(())
    }
}

/// Limits on failed logins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failures from one address within the window that lock that address.
    pub per_source: u32,
    /// Failures for one username within the window (from anywhere) that lock it.
    pub per_username: u32,
    /// The counting window, and how long a lock lasts.
    pub window_ms: i64,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        ThrottlePolicy {
            per_source: 5,
            per_username: 10,
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

/// Keys remembered at most per map; the oldest are forgotten first.
const MAX_KEYS: usize = 10_000;

/// Failed-login accounting: a sans-IO core, time passed in.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    policy: ThrottlePolicy,
    sources: HashMap<IpAddr, Failures>,
    usernames: HashMap<String, Failures>,
}

fn bounded_fail<K: std::hash::Hash + Eq + Clone>(
    map: &mut HashMap<K, Failures>,
    key: K,
    now: i64,
    limit: u32,
    window: i64,
) {
    if map.len() >= MAX_KEYS && !map.contains_key(&key) {
        map.retain(|_, f| f.locked(now).is_some() || now - f.first_ms <= window);
        if map.len() >= MAX_KEYS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, f)| f.first_ms)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
    }
    map.entry(key)
        .or_insert_with(|| Failures {
            first_ms: now,
            ..Failures::default()
        })
        .fail(now, limit, window);
}

impl LoginThrottle {
    /// A throttle with `policy`.
    pub fn new(policy: ThrottlePolicy) -> Self {
        LoginThrottle {
            policy,
            ..LoginThrottle::default()
        }
    }

    /// `Err(until)` when a login for `username` from `source` is locked at `now`.
    pub fn check(&self, now: UnixMillis, source: IpAddr, username: &str) -> Result<(), UnixMillis> {
        let until = [
            self.sources.get(&source).and_then(|f| f.locked(now.0)),
            self.usernames.get(username).and_then(|f| f.locked(now.0)),
        ]
        .into_iter()
        .flatten()
        .max();
        match until {
            Some(u) => Err(UnixMillis(u)),
            None => Ok(()),
        }
    }

    /// A failed login for `username` from `source`.
    pub fn record_failure(&mut self, now: UnixMillis, source: IpAddr, username: &str) {
        let p = self.policy;
        bounded_fail(&mut self.sources, source, now.0, p.per_source, p.window_ms);
        bounded_fail(
            &mut self.usernames,
            username.to_string(),
            now.0,
            p.per_username,
            p.window_ms,
        );
    }

    /// A successful login clears the source's and the username's failures.
    pub fn record_success(&mut self, source: IpAddr, username: &str) {
        self.sources.remove(&source);
        self.usernames.remove(username);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    #[test]
    fn only_the_admin_manages_users_and_the_fleet_and_a_viewer_changes_nothing() {
        use Permission as P;
        let changes = [
            P::RunCampaigns,
            P::EditRouting,
            P::EditCompliance,
            P::ManageFleet,
            P::ManageUsers,
            P::ReadAudit,
        ];
        assert!(changes.iter().all(|p| Role::Admin.may(*p)));
        assert!(changes.iter().all(|p| !Role::Viewer.may(*p)));
        assert!(Role::Viewer.may(P::View));
        assert!(Role::Supervisor.may(P::RunCampaigns) && !Role::Supervisor.may(P::EditCompliance));
        assert!(Role::Compliance.may(P::EditCompliance) && !Role::Compliance.may(P::RunCampaigns));
        assert!(!Role::Supervisor.may(P::ManageUsers) && !Role::Compliance.may(P::ManageFleet));
    }

    #[test]
    fn five_failures_lock_one_source_for_the_window_and_not_the_others() {
        let mut t = LoginThrottle::new(ThrottlePolicy::default());
        for i in 0..5 {
            assert!(
                t.check(UnixMillis(i * 1000), ip(1), "a").is_ok(),
                "attempt {i}"
            );
            t.record_failure(UnixMillis(i * 1000), ip(1), "a");
        }
        assert_eq!(
            t.check(UnixMillis(5_000), ip(1), "b"),
            Err(UnixMillis(4_000 + 900_000))
        );
        assert!(t.check(UnixMillis(5_000), ip(2), "a").is_ok());
        assert!(
            t.check(UnixMillis(904_001), ip(1), "a").is_ok(),
            "the lock expires"
        );
    }

    #[test]
    fn guesses_at_one_username_from_many_addresses_lock_that_username() {
        let mut t = LoginThrottle::new(ThrottlePolicy::default());
        for i in 0..10u8 {
            t.record_failure(UnixMillis(i64::from(i)), ip(i), "admin");
        }
        assert!(t.check(UnixMillis(100), ip(200), "admin").is_err());
        assert!(t.check(UnixMillis(100), ip(200), "alice").is_ok());
    }

    #[test]
    fn a_flood_of_addresses_cannot_grow_the_maps_without_bound() {
        let mut t = LoginThrottle::new(ThrottlePolicy::default());
        for i in 0..(MAX_KEYS as u32 + 100) {
            t.record_failure(
                UnixMillis(i64::from(i)),
                IpAddr::from(i.to_be_bytes()),
                &i.to_string(),
            );
        }
        assert!(t.sources.len() <= MAX_KEYS && t.usernames.len() <= MAX_KEYS);
    }

    #[test]
    fn hashes_verify_only_their_own_password() {
        let h = hash_password("correct horse battery");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "correct horse battery"));
        assert!(!verify_password(&h, "correct horse batterY"));
        assert!(check_password("bob", "short").is_err());
        assert!(check_password("bob-the-builder", "BOB-THE-BUILDER").is_err());
    }
}
