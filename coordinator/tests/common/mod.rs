//! Shared setup for the coordinator's storage tests: every test runs once per backend, on a
//! fresh SQLite file and on a fresh database in the throw-away PostgreSQL cluster.

#![allow(dead_code, unreachable_pub)]

use callgate_common::store::Backend;
use callgate_coordinator::store::Store;

/// A store under test and what keeps its files alive.
pub struct TestStore {
    pub store: Store,
    _dir: tempfile::TempDir,
}

impl TestStore {
    pub fn backend(&self) -> Backend {
        self.store.backend()
    }
}

/// A fresh, migrated store on `backend`.
pub async fn fresh_store(backend: Backend) -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let url = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => {
            Some(callgate_system_tests::postgres::shared_cluster().fresh_database())
        }
    };
    let store = Store::open(dir.path(), url.as_deref())
        .await
        .unwrap_or_else(|e| panic!("opening a fresh {backend:?} store: {e}"));
    assert_eq!(store.backend(), backend);
    TestStore { store, _dir: dir }
}

/// Both backends, SQLite first.
pub const BACKENDS: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];
