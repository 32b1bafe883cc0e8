//! The coordinator's store opens, migrates, and round-trips data on both SQLite and
//! PostgreSQL, and refuses a database migrated by a newer build on either.

mod common;

use callgate_common::store::StoreError;
use callgate_coordinator::store::Store;
use common::{fresh_store, BACKENDS};

#[tokio::test]
async fn both_backends_migrate_and_round_trip_a_row() {
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        sqlx::query("INSERT INTO coordinator_info (key, value) VALUES ($1, $2)")
            .bind("k")
            .bind("v")
            .execute(t.store.pool())
            .await
            .unwrap();
        let (v,): (String,) = sqlx::query_as("SELECT value FROM coordinator_info WHERE key = $1")
            .bind("k")
            .fetch_one(t.store.pool())
            .await
            .unwrap();
        assert_eq!(v, "v", "{backend:?}");
        t.store.ping().await.unwrap();
    }
}

#[tokio::test]
async fn postgres_refuses_a_schema_from_a_newer_build() {
    let url = callgate_system_tests::postgres::shared_cluster().fresh_database();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Some(&url)).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'future', TRUE, $1, 0)",
    )
    .bind(vec![0u8])
    .execute(store.pool())
    .await
    .unwrap();
    store.pool().close().await;
    let err = Store::open(dir.path(), Some(&url)).await.unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 9999, .. }),
        "{err}"
    );
}
