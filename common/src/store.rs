//! The storage convention both halves follow (feature `store`).
//!
//! - One binding for the whole workspace: `sqlx` (SQLite everywhere, PostgreSQL for the
//!   coordinator at scale). Never add `rusqlite`: both link `libsqlite3-sys` and clash.
//! - SQLite runs in WAL mode. The appliance opens with `synchronous=FULL` ([`Durability::PowerSafe`])
//!   so that a committed call record survives a power cut; the coordinator may use `NORMAL`.
//! - Migrations are checked in beside each crate and embedded with `sqlx::migrate!`.
//! - At start the program compares the database's schema version with the newest migration
//!   it knows and refuses a newer database ([`StoreError::SchemaTooNew`]) rather than run
//!   against tables it does not understand.

use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a store could not be opened or brought up to date.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database file could not be opened or created.
    #[error("cannot open database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    /// The database was written by a newer program.
    #[error(
        "database {path} has schema version {found}, newer than the {supported} this build \
         knows; run a newer release or restore a backup"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// A migration failed; the database is left at the last good version.
    #[error("migrating database {path} failed: {source}")]
    Migrate {
        path: PathBuf,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A query failed.
    #[error("database query failed: {0}")]
    Query(#[from] sqlx::Error),
}

/// How hard a commit must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: a commit survives power loss (the appliance).
    PowerSafe,
    /// `synchronous=NORMAL`: a commit survives a process crash (the coordinator on SQLite).
    CrashSafe,
}

/// Opens (creating if needed) the SQLite database at `path`, checks its schema version
/// against `migrator`, and applies pending migrations.
pub async fn open_sqlite(
    path: &Path,
    migrator: &Migrator,
    durability: Durability,
) -> Result<SqlitePool, StoreError> {
    let synchronous = match durability {
        Durability::PowerSafe => SqliteSynchronous::Full,
        Durability::CrashSafe => SqliteSynchronous::Normal,
    };
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(synchronous)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    let found = schema_version(&pool).await?;
    let supported = newest_migration(migrator);
    if let Some(found) = found {
        if found > supported {
            pool.close().await;
            return Err(StoreError::SchemaTooNew {
                path: path.to_path_buf(),
                found,
                supported,
            });
        }
    }
    migrator
        .run(&pool)
        .await
        .map_err(|source| StoreError::Migrate {
            path: path.to_path_buf(),
            source,
        })?;
    tracing::info!(path = %path.display(), schema_version = supported, "store open");
    Ok(pool)
}

/// The newest migration version `migrator` holds (0 when it has none).
pub fn newest_migration(migrator: &Migrator) -> i64 {
    migrator.iter().map(|m| m.version).max().unwrap_or(0)
}

/// The newest applied migration, or `None` for a database that has never been migrated.
pub async fn schema_version(pool: &SqlitePool) -> Result<Option<i64>, StoreError> {
    let has_table: Option<(String,)> = sqlx::query_as(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_optional(pool)
    .await?;
    if has_table.is_none() {
        return Ok(None);
    }
    let (version,): (Option<i64>,) =
        sqlx::query_as("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await?;
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    static NO_MIGRATIONS: Migrator = Migrator::DEFAULT;

    #[tokio::test]
    async fn opens_in_wal_with_the_requested_durability() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let pool = open_sqlite(&path, &NO_MIGRATIONS, Durability::PowerSafe)
            .await
            .unwrap();
        let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        let (sync,): (i64,) = sqlx::query_as("PRAGMA synchronous")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(sync, 2, "FULL is 2");
    }

    #[tokio::test]
    async fn refuses_a_database_from_a_newer_build() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let pool = open_sqlite(&path, &NO_MIGRATIONS, Durability::CrashSafe)
            .await
            .unwrap();
        // Pretend a newer release migrated this file to version 99 (the first open created
        // the migrations table).
        sqlx::query(
            "INSERT INTO _sqlx_migrations VALUES (99, 'future', CURRENT_TIMESTAMP, 1, x'00', 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
        let err = open_sqlite(&path, &NO_MIGRATIONS, Durability::CrashSafe)
            .await
            .unwrap_err();
        match err {
            StoreError::SchemaTooNew {
                found, supported, ..
            } => {
                assert_eq!((found, supported), (99, 0));
            }
            other => panic!("expected SchemaTooNew, got {other}"),
        }
    }

    #[tokio::test]
    async fn names_the_path_it_cannot_open() {
        let err = open_sqlite(
            Path::new("/nonexistent-dir/x/y.db"),
            &NO_MIGRATIONS,
            Durability::PowerSafe,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/x/y.db"), "{err}");
    }
}
