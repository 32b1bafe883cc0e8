//! Every change the console makes through another room's functions is written in the same
//! transaction as its audit row: when the audit row cannot be written, the change is not
//! made either. The audit table is made to refuse inserts with a trigger (a failure at the
//! very end of the transaction, after the change's own statements ran), on SQLite and on
//! PostgreSQL.

mod console_support;

use callgate_common::store::Backend;
use callgate_coordinator::campaigns::{self, CampaignState};
use callgate_coordinator::compliance;
use callgate_coordinator::console::audit;
use callgate_coordinator::enroll::registry;
use callgate_coordinator::store::Store;
use console_support::{form, pairs, Client, Hq};
use reqwest::StatusCode;

async fn refuse_audit(store: &Store, on: bool) {
    let statements: &[&str] = match (store.backend(), on) {
        (Backend::Sqlite, true) => &[
            "CREATE TRIGGER audit_refused BEFORE INSERT ON console_audit \
             BEGIN SELECT RAISE(ABORT, 'audit refused'); END",
        ],
        (Backend::Sqlite, false) => &["DROP TRIGGER audit_refused"],
        (Backend::Postgres, true) => &[
            "CREATE FUNCTION refuse_audit() RETURNS trigger AS $$ \
             BEGIN RAISE EXCEPTION 'audit refused'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER audit_refused BEFORE INSERT ON console_audit \
             FOR EACH ROW EXECUTE FUNCTION refuse_audit()",
        ],
        (Backend::Postgres, false) => &[
            "DROP TRIGGER audit_refused ON console_audit",
            "DROP FUNCTION refuse_audit()",
        ],
    };
    for s in statements {
        sqlx::query(s).execute(store.pool()).await.unwrap();
    }
}

async fn audit_rows(store: &Store) -> usize {
    audit::page(store, &Default::default(), None, 10_000)
        .await
        .unwrap()
        .len()
}

async fn upload(c: &Client, list_name: &str, csv: &'static str) -> StatusCode {
    let form = reqwest::multipart::Form::new()
        .text("csrf", c.csrf.clone())
        .text("list_id", "")
        .text("list_name", list_name.to_string())
        .text("default_region", "US")
        .part(
            "file",
            reqwest::multipart::Part::text(csv).file_name("leads.csv"),
        );
    c.http
        .post(format!("{}/lists", c.base))
        .header("cookie", c.cookie.clone().unwrap())
        .multipart(form)
        .send()
        .await
        .unwrap()
        .status()
}

async fn a_failed_audit_write_undoes_the_change(backend: Backend) {
    let hq = Hq::start_on(backend).await;
    let admin = hq.admin().await;
    let store = &hq.store;
    let group = callgate_coordinator::agents::create_group(store, "experts", "")
        .await
        .unwrap()
        .id
        .to_string();

    // Things to change later, made while the audit works.
    let f = form(&admin, &[("name", "Existing")]).await;
    assert_eq!(
        admin.submit("/campaigns", &pairs(&f)).await.status,
        StatusCode::SEE_OTHER
    );
    let existing = campaigns::page(store, 0, 10).await.unwrap()[0].clone();
    assert_eq!(
        admin
            .submit("/fleet", &[("name", "branch-1"), ("site", "Leeds")])
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        admin
            .submit("/dnc", &[("number", "+14155550100"), ("reason", "asked")])
            .await
            .status,
        StatusCode::OK
    );
    let dnc = compliance::page_dnc(store, 0, 10).await.unwrap()[0].id;
    let profiles_before = compliance::page_profiles(store, 0, 100).await.unwrap();
    let audited = audit_rows(store).await;

    refuse_audit(store, true).await;
    let refused = StatusCode::SERVICE_UNAVAILABLE;
    let f = form(&admin, &[("name", "Never")]).await;
    assert_eq!(admin.submit("/campaigns", &pairs(&f)).await.status, refused);
    let f = form(&admin, &[("name", "Renamed")]).await;
    assert_eq!(
        admin
            .submit(&format!("/campaigns/{}", existing.id), &pairs(&f))
            .await
            .status,
        refused
    );
    assert_eq!(
        admin
            .submit(
                &format!("/campaigns/{}/action", existing.id),
                &[("action", "schedule")]
            )
            .await
            .status,
        refused
    );
    assert_eq!(
        admin
            .submit("/fleet", &[("name", "branch-2"), ("site", "York")])
            .await
            .status,
        refused
    );
    assert_eq!(
        admin.submit("/fleet/branch-1/revoke", &[]).await.status,
        refused
    );
    let mut rule = vec![
        ("rule.0.priority", "10"),
        ("rule.0.name", "vip"),
        ("rule.0.when", r#"{"tag":"vip"}"#),
        ("rule.0.action", "agent_group"),
    ];
    rule.push(("rule.0.target", group.as_str()));
    assert_eq!(admin.submit("/routing", &rule).await.status, refused);
    assert_eq!(
        admin
            .submit("/dnc", &[("number", "+14155550101")])
            .await
            .status,
        refused
    );
    assert_eq!(
        admin
            .submit(&format!("/dnc/{dnc}/remove"), &[])
            .await
            .status,
        refused
    );
    let body =
        serde_json::to_string(&callgate_common::compliance::ComplianceProfile::uk()).unwrap();
    assert_eq!(
        admin
            .submit("/profiles", &[("name", "ie"), ("body", &body)])
            .await
            .status,
        refused
    );
    assert_eq!(
        admin
            .submit(
                &format!("/profiles/{}", profiles_before[0].id),
                &[("name", "us-renamed"), ("body", &body)]
            )
            .await
            .status,
        refused
    );
    assert_eq!(
        upload(&admin, "Never list", "phone\n+14155550199\n").await,
        refused
    );
    let dnc_form = reqwest::multipart::Form::new()
        .text("csrf", admin.csrf.clone())
        .part(
            "file",
            reqwest::multipart::Part::text("number,reason\n+14155550102,asked\n")
                .file_name("dnc.csv"),
        );
    let r = admin
        .http
        .post(format!("{}/dnc/upload", admin.base))
        .header("cookie", admin.cookie.clone().unwrap())
        .multipart(dnc_form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), refused);

    // Nothing of it happened.
    let all = campaigns::page(store, 0, 10).await.unwrap();
    assert_eq!(all.len(), 1, "no campaign created");
    assert_eq!(all[0].spec.name, "Existing", "not edited");
    assert_eq!(all[0].state, CampaignState::Draft, "not scheduled");
    assert_eq!(all[0].version, existing.version);
    let id = |n: &str| callgate_common::ids::ApplianceId::new(n).unwrap();
    assert_eq!(
        registry::state(store.pool(), &id("branch-2"))
            .await
            .unwrap(),
        None,
        "not registered"
    );
    assert_eq!(
        registry::state(store.pool(), &id("branch-1"))
            .await
            .unwrap(),
        Some(registry::ApplianceState::Registered),
        "not revoked"
    );
    assert!(
        callgate_coordinator::routing::current(store).await.is_err(),
        "no routing policy saved"
    );
    let dncs = compliance::page_dnc(store, 0, 10).await.unwrap();
    assert_eq!(dncs.len(), 1, "no number added, none removed");
    assert_eq!(dncs[0].id, dnc);
    assert_eq!(
        compliance::page_profiles(store, 0, 100).await.unwrap(),
        profiles_before,
        "no profile created or edited"
    );
    assert!(
        callgate_coordinator::contacts::page_lists(store, 0, 10)
            .await
            .unwrap()
            .is_empty(),
        "no list created"
    );
    let (imports,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM contact_imports")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(imports, 0, "no import recorded");

    // With the audit working again the same change goes through, with its row.
    refuse_audit(store, false).await;
    assert_eq!(audit_rows(store).await, audited);
    assert_eq!(
        admin.submit("/fleet/branch-1/revoke", &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(audit_rows(store).await, audited + 1);
}

#[tokio::test]
async fn on_sqlite_a_failed_audit_write_undoes_every_kind_of_change() {
    a_failed_audit_write_undoes_the_change(Backend::Sqlite).await;
}

#[tokio::test]
async fn on_postgres_a_failed_audit_write_undoes_every_kind_of_change() {
    a_failed_audit_write_undoes_the_change(Backend::Postgres).await;
}
