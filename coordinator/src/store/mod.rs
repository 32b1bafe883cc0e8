//! The coordinator's database: SQLite in the data directory by default, PostgreSQL when
//! `store.database_url` (or `--database-url`) says `postgres://...`. One [`AnyPool`] either
//! way (see `callgate_common::store` for the query conventions that keep both engines happy).
//!
//! Owns the schema — `coordinator/migrations/sqlite/` and `coordinator/migrations/postgres/`,
//! kept in step, same version numbers in both — and the pool. Other rooms get a [`Store`]
//! and run their queries through it; none opens its own connection.

use callgate_common::store::{self, Backend, Durability, StoreError};
use sqlx::migrate::Migrator;
use sqlx::AnyPool;
use std::path::Path;

/// SQLite migrations, embedded at build time.
pub static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");
/// PostgreSQL migrations, embedded at build time.
pub static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// File name of the SQLite database inside the data directory.
pub const SQLITE_FILE: &str = "coordinator.db";

fn migrator_for(backend: Backend) -> &'static Migrator {
    match backend {
        Backend::Sqlite => &SQLITE_MIGRATOR,
        Backend::Postgres => &POSTGRES_MIGRATOR,
    }
}

/// A handle to the coordinator's database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Opens `database_url` when given, else `data_dir/coordinator.db` (creating the
    /// directory), and applies pending migrations.
    pub async fn open(data_dir: &Path, database_url: Option<&str>) -> Result<Store, StoreError> {
        let url = match database_url {
            Some(url) => url.to_string(),
            None => {
                std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Open {
                    path: data_dir.to_path_buf(),
                    source: sqlx::Error::Io(e),
                })?;
                format!("sqlite://{}?mode=rwc", data_dir.join(SQLITE_FILE).display())
            }
        };
        let (pool, backend) = store::open_any(&url, migrator_for, Durability::CrashSafe, 8).await?;
        Ok(Store { pool, backend })
    }

    /// The connection pool, for the rooms that query it.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Which engine is behind the pool.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Begins a transaction that changes things (see [`begin_write`]).
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        begin_write(&self.pool).await
    }

    /// A trivial round trip, for the health endpoint.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// Begins a transaction that changes things. On SQLite it takes the write lock at once
/// (`BEGIN IMMEDIATE`), so that what it reads before its first write cannot become a stale
/// snapshot when another writer commits meanwhile (which SQLite refuses without waiting).
pub async fn begin_write(
    pool: &AnyPool,
) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
    let url = pool.connect_options().database_url.clone();
    if Backend::of_url(url.as_str()) == Some(Backend::Sqlite) {
        pool.begin_with("BEGIN IMMEDIATE").await
    } else {
        pool.begin().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_backends_have_the_same_migration_versions() {
        let versions = |m: &Migrator| m.iter().map(|x| x.version).collect::<Vec<_>>();
        assert_eq!(versions(&SQLITE_MIGRATOR), versions(&POSTGRES_MIGRATOR));
    }

    #[tokio::test]
    async fn opens_migrates_and_reopens_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("nested"), None).await.unwrap();
        assert_eq!(store.backend(), Backend::Sqlite);
        sqlx::query("INSERT INTO coordinator_info (key, value) VALUES ($1, $2)")
            .bind("k")
            .bind("v")
            .execute(store.pool())
            .await
            .unwrap();
        store.pool().close().await;
        let again = Store::open(&dir.path().join("nested"), None).await.unwrap();
        let (v,): (String,) = sqlx::query_as("SELECT value FROM coordinator_info WHERE key = $1")
            .bind("k")
            .fetch_one(again.pool())
            .await
            .unwrap();
        assert_eq!(v, "v");
    }
}
