//! The throw-away PostgreSQL cluster starts, hands out isolated databases and answers SQL.

use callgate_system_tests::postgres::shared_cluster;

#[test]
fn each_fresh_database_is_empty_and_isolated_from_the_others() {
    let cluster = shared_cluster();
    let a = cluster.fresh_database();
    let b = cluster.fresh_database();
    assert_ne!(a, b);
    let psql = |url: &str, sql: &str| {
        cluster.run(
            "psql",
            &["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", url, "-c", sql],
        )
    };
    psql(
        &a,
        "CREATE TABLE only_in_a (x int); INSERT INTO only_in_a VALUES (42);",
    )
    .unwrap();
    assert_eq!(psql(&a, "SELECT x FROM only_in_a").unwrap().trim(), "42");
    let err = psql(&b, "SELECT x FROM only_in_a").unwrap_err();
    assert!(err.contains("only_in_a"), "{err}");
    assert!(cluster.url("x").contains("127.0.0.1"));
}
