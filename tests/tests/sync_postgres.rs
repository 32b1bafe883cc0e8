//! The same exactly-once delivery and restart checks with the coordinator on PostgreSQL
//! (a throw-away cluster) instead of SQLite: the apply-and-advance transaction is portable.

mod sync_common;

use std::time::Duration;
use sync_common::{Postgres, World};

#[tokio::test]
async fn on_postgresql_records_arrive_exactly_once_across_a_coordinator_restart() {
    let pg = Postgres::start();
    let mut w = World::with_database(&["branch-1", "branch-2"], Some(&pg.url));
    w.start_broker();
    w.start_coordinator().await;
    let a = w.start_load("branch-1", 600, 200);
    let b = w.start_load("branch-2", 300, 0);
    w.wait_stored("branch-1", 100, Duration::from_secs(60))
        .await;
    w.kill_coordinator();
    tokio::time::sleep(Duration::from_secs(1)).await;
    w.start_coordinator().await;
    w.wait_load("branch-1", a, Duration::from_secs(120)).await;
    w.wait_load("branch-2", b, Duration::from_secs(120)).await;
    w.assert_exactly_once("branch-1", 600).await;
    w.assert_exactly_once("branch-2", 300).await;
    drop(w);
}
