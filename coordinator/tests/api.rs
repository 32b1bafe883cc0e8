//! The REST API over real HTTP on both backends: tokens and scopes, problem+json naming
//! the field, pagination, CSV import with progress, masked numbers, and a campaign from
//! creation to a leased contact and its result.

mod common;

use callgate_coordinator::api::{self, tokens, ApiState};
use common::{fresh_store, BACKENDS};
use serde_json::{json, Value};
use std::time::Duration;

struct Api {
    base: String,
    http: reqwest::Client,
    admin: String,
    _dir: tempfile::TempDir,
    _store: common::TestStore,
    /// Stops the webhook worker when the test's API goes away.
    _webhooks_stop: tokio::sync::watch::Sender<bool>,
}

impl Api {
    async fn start(backend: callgate_common::store::Backend) -> Api {
        let t = fresh_store(backend).await;
        let dir = tempfile::tempdir().unwrap();
        let state = ApiState::open(t.store.clone(), dir.path()).await.unwrap();
        let admin = tokens::create_token(&t.store, "admin", &["admin".into()])
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = api::router(state);
        tokio::spawn(async move { axum::serve(listener, app).await });
        // The webhook worker, started as the coordinator's server starts it.
        let (webhooks_stop, stop) = tokio::sync::watch::channel(false);
        tokio::spawn(callgate_coordinator::call_tasks::run_deliveries(
            t.store.clone(),
            callgate_coordinator::call_tasks::DeliverySchedule::default(),
            Duration::from_millis(250),
            stop,
        ));
        Api {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            admin,
            _dir: dir,
            _store: t,
            _webhooks_stop: webhooks_stop,
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, String, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, ctype, v)
    }
}

#[tokio::test]
async fn tokens_need_the_right_scope_and_errors_are_problem_json() {
    let api = Api::start(callgate_common::store::Backend::Sqlite).await;
    let (s, ctype, v) = api
        .call("GET", "/api/v1/campaigns", "cgt_wrong", None)
        .await;
    assert_eq!(s, 401);
    assert_eq!(ctype, "application/problem+json");
    assert_eq!(v["status"], 401);
    let reader = tokens::create_token(&api._store.store, "r", &["campaigns:read".into()])
        .await
        .unwrap();
    let (s, _, _) = api.call("GET", "/api/v1/campaigns", &reader, None).await;
    assert_eq!(s, 200);
    let (s, _, v) = api
        .call(
            "POST",
            "/api/v1/contact-lists",
            &reader,
            Some(json!({"name": "x", "default_region": "US"})),
        )
        .await;
    assert_eq!(s, 403);
    assert!(v["detail"].as_str().unwrap().contains("contacts:write"));
    let bad = tokens::create_token(&api._store.store, "r", &["everything".into()]).await;
    assert!(bad.unwrap_err().to_string().contains("everything"));
    let (s, _, doc) = api.call("GET", "/api/openapi.json", "", None).await;
    assert_eq!(s, 200);
    assert!(doc["paths"]["/api/v1/campaigns"]["post"].is_object());
}

#[tokio::test]
async fn a_campaign_goes_from_csv_to_a_leased_contact_and_its_result_on_both_backends() {
    for backend in BACKENDS {
        let api = Api::start(backend).await;
        let tok = api.admin.clone();
        let (s, _, list) = api
            .call(
                "POST",
                "/api/v1/contact-lists",
                &tok,
                Some(json!({"name": "spring", "default_region": "US"})),
            )
            .await;
        assert_eq!(s, 201, "{backend:?} {list}");
        let list_id = list["id"].as_i64().unwrap();
        let (s, _, v) = api
            .call(
                "POST",
                "/api/v1/contact-lists",
                &tok,
                Some(json!({"name": "spring", "default_region": "US"})),
            )
            .await;
        assert_eq!((s, v["field"].as_str()), (409, Some("name")));
        let (s, _, v) = api
            .call(
                "POST",
                "/api/v1/contact-lists",
                &tok,
                Some(json!({"name": "x", "default_region": "ZZ"})),
            )
            .await;
        assert_eq!(
            (s, v["field"].as_str()),
            (422, Some("default_region")),
            "{v}"
        );

        let csv = "phone,timezone,name\n+13125550101,UTC,Ann\nbogus,UTC,Bob\n+13125550102,UTC,Cy\n";
        let resp = api
            .http
            .post(format!(
                "{}/api/v1/contact-lists/{list_id}/imports",
                api.base
            ))
            .bearer_auth(&tok)
            .header("content-type", "text/csv")
            .body(csv)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202);
        let import: Value = resp.json().await.unwrap();
        let import_id = import["id"].as_i64().unwrap();
        let mut status = Value::Null;
        for _ in 0..100 {
            status = api
                .call("GET", &format!("/api/v1/imports/{import_id}"), &tok, None)
                .await
                .2;
            if status["state"] != "running" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(status["state"], "done", "{backend:?} {status}");
        assert_eq!(status["rows_imported"], 2);
        assert_eq!(status["errors"][0]["line"], 3);

        // Numbers are masked without contacts:reveal, shown with it; pages follow a cursor.
        let reader = tokens::create_token(&api._store.store, "r", &["contacts:read".into()])
            .await
            .unwrap();
        let (_, _, page) = api
            .call(
                "GET",
                &format!("/api/v1/contact-lists/{list_id}/contacts?limit=1"),
                &reader,
                None,
            )
            .await;
        assert!(page["items"][0]["number"].as_str().unwrap().contains('*'));
        let next = page["next_after"].as_i64().unwrap();
        let (_, _, page2) = api
            .call(
                "GET",
                &format!("/api/v1/contact-lists/{list_id}/contacts?limit=1&after={next}"),
                &tok,
                None,
            )
            .await;
        assert_eq!(page2["items"][0]["number"], "+13125550102");
        let (s, _, v) = api
            .call("GET", "/api/v1/campaigns?limit=0", &tok, None)
            .await;
        assert_eq!((s, v["field"].as_str()), (422, Some("limit")));

        let spec = json!({
            "name": "spring", "kind": "service", "dial_mode": "progressive",
            "compliance_profile_id": 1,
            "calling_window": {"start_minute": 0, "end_minute": 1440, "days": [0,1,2,3,4,5,6], "holidays": []},
            "caller_id": "+14155550100",
            "appliances": [{"appliance": "branch-a", "share": 1}],
            "contact_lists": [list_id],
        });
        let mut broken = spec.clone();
        broken["retry"] = json!({"busy": {"delay_seconds": 1, "max_attempts": "x"}});
        let (s, ctype, v) = api
            .call("POST", "/api/v1/campaigns", &tok, Some(broken))
            .await;
        assert_eq!(s, 422);
        assert_eq!(ctype, "application/problem+json");
        assert_eq!(v["field"], "retry.busy.max_attempts", "{v}");
        let mut broken = spec.clone();
        broken["caller_id"] = json!("nope");
        let (_, _, v) = api
            .call("POST", "/api/v1/campaigns", &tok, Some(broken))
            .await;
        assert_eq!(v["field"], "caller_id");

        let (s, _, c) = api
            .call("POST", "/api/v1/campaigns", &tok, Some(spec))
            .await;
        assert_eq!(s, 201, "{c}");
        let cid = c["id"].as_i64().unwrap();
        assert_eq!(c["state"], "draft");
        let (s, _, v) = api
            .call(
                "POST",
                &format!("/api/v1/campaigns/{cid}/actions/resume"),
                &tok,
                None,
            )
            .await;
        assert_eq!((s, v["field"].as_str()), (409, Some("state")));
        let (s, _, c) = api
            .call(
                "POST",
                &format!("/api/v1/campaigns/{cid}/actions/schedule"),
                &tok,
                None,
            )
            .await;
        assert_eq!((s, c["state"].as_str()), (200, Some("scheduled")));

        // The leasing may be refused by the US profile's hours at the moment the test
        // runs; the lease itself still succeeds (with fewer contacts).
        let (s, _, lease) = api
            .call(
                "POST",
                &format!("/api/v1/campaigns/{cid}/leases"),
                &tok,
                Some(json!({"appliance": "branch-a", "max_contacts": 5})),
            )
            .await;
        assert_eq!(s, 201, "{lease}");
        assert_eq!(
            lease["contacts"].as_array().unwrap().len() as i64 + lease["refused"].as_i64().unwrap(),
            2
        );
        let (s, _, g) = api
            .call(
                "GET",
                &format!("/api/v1/campaigns/{cid}/grant?appliance=branch-a&max_concurrent=4"),
                &tok,
                None,
            )
            .await;
        assert_eq!((s, g["max_concurrent"].as_i64()), (200, Some(4)));
        let (s, _, _) = api
            .call(
                "POST",
                &format!("/api/v1/leases/{}/return", lease["id"]),
                &tok,
                None,
            )
            .await;
        assert_eq!(s, 204);
        let contact = page["items"][0]["id"].as_i64().unwrap();
        let result = json!({
            "appliance": "branch-a", "attempt_id": uuid::Uuid::new_v4(), "campaign_id": cid,
            "contact_id": contact, "lease_id": lease["id"], "outcome": "busy",
            "started_at": 1_000, "ended_at": 2_000,
        });
        let (s, _, r) = api
            .call(
                "POST",
                "/api/v1/attempt-results",
                &tok,
                Some(result.clone()),
            )
            .await;
        assert_eq!((s, r["applied"].as_bool()), (200, Some(true)), "{r}");
        assert_eq!(r["contact_state"], "ready");
        let (_, _, r) = api
            .call("POST", "/api/v1/attempt-results", &tok, Some(result))
            .await;
        assert_eq!(r["applied"], false, "replay");
        let (s, _, _) = api
            .call(
                "POST",
                &format!("/api/v1/campaigns/{cid}/actions/stop"),
                &tok,
                None,
            )
            .await;
        assert_eq!(s, 200);
        let (s, _, v) = api
            .call(
                "PUT",
                &format!("/api/v1/campaigns/{cid}"),
                &tok,
                Some(c.clone()),
            )
            .await;
        assert_eq!(s, 422, "response fields are not accepted back: {v}");
    }
}

#[tokio::test]
async fn agents_routing_versions_and_disabling_reach_the_branch_delta_on_both_backends() {
    for backend in BACKENDS {
        let api = Api::start(backend).await;
        let tok = api.admin.clone();
        let (s, _, qa) = api
            .call(
                "POST",
                "/api/v1/agent-groups",
                &tok,
                Some(json!({"name": "QA"})),
            )
            .await;
        assert_eq!(s, 201, "{qa}");
        let (_, _, experts) = api
            .call(
                "POST",
                "/api/v1/agent-groups",
                &tok,
                Some(json!({"name": "Experts"})),
            )
            .await;
        let agent = json!({
            "name": "Ann", "branch": "branch-a", "skills": ["billing"], "sip_username": "ann",
            "login": "ann", "password": "correct horse battery", "groups": [experts["id"]],
        });
        let (s, _, a) = api
            .call("POST", "/api/v1/agents", &tok, Some(agent.clone()))
            .await;
        assert_eq!(s, 201, "{backend:?} {a}");
        assert!(a.get("password").is_none() && a.get("password_hash").is_none());
        let (s, _, v) = api.call("POST", "/api/v1/agents", &tok, Some(agent)).await;
        assert_eq!((s, v["field"].as_str()), (409, Some("sip_username")), "{v}");
        let store = &api._store.store;
        assert!(
            callgate_coordinator::agents::verify_login(store, "ann", "correct horse battery")
                .await
                .unwrap()
                .is_some()
        );
        let before = a["updated_at"].as_i64().unwrap();
        let (s, _, off) = api
            .call(
                "PATCH",
                &format!("/api/v1/agents/{}", a["id"]),
                &tok,
                Some(json!({"enabled": false})),
            )
            .await;
        assert_eq!((s, off["enabled"].as_bool()), (200, Some(false)));
        let delta = callgate_coordinator::agents::changed_since(store, "branch-a", before)
            .await
            .unwrap();
        assert_eq!(
            delta.len(),
            1,
            "{backend:?}: the disable is in the branch's delta"
        );
        assert!(!delta[0].enabled);
        assert!(
            callgate_coordinator::agents::changed_since(store, "branch-b", 0)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            callgate_coordinator::agents::verify_login(store, "ann", "correct horse battery")
                .await
                .unwrap()
                .is_none()
        );

        let (s, _, _) = api.call("GET", "/api/v1/routing-policy", &tok, None).await;
        assert_eq!(s, 404);
        let policy = json!({"rules": [
            {"name": "complaint", "when": {"tag": "complaint"}, "then": {"agent_group": qa["id"]}},
            {"name": "platinum", "when": {"field": {"name": "tier", "equals": "platinum"}}, "then": {"agent_group": experts["id"]}},
            {"name": "unresolved", "when": {"last_outcome": "unresolved"}, "then": {"last_agent": {"fallback_group": qa["id"]}}},
        ]});
        let (s, _, v1) = api
            .call("PUT", "/api/v1/routing-policy", &tok, Some(policy.clone()))
            .await;
        assert_eq!(s, 200, "{v1}");
        let (_, _, v2) = api
            .call("PUT", "/api/v1/routing-policy", &tok, Some(policy))
            .await;
        assert_eq!(
            v2["version"].as_i64().unwrap(),
            v1["version"].as_i64().unwrap() + 1
        );
        let (_, _, cur) = api.call("GET", "/api/v1/routing-policy", &tok, None).await;
        assert_eq!(cur["version"], v2["version"]);
        assert_eq!(cur["rules"][1]["then"]["agent_group"], experts["id"]);
        let bad = json!({"rules": [{"name": "x", "when": "always", "then": {"agent_group": 999}}]});
        let (s, _, v) = api
            .call("PUT", "/api/v1/routing-policy", &tok, Some(bad))
            .await;
        assert_eq!((s, v["field"].as_str()), (422, Some("rules[0].then")));
    }
}

#[tokio::test]
async fn a_call_task_result_is_posted_signed_and_retried_until_acknowledged() {
    use axum::http::HeaderMap;
    use std::sync::{Arc, Mutex};
    let api = Api::start(callgate_common::store::Backend::Sqlite).await;
    let tok = api.admin.clone();
    // The receiver fails twice, then acknowledges; it keeps what it was sent.
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let seen_in = seen.clone();
    let receiver = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let seen = seen_in.clone();
            async move {
                let sig = headers["x-callgate-signature"]
                    .to_str()
                    .unwrap()
                    .to_string();
                let mut s = seen.lock().unwrap();
                s.push((sig, body));
                if s.len() < 3 {
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let (s, _, task) = api
        .call("POST", "/api/v1/call-tasks", &tok, Some(json!({
            "customer_id": "cust-9", "script_id": "renewal", "callback_url": hook, "max_retries": 2,
        })))
        .await;
    assert_eq!(s, 201, "{task}");
    let secret = task["callback_secret"].as_str().unwrap().to_string();
    let id = task["id"].as_i64().unwrap();
    let (_, _, again) = api
        .call("GET", &format!("/api/v1/call-tasks/{id}"), &tok, None)
        .await;
    assert!(
        again.get("callback_secret").is_none(),
        "the secret is shown once"
    );
    let (s, _, done) = api
        .call(
            "POST",
            &format!("/api/v1/call-tasks/{id}/result"),
            &tok,
            Some(json!({"outcome": "completed", "detail": "renewed"})),
        )
        .await;
    assert_eq!((s, done["state"].as_str()), (200, Some("completed")));
    let (s, _, _) = api
        .call(
            "POST",
            &format!("/api/v1/call-tasks/{id}/result"),
            &tok,
            Some(json!({"outcome": "failed"})),
        )
        .await;
    assert_eq!(s, 409, "a result is recorded once");
    let mut view = Value::Null;
    for _ in 0..100 {
        view = api
            .call("GET", &format!("/api/v1/call-tasks/{id}"), &tok, None)
            .await
            .2;
        if view["delivery"]["state"] == "delivered" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(view["delivery"]["state"], "delivered", "{view}");
    assert_eq!(view["delivery"]["attempts"], 3);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    for (sig, body) in &seen {
        let t: i64 = sig
            .strip_prefix("t=")
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            sig,
            &callgate_coordinator::call_tasks::signature(&secret, t, body.as_bytes())
        );
        let b: Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            (b["task_id"].as_i64(), b["result"]["detail"].as_str()),
            (Some(id), Some("renewed"))
        );
    }
}

#[tokio::test]
async fn an_unreachable_callback_is_given_up_and_that_stays_visible() {
    use callgate_coordinator::call_tasks::{
        self, DeliverySchedule, NewCallTask, TaskOutcome, TaskResult,
    };
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        // A port nothing listens on.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let task = call_tasks::create(
            &t.store,
            NewCallTask {
                customer_id: "c".into(),
                script_id: "s".into(),
                callback_url: format!("http://{closed}/gone"),
                max_retries: 0,
                preferred_time: None,
            },
        )
        .await
        .unwrap();
        call_tasks::record_result(
            &t.store,
            task.id,
            TaskResult {
                outcome: TaskOutcome::Failed,
                detail: String::new(),
                attempts: 1,
            },
        )
        .await
        .unwrap();
        let schedule = DeliverySchedule {
            base_ms: 1,
            cap_ms: 1,
            max_attempts: 2,
        };
        let http = reqwest::Client::new();
        let far = callgate_common::time::UnixMillis::now().plus_millis(3_600_000);
        assert_eq!(
            call_tasks::deliver_due(&t.store, &http, schedule, far)
                .await
                .unwrap(),
            1
        );
        let v = call_tasks::get(&t.store, task.id).await.unwrap();
        assert_eq!(v.delivery.as_ref().unwrap().state, "pending", "{backend:?}");
        call_tasks::deliver_due(&t.store, &http, schedule, far.plus_millis(10))
            .await
            .unwrap();
        let v = call_tasks::get(&t.store, task.id).await.unwrap();
        let d = v.delivery.unwrap();
        assert_eq!(
            (d.state.as_str(), d.attempts),
            ("given_up", 2),
            "{backend:?}"
        );
        assert!(d.last_error.is_some());
        assert_eq!(
            call_tasks::deliver_due(&t.store, &http, schedule, far.plus_millis(99))
                .await
                .unwrap(),
            0
        );
    }
}

#[tokio::test]
async fn appliances_register_with_a_claim_code_show_presence_and_revoke_on_both_backends() {
    for backend in BACKENDS {
        let api = Api::start(backend).await;
        let tok = api.admin.clone();
        let (s, ctype, v) = api
            .call(
                "POST",
                "/api/v1/appliances",
                &tok,
                Some(json!({"name": "Branch_1", "site": "Leeds"})),
            )
            .await;
        assert_eq!((s, ctype.as_str()), (422, "application/problem+json"));
        assert_eq!(v["field"], "name", "{backend:?}: {v}");
        let (s, _, reg) = api
            .call(
                "POST",
                "/api/v1/appliances",
                &tok,
                Some(json!({"name": "branch-1", "site": "Leeds"})),
            )
            .await;
        assert_eq!(s, 201, "{reg}");
        assert_eq!(reg["state"], "registered");
        assert_eq!(reg["claim_code"].as_str().unwrap().len(), 19, "{reg}");
        assert_eq!(reg["online"], false);
        assert_eq!(reg["last_seen_at"], Value::Null);

        // The box connects and says Hello: the API shows it online with its firmware.
        let store = &api._store.store;
        let app = callgate_common::ids::ApplianceId::new("branch-1").unwrap();
        let t0 = callgate_common::time::UnixMillis(1_800_000_000_000);
        callgate_coordinator::sync::presence::hello(store.pool(), &app, "2.4.1", t0)
            .await
            .unwrap();
        let (s, _, one) = api
            .call("GET", "/api/v1/appliances/branch-1", &tok, None)
            .await;
        assert_eq!(s, 200);
        assert_eq!(one["online"], true, "{one}");
        assert_eq!(one["online_since"], t0.0);
        assert_eq!(one["offline_since"], Value::Null);
        assert_eq!(one["firmware"], "2.4.1");
        assert_eq!(one["last_seen_at"], t0.0);
        let t1 = t0.plus_millis(5_000);
        callgate_coordinator::sync::presence::status(store.pool(), &app, false, t1)
            .await
            .unwrap();
        let (_, _, page) = api.call("GET", "/api/v1/appliances", &tok, None).await;
        assert_eq!(page["items"].as_array().unwrap().len(), 1);
        let listed = &page["items"][0];
        assert_eq!(listed["online"], false);
        assert_eq!(listed["offline_since"], t1.0, "{listed}");
        assert_eq!(listed["last_seen_at"], t0.0);

        let (s, _, v) = api
            .call("POST", "/api/v1/appliances/branch-1/revoke", &tok, None)
            .await;
        assert_eq!(s, 200);
        assert_eq!(v["state"], "revoked");
        let (s, _, v) = api
            .call(
                "POST",
                "/api/v1/appliances",
                &tok,
                Some(json!({"name": "branch-1", "site": "Leeds"})),
            )
            .await;
        assert_eq!(s, 409, "a revoked name is not registered again: {v}");
        let (s, _, _) = api
            .call("POST", "/api/v1/appliances/branch-9/revoke", &tok, None)
            .await;
        assert_eq!(s, 404);
        let (s, _, _) = api
            .call("GET", "/api/v1/appliances/branch-9", &tok, None)
            .await;
        assert_eq!(s, 404);
        let reader = tokens::create_token(store, "r", &["appliances:read".into()])
            .await
            .unwrap();
        let (s, _, _) = api
            .call(
                "POST",
                "/api/v1/appliances",
                &reader,
                Some(json!({"name": "branch-2", "site": "York"})),
            )
            .await;
        assert_eq!(s, 403);
    }
}

#[tokio::test]
async fn appliance_pages_are_keyed_by_name_so_a_registration_between_pages_shifts_nothing() {
    for backend in BACKENDS {
        let api = Api::start(backend).await;
        let tok = api.admin.clone();
        let register = |name: &'static str| {
            let api = &api;
            let tok = tok.clone();
            async move {
                let (s, _, v) = api
                    .call(
                        "POST",
                        "/api/v1/appliances",
                        &tok,
                        Some(json!({"name": name, "site": "Leeds"})),
                    )
                    .await;
                assert_eq!(s, 201, "{v}");
            }
        };
        for name in ["branch-b", "branch-d", "branch-f", "branch-h"] {
            register(name).await;
        }
        let names = |page: &Value| -> Vec<String> {
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["name"].as_str().unwrap().to_string())
                .collect()
        };
        let (s, _, first) = api
            .call("GET", "/api/v1/appliances?limit=2", &tok, None)
            .await;
        assert_eq!(s, 200, "{first}");
        assert_eq!(names(&first), ["branch-b", "branch-d"], "{backend:?}");
        assert_eq!(first["next_after"], "branch-d");
        // Registered between the two pages, sorting before the cursor: by position, the
        // next page would repeat branch-d; by name it goes on where the first ended.
        register("branch-a").await;
        let (_, _, second) = api
            .call(
                "GET",
                "/api/v1/appliances?limit=2&after=branch-d",
                &tok,
                None,
            )
            .await;
        assert_eq!(names(&second), ["branch-f", "branch-h"], "{backend:?}");
        let (_, _, last) = api
            .call(
                "GET",
                "/api/v1/appliances?limit=2&after=branch-h",
                &tok,
                None,
            )
            .await;
        assert_eq!(names(&last), Vec::<String>::new());
        assert_eq!(last["next_after"], Value::Null);
        let (s, _, v) = api
            .call("GET", "/api/v1/appliances?limit=0", &tok, None)
            .await;
        assert_eq!((s, v["field"].as_str()), (422, Some("limit")), "{v}");
    }
}

#[tokio::test]
async fn a_dnc_entry_can_be_removed_once() {
    let api = Api::start(callgate_common::store::Backend::Sqlite).await;
    let tok = api.admin.clone();
    let (s, _, added) = api
        .call(
            "POST",
            "/api/v1/dnc",
            &tok,
            Some(json!([{"number": "+14155550123", "reason": "asked"}])),
        )
        .await;
    assert_eq!(s, 201);
    let id = added["items"][0]["id"].as_i64().unwrap();
    let (s, _, _) = api
        .call("DELETE", &format!("/api/v1/dnc/{id}"), &tok, None)
        .await;
    assert_eq!(s, 204);
    let (s, ctype, _) = api
        .call("DELETE", &format!("/api/v1/dnc/{id}"), &tok, None)
        .await;
    assert_eq!((s, ctype.as_str()), (404, "application/problem+json"));
    let (_, _, page) = api.call("GET", "/api/v1/dnc", &tok, None).await;
    assert!(page["items"].as_array().unwrap().is_empty());
}
