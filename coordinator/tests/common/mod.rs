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

use callgate_common::compliance::CallingWindow;
use callgate_common::time::UnixMillis;
use callgate_coordinator::campaigns::{self, CampaignSpec};
use callgate_coordinator::contacts::vault::NumberVault;
use callgate_coordinator::contacts::{self, import, ContactListId};

/// An instant given as RFC 3339.
pub fn at(rfc3339: &str) -> UnixMillis {
    let ts: jiff::Timestamp = rfc3339.parse().unwrap();
    UnixMillis(ts.as_millisecond())
}

/// A progressive campaign under `profile` ("us" or "uk") over `csv`, scheduled, worked by
/// `branch-a` and `branch-b`. Returns the campaign id.
pub async fn scheduled_campaign(
    store: &Store,
    vault: &NumberVault,
    profile: &str,
    csv: &str,
    edit: impl FnOnce(&mut CampaignSpec),
) -> i64 {
    callgate_coordinator::compliance::ensure_builtin_profiles(store)
        .await
        .unwrap();
    let (profile_id,): (i64,) =
        sqlx::query_as("SELECT id FROM compliance_profiles WHERE name = $1")
            .bind(profile)
            .fetch_one(store.pool())
            .await
            .unwrap();
    let name = format!("list-{}", uuid::Uuid::new_v4());
    let list = contacts::create_list(store, &name, "US").await.unwrap();
    let report = import::import_csv(
        store,
        vault,
        ContactListId(list.id),
        std::io::Cursor::new(csv.as_bytes().to_vec()),
        None,
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(report.rejected, 0, "{:?}", report.errors);
    let mut spec: CampaignSpec = serde_json::from_value(serde_json::json!({
        "name": "test campaign",
        "kind": "service",
        "dial_mode": "progressive",
        "compliance_profile_id": profile_id,
        "calling_window": CallingWindow { start_minute: 0, end_minute: 1440, days: (0..7).collect(), holidays: vec![] },
        "caller_id": "+14155550100",
        "appliances": [{"appliance": "branch-a", "share": 1}, {"appliance": "branch-b", "share": 3}],
        "contact_lists": [list.id],
    }))
    .unwrap();
    edit(&mut spec);
    let c = campaigns::create(store, spec).await.unwrap();
    campaigns::apply(store, c.id, campaigns::CampaignAction::Schedule)
        .await
        .unwrap();
    c.id
}
