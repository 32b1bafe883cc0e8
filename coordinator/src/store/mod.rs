//! The coordinator's database: SQLite in the data directory by default (the PostgreSQL
//! backend arrives with the coordinator-core issue, through the same `sqlx` layer).
//!
//! Owns the schema (`coordinator/migrations/`) and the pool. Other rooms get a [`Store`] and
//! run their queries through it; none opens its own connection.

use callgate_common::store::{self, Durability, StoreError};
use sqlx::migrate::Migrator;
use sqlx::SqlitePool;
use std::path::Path;

/// The coordinator's migrations, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// File name of the SQLite database inside the data directory.
pub const SQLITE_FILE: &str = "coordinator.db";

/// A handle to the coordinator's database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens `data_dir/coordinator.db`, creating the directory and applying migrations.
    pub async fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Open {
            path: data_dir.to_path_buf(),
            source: sqlx::Error::Io(e),
        })?;
        let pool = store::open_sqlite(
            &data_dir.join(SQLITE_FILE),
            &MIGRATOR,
            Durability::CrashSafe,
        )
        .await?;
        Ok(Store { pool })
    }

    /// The connection pool, for the rooms that query it.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A trivial round trip, for the health endpoint.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opens_migrates_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("nested")).await.unwrap();
        sqlx::query("INSERT INTO coordinator_info VALUES ('k', 'v')")
            .execute(store.pool())
            .await
            .unwrap();
        store.pool().close().await;
        let again = Store::open(&dir.path().join("nested")).await.unwrap();
        let (v,): (String,) = sqlx::query_as("SELECT value FROM coordinator_info WHERE key = 'k'")
            .fetch_one(again.pool())
            .await
            .unwrap();
        assert_eq!(v, "v");
        assert_eq!(
            store::schema_version(again.pool()).await.unwrap(),
            Some(store::newest_migration(&MIGRATOR))
        );
    }
}
