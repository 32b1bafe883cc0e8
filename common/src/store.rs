//! The storage convention both halves follow (feature `store`).
//!
//! - One binding for the whole workspace: `sqlx` (SQLite everywhere, PostgreSQL for the
//!   coordinator at scale). Never add `rusqlite`: both link `libsqlite3-sys` and clash.
//! - The appliance uses a typed [`SqlitePool`] ([`open_sqlite`]). The coordinator uses one
//!   [`AnyPool`] over SQLite or PostgreSQL chosen by URL ([`open_any`]), with one migration
//!   folder per backend; its queries use `$1, $2, ...` placeholders in order, which both
//!   engines accept, and portable types (integers, text, blobs, booleans).
//! - SQLite runs in WAL mode. The appliance opens with `synchronous=FULL` ([`Durability::PowerSafe`])
//!   so that a committed call record survives a power cut; the coordinator may use `NORMAL`.
//! - Migrations are checked in beside each crate and embedded with `sqlx::migrate!`.
//! - At start the program compares the database's schema version with the newest migration
//!   it knows and refuses a newer database ([`StoreError::SchemaTooNew`]) rather than run
//!   against tables it does not understand.

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::AnyPool;
use sqlx::{Executor, SqlitePool};
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

/// The database engine behind an [`AnyPool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite (`sqlite://path`).
    Sqlite,
    /// PostgreSQL (`postgres://...` or `postgresql://...`).
    Postgres,
}

impl Backend {
    /// The engine a database URL names; `None` for any other scheme.
    pub fn of_url(url: &str) -> Option<Backend> {
        let scheme = url.split_once(':')?.0;
        match scheme {
            "sqlite" => Some(Backend::Sqlite),
            "postgres" | "postgresql" => Some(Backend::Postgres),
            _ => None,
        }
    }
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

/// Opens the database at `url` (SQLite or PostgreSQL), checks its schema version against the
/// migrator `migrators` gives for its backend, and applies pending migrations. SQLite
/// connections get WAL, foreign keys and `durability`.
pub async fn open_any(
    url: &str,
    migrators: impl Fn(Backend) -> &'static Migrator,
    durability: Durability,
    max_connections: u32,
) -> Result<(AnyPool, Backend), StoreError> {
    sqlx::any::install_default_drivers();
    let shown = redact_url(url);
    let backend = Backend::of_url(url).ok_or_else(|| StoreError::Open {
        path: PathBuf::from(&shown),
        source: sqlx::Error::Configuration(
            "database URL must start with sqlite:// or postgres://".into(),
        ),
    })?;
    let synchronous = match durability {
        Durability::PowerSafe => "FULL",
        Durability::CrashSafe => "NORMAL",
    };
    let pool = AnyPoolOptions::new()
        .max_connections(max_connections)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    conn.execute(sqlx::raw_sql(match synchronous {
                        "FULL" => {
                            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; \
                                   PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000;"
                        }
                        _ => {
                            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; \
                              PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000;"
                        }
                    }))
                    .await?;
                }
                Ok(())
            })
        })
        .connect(url)
        .await
        .map_err(|source| StoreError::Open {
            path: PathBuf::from(&shown),
            source,
        })?;
    let migrator = migrators(backend);
    let exists_sql = match backend {
        Backend::Sqlite => {
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
        }
        Backend::Postgres => {
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = '_sqlx_migrations' \
             AND table_schema = current_schema()"
        }
    };
    let (exists,): (i64,) = sqlx::query_as(exists_sql).fetch_one(&pool).await?;
    let supported = newest_migration(migrator);
    if exists > 0 {
        let (found,): (Option<i64>,) =
            sqlx::query_as("SELECT MAX(version) FROM _sqlx_migrations WHERE success = TRUE")
                .fetch_one(&pool)
                .await?;
        if let Some(found) = found.filter(|f| *f > supported) {
            pool.close().await;
            return Err(StoreError::SchemaTooNew {
                path: PathBuf::from(&shown),
                found,
                supported,
            });
        }
    }
    migrator
        .run(&pool)
        .await
        .map_err(|source| StoreError::Migrate {
            path: PathBuf::from(&shown),
            source,
        })?;
    tracing::info!(database = %shown, ?backend, schema_version = supported, "store open");
    Ok((pool, backend))
}

/// `url` with any password replaced by `***`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
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

    #[test]
    fn backends_are_chosen_by_url_scheme_and_passwords_never_shown() {
        assert_eq!(Backend::of_url("sqlite://x.db"), Some(Backend::Sqlite));
        assert_eq!(
            Backend::of_url("postgresql://h/db"),
            Some(Backend::Postgres)
        );
        assert_eq!(Backend::of_url("mysql://h/db"), None);
        assert_eq!(
            redact_url("postgres://cg:s3cret@db:5432/cg"),
            "postgres://cg:***@db:5432/cg"
        );
        assert_eq!(redact_url("sqlite://a.db"), "sqlite://a.db");
    }

    #[tokio::test]
    async fn any_pool_on_sqlite_gets_wal_and_refuses_newer_schemas() {
        static EMPTY: Migrator = Migrator::DEFAULT;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display());
        let (pool, backend) = open_any(&url, |_| &EMPTY, Durability::CrashSafe, 2)
            .await
            .unwrap();
        assert_eq!(backend, Backend::Sqlite);
        let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        sqlx::query(
            "INSERT INTO _sqlx_migrations VALUES (5, 'future', CURRENT_TIMESTAMP, 1, x'00', 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
        let err = open_any(&url, |_| &EMPTY, Durability::CrashSafe, 2)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::SchemaTooNew { found: 5, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_unknown_url_scheme_is_refused_by_name() {
        static EMPTY: Migrator = Migrator::DEFAULT;
        let err = open_any("mysql://u:pw@h/db", |_| &EMPTY, Durability::CrashSafe, 1)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("postgres://") && !err.contains("pw"), "{err}");
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
