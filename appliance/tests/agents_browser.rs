//! The agent page in a real browser: headless Chromium logs an agent in with roster
//! credentials, pauses and gets ready, sees an inbound call pop (customer, masked number,
//! fields, the script filled in, a running call timer), saves a disposition and is ready
//! again; the agent events are in the durable outbox in order.
//!
//! The web server, the store, the outbox and the desk are the real ones, in this process;
//! the call is put in front of the desk the way the inbound call path does
//! (`enqueue_inbound`, `call_bridged`, `call_ended`).

mod agents_support;
mod common;
mod sip_support;

use callgate_appliance::agents::desk::{
    DeskSettings, InboundCall, OfferDecision, PHONE_CONNECTING,
};
use callgate_appliance::agents::script::ScreenPop;
use callgate_appliance::agents::service::AgentDeskService;
use callgate_appliance::store::Store;
use callgate_appliance::sync::outbox_store::UplinkOutbox;
use callgate_common::ids::{AgentGroupId, AgentId, CallId};
use callgate_common::outbox::OutboxConfig;
use callgate_common::phone::PhoneNumber;
use callgate_common::wire::{
    AgentBrief, AgentGroupBrief, AgentRoster, AgentState, Downlink, Uplink,
};
use common::browser::{browser, fill, text_of, wait_for_path};
use fantoccini::{Client, Locator};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PASSWORD: &str = "agent password 1";
const SUPPORT: AgentGroupId = AgentGroupId(4);

struct Box {
    base: String,
    store: Store,
    desk: AgentDeskService,
    _stop: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

async fn start_box() -> Box {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = Store::open(&data).await.unwrap();
    // The roster arrives as the sync link applies it.
    let roster = AgentRoster {
        version: 3,
        groups: vec![AgentGroupBrief {
            group: SUPPORT,
            name: "support".into(),
        }],
        agents: vec![AgentBrief {
            agent: AgentId(11),
            name: "Ann Agent".into(),
            login: "ann".into(),
            password_phc: callgate_appliance::web::auth::hash_password(PASSWORD),
            sip_username: "ann-phone".into(),
            skills: vec!["english".into()],
            groups: vec![SUPPORT],
        }],
    };
    let mut tx = store.pool().begin().await.unwrap();
    callgate_appliance::agents::roster::apply_downlink(&mut tx, &Downlink::AgentRoster(roster))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let outbox = UplinkOutbox::open(store.pool().clone(), OutboxConfig::default())
        .await
        .unwrap();
    let shared = Arc::new(tokio::sync::RwLock::new(Arc::new(outbox)));
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let settings = DeskSettings {
        nailed_up: false,
        inbound_wrap_up_ms: 120_000,
        ..DeskSettings::default()
    };
    let (desk, _calls) =
        AgentDeskService::start(store.pool().clone(), Some(shared), settings, stop_rx)
            .await
            .unwrap();
    let base = agents_support::serve_agent_page(&store, desk.clone(), &data, stop.subscribe());
    Box {
        base,
        store,
        desk,
        _stop: stop,
        _dir: dir,
    }
}

async fn wait_for_text(c: &Client, css: &str, want: &str) {
    let start = Instant::now();
    loop {
        // The element may belong to a page still loading: look again until it is there.
        let now = match c.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if now.contains(want) {
            return;
        }
        if start.elapsed() > Duration::from_secs(15) {
            let page = c.source().await.unwrap_or_default();
            panic!("{css} shows {now:?}, never {want:?}; page:\n{page}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn agent_events(store: &Store) -> Vec<(AgentState, Option<CallId>)> {
    let rows: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT body FROM sync_outbox ORDER BY id")
        .fetch_all(store.pool())
        .await
        .unwrap();
    rows.into_iter()
        .filter_map(|(b,)| match postcard::from_bytes::<Uplink>(&b).unwrap() {
            Uplink::AgentEvent(e) => Some((e.state, e.call)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_logs_in_takes_an_inbound_call_with_a_screen_pop_and_saves_a_disposition_in_chromium(
) {
    let b = start_box().await;
    let (_driver, c) = browser().await;

    c.goto(&format!("{}/agent", b.base)).await.unwrap();
    wait_for_path(&c, "/agent/login").await;
    fill(
        &c,
        "agent-login",
        &[("login", "ann"), ("password", "not it")],
    )
    .await;
    wait_for_text(&c, ".error", "Wrong login or password").await;
    fill(
        &c,
        "agent-login",
        &[("login", "ann"), ("password", PASSWORD)],
    )
    .await;
    wait_for_path(&c, "/agent").await;
    wait_for_text(&c, "#state", "Ready").await;

    // A pause without a reason is refused with a clear error; with one it holds.
    click(&c, "form#pause button").await;
    wait_for_text(&c, ".error", "a pause needs a reason").await;
    fill(&c, "pause", &[("reason", "training")]).await;
    wait_for_text(&c, "#state", "Paused").await;
    wait_for_text(&c, "#paused-reason", "training").await;
    click(&c, "form#ready button").await;
    wait_for_text(&c, "#state", "Ready").await;

    // An inbound call for the agent's group arrives: the page pops it without a reload.
    let number = PhoneNumber::parse("+442071234567", None).unwrap();
    let fields = vec![
        ("name".to_string(), "Grace Hopper".to_string()),
        ("account".to_string(), "A-1906".to_string()),
    ];
    let call = CallId::new_v7();
    let decision = b
        .desk
        .enqueue_inbound(InboundCall {
            call,
            group: SUPPORT,
            pop: ScreenPop::new(
                "support line",
                Some(&number),
                &fields,
                "Good morning {{name}}, I see account {{account}}.",
            ),
        })
        .unwrap();
    assert_eq!(decision, OfferDecision::Connect { agent: AgentId(11) });
    wait_for_text(&c, "#state", "Incoming call").await;
    assert!(b.desk.call_bridged(call));
    wait_for_text(&c, "#state", "Talking").await;
    assert_eq!(text_of(&c, "#pop-customer").await, "Grace Hopper");
    assert_eq!(text_of(&c, "#pop-number").await, number.masked());
    assert!(!c.source().await.unwrap().contains("2071234567"));
    assert_eq!(
        text_of(&c, "#pop-script").await,
        "Good morning Grace Hopper, I see account A-1906."
    );
    wait_for_text(&c, "#pop-fields", "A-1906").await;
    // The call timer runs.
    wait_for_text(&c, "#timer", "0:01").await;

    b.desk.call_ended(call);
    wait_for_text(&c, "#state", "Wrap-up").await;
    c.find(Locator::Css("#disposition-code"))
        .await
        .unwrap()
        .select_by_value("callback")
        .await
        .unwrap();
    click(&c, "form#disposition button").await;
    wait_for_text(&c, "#state", "Ready").await;

    let (code,): (String,) = sqlx::query_as("SELECT code FROM agent_disposition WHERE call_id = ?")
        .bind(call.to_string())
        .fetch_one(b.store.pool())
        .await
        .unwrap();
    assert_eq!(code, "callback");
    b.desk.flushed().await;
    assert_eq!(
        agent_events(&b.store).await,
        vec![
            (AgentState::Ready, None),
            (
                AgentState::Paused {
                    reason: "training".into()
                },
                None
            ),
            (AgentState::Ready, None),
            (AgentState::Reserved, Some(call)),
            (AgentState::Talking, Some(call)),
            (AgentState::WrapUp, Some(call)),
            (AgentState::Ready, None),
        ]
    );

    click(&c, "form.agent-logout button").await;
    // The form's redirect and the live stream's logged-out event race to the login form.
    let start = Instant::now();
    while c.current_url().await.unwrap().path() != "/agent/login" {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "logout never left the desk page"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.desk.flushed().await;
    assert_eq!(
        agent_events(&b.store).await.last(),
        Some(&(AgentState::LoggedOut, None))
    );
    // The session is gone: the desk page sends the browser to the login form (with
    // `?ended=1` when the browser still held the cookie of the closed session).
    c.goto(&format!("{}/agent", b.base)).await.unwrap();
    let start = Instant::now();
    while c.current_url().await.unwrap().path() != "/agent/login" {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the desk page stayed reachable"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(c.find(Locator::Css("form#agent-login")).await.is_ok());
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_sip_the_agent_logs_in_on_the_page_answers_a_sipp_caller_and_disposes_in_chromium()
{
    let rig = agents_support::rig(DeskSettings {
        inbound_wrap_up_ms: 60_000,
        ..DeskSettings::default()
    })
    .await;
    let data = rig.store_dir().join("web");
    let base =
        agents_support::serve_agent_page(&rig.store, rig.desk.clone(), &data, rig.stop.subscribe());
    let (_driver, c) = browser().await;
    c.goto(&format!("{base}/agent/login")).await.unwrap();
    let phone = agents_support::start_phone(&rig, 9_000).await;

    // Logging in on the page calls the desk phone (SIPp answers): the page turns ready.
    fill(
        &c,
        "agent-login",
        &[("login", "ann"), ("password", PASSWORD)],
    )
    .await;
    wait_for_path(&c, "/agent").await;
    wait_for_text(&c, "#state", "Ready").await;

    // A SIPp caller dials the support number: answered, bridged, popped on the page.
    let caller = sip_support::Sipp::start_on(
        sip_support::free_udp_port(),
        &["-sn", "uac", &rig.box_addr],
        &["-m", "1", "-d", "2000"],
    );
    wait_for_text(&c, "#state", "Talking").await;
    assert_eq!(text_of(&c, "#pop-source").await, "support");
    wait_for_text(&c, "#pop-fields", "service").await;
    let (ok, errors) = caller.passed().await;
    assert!(ok, "{errors}");
    wait_for_text(&c, "#state", "Wrap-up").await;
    c.find(Locator::Css("#disposition-code"))
        .await
        .unwrap()
        .select_by_value("resolved")
        .await
        .unwrap();
    click(&c, "form#disposition button").await;
    wait_for_text(&c, "#state", "Ready").await;

    // The phone hangs up the nailed-up leg: the page goes back to the login form.
    let (ok, errors) = phone.passed().await;
    assert!(ok, "{errors}");
    let start = Instant::now();
    while c.current_url().await.unwrap().path() != "/agent/login" {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the page never noticed the logout"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(text_of(&c, ".notice").await.contains("logged out"));
    rig.desk.flushed().await;
    let states = agents_support::agent_states(&rig.store).await;
    assert_eq!(
        states,
        vec![
            AgentState::Paused {
                reason: PHONE_CONNECTING.into()
            },
            AgentState::Ready,
            AgentState::Reserved,
            AgentState::Talking,
            AgentState::WrapUp,
            AgentState::Ready,
            AgentState::LoggedOut,
        ]
    );
    c.close().await.unwrap();
}
