//! The appliance's SQLite store: WAL, `synchronous=FULL` so that a committed record survives
//! a power cut (DESIGN.md principle 3). Owns the schema (`appliance/migrations/`) and the pool;
//! other rooms query through a [`Store`].

use callgate_common::store::{self, Durability, StoreError};
use sqlx::migrate::Migrator;
use sqlx::SqlitePool;
use std::path::Path;

/// The appliance's migrations, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// File name of the database inside the data directory.
pub const SQLITE_FILE: &str = "appliance.db";

/// A handle to the box's database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens `data_dir/appliance.db`, creating the directory and applying migrations.
    pub async fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Open {
            path: data_dir.to_path_buf(),
            source: sqlx::Error::Io(e),
        })?;
        let pool = store::open_sqlite(
            &data_dir.join(SQLITE_FILE),
            &MIGRATOR,
            Durability::PowerSafe,
        )
        .await?;
        Ok(Store { pool })
    }

    /// The connection pool.
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
    async fn opens_power_safe() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let (sync,): (i64,) = sqlx::query_as("PRAGMA synchronous")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(sync, 2, "the appliance must commit with synchronous=FULL");
    }
}
