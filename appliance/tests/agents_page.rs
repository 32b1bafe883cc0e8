//! The agent page refuses bad input with clear errors and changes nothing it refused:
//! forms without the session's CSRF token, a pause without a reason, a disposition code the
//! call does not have, a wrong password (and then too many), and a box with no agent desk.
//! Real HTTPS server, store, outbox and desk in this process; a client that trusts exactly
//! the box's certificate.

mod agents_support;
mod sip_support;

use agents_support::{agent_states, rig, serve_agent_page, AGENT};
use callgate_appliance::agents::desk::{DeskSettings, InboundCall};
use callgate_appliance::agents::script::ScreenPop;
use callgate_appliance::web::status::StatusSource;
use callgate_appliance::web::{WebSettings, WebUi};
use callgate_common::ids::{AgentGroupId, CallId};
use callgate_common::wire::AgentState;
use reqwest::header::{COOKIE, SET_COOKIE};
use reqwest::{Client, StatusCode};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PASSWORD: &str = "agent password 1";

async fn client_for(data: &std::path::Path, base: &str) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "web UI never came up"
        );
        if let Ok(pem) = std::fs::read(data.join("web/cert.pem")) {
            let client = Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            if client
                .get(format!("{base}/agent/login"))
                .send()
                .await
                .is_ok()
            {
                return client;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The cookie pair and the CSRF token of a fresh agent session.
async fn log_in(c: &Client, base: &str) -> (String, String) {
    let r = c
        .post(format!("{base}/agent/login"))
        .form(&[("login", "ann"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = r.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page = c
        .get(format!("{base}/agent"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page carries the CSRF token")
        .to_string();
    (cookie, csrf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_agent_page_input_is_refused_with_a_clear_error_and_changes_nothing() {
    let rig = rig(DeskSettings {
        nailed_up: false,
        ..DeskSettings::default()
    })
    .await;
    let data = rig.store_dir().join("web");
    let base = serve_agent_page(&rig.store, rig.desk.clone(), &data, rig.stop.subscribe());
    let c = client_for(&data, &base).await;

    // Empty and wrong credentials.
    let r = c
        .post(format!("{base}/agent/login"))
        .form(&[("login", "ann"), ("password", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("Enter your login and your password"));
    let r = c
        .post(format!("{base}/agent/login"))
        .form(&[("login", "ann"), ("password", "guess")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().await.unwrap().contains("Wrong login or password"));

    let (cookie, csrf) = log_in(&c, &base).await;
    let post = |path: &'static str, form: Vec<(&'static str, String)>| {
        let c = c.clone();
        let (base, cookie) = (base.clone(), cookie.clone());
        async move {
            c.post(format!("{base}{path}"))
                .header(COOKIE, cookie)
                .form(&form)
                .send()
                .await
                .unwrap()
        }
    };

    // A form without the session's token is refused before anything happens.
    let r = post(
        "/agent/pause",
        vec![("csrf", "forged".into()), ("reason", "lunch".into())],
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("security token"));
    // A pause needs a reason.
    let r = post(
        "/agent/pause",
        vec![("csrf", csrf.clone()), ("reason", "   ".into())],
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("a pause needs a reason of 1 to 100 characters"));
    // No call yet: no disposition.
    let r = post(
        "/agent/disposition",
        vec![("csrf", csrf.clone()), ("code", "resolved".into())],
    )
    .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("no call to set a disposition for"));

    // On a call: a code the call does not have is refused, naming the allowed ones.
    let call = CallId::new_v7();
    rig.desk
        .enqueue_inbound(InboundCall {
            call,
            group: AgentGroupId(4),
            pop: ScreenPop::new("support", None, &[], ""),
        })
        .unwrap();
    rig.desk.call_bridged(call);
    let r = post("/agent/ready", vec![("csrf", csrf.clone())]).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(r.text().await.unwrap().contains("finish it first"));
    let r = post(
        "/agent/disposition",
        vec![("csrf", csrf.clone()), ("code", "sold a car".into())],
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let text = r.text().await.unwrap();
    assert!(
        text.contains(
            "is not a disposition code of this call (choose one of: resolved, callback, escalated)"
        ),
        "{text}"
    );
    let r = post("/agent/logout", vec![("csrf", csrf.clone())]).await;
    assert_eq!(
        r.status(),
        StatusCode::CONFLICT,
        "no logout in the middle of a call"
    );

    // Nothing refused left a trace: the agent is talking, the outbox holds exactly the
    // accepted changes.
    assert_eq!(rig.desk.view(AGENT).unwrap().state, "talking");
    rig.desk.flushed().await;
    assert_eq!(
        agent_states(&rig.store).await,
        vec![AgentState::Ready, AgentState::Reserved, AgentState::Talking]
    );
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM agent_disposition")
        .fetch_one(rig.store.pool())
        .await
        .unwrap();
    assert_eq!(n, 0);

    // Repeated wrong passwords lock the source out for a while.
    for _ in 0..5 {
        c.post(format!("{base}/agent/login"))
            .form(&[("login", "ann"), ("password", "guess")])
            .send()
            .await
            .unwrap();
    }
    let r = c
        .post(format!("{base}/agent/login"))
        .form(&[("login", "ann"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.text().await.unwrap().contains("Too many failed logins"));
}

#[tokio::test]
async fn a_box_without_an_agent_desk_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = callgate_appliance::store::Store::open(&data).await.unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let web = WebSettings {
        listen: ([127, 0, 0, 1], port).into(),
        setup_code_file: data.join("setup-code"),
        certificate_names: vec!["127.0.0.1".into()],
        sessions: Default::default(),
        reboot_command: vec![],
        identity_dir: data.join("identity"),
        restart: Default::default(),
        sip: None,
    };
    let status = StatusSource {
        appliance: None,
        started: Instant::now(),
        store,
        data_dir: data.clone(),
        temperature: Arc::new(Mutex::new(None)),
        link: callgate_appliance::sync::status::LinkStatusCell::new(
            callgate_appliance::sync::status::LinkStatus::not_enrolled(),
        ),
        outbox: None,
        campaigns: None,
    };
    let ui = WebUi::bind(&web, status).unwrap();
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(ui.serve(async move {
        let _ = stopped.changed().await;
    }));
    let base = format!("https://127.0.0.1:{port}");
    let c = client_for(&data, &base).await;
    let r = c.get(format!("{base}/agent/login")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("the agent desk is not running on this box"));
    let _ = stop.send(true);
}
