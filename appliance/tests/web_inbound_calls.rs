//! The status page's call list includes inbound calls offered to the agents' SIP side: the
//! agents' user agent (the daemon's `SipAgent`) keeps them from a real SIPp caller's INVITE
//! (ringing, the caller's number masked) through the answer (up) to the caller's BYE (gone),
//! and the list the status page reads from its control says so at each step; the real
//! daemon's status page shows a queued inbound call of an agent group until its end.

mod common;
mod sip_support;

use callgate_appliance::sip::live_calls::{CallDirection, CallPhase, LiveCall};
use callgate_appliance::sip::udp::UdpAgent;
use callgate_appliance::store::Store;
use callgate_common::ids::AgentGroupId;
use callgate_common::wire::{AgentGroupBrief, AgentRoster, Downlink};
use callgate_sip::agent::{AgentConfig, AgentEvent};
use callgate_sip::inbound::{InboundPolicy, InboundRoute, RouteTarget, UnknownSource};
use callgate_sip::transaction::TimerConfig;
use common::Appliance;
use sip_support::{free_udp_port, Sipp};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Waits until the list satisfies `ok`, at most a minute.
async fn until(calls: &mut watch::Receiver<Vec<LiveCall>>, ok: impl Fn(&[LiveCall]) -> bool) {
    let wait = async {
        while !ok(&calls.borrow_and_update()) {
            calls.changed().await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .unwrap_or_else(|_| panic!("the call list never got there: {:?}", calls.borrow()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_call_is_listed_ringing_then_up_and_leaves_at_its_end() {
    let mut ua = UdpAgent::start(
        "127.0.0.1:0".parse().unwrap(),
        AgentConfig {
            local: "127.0.0.1:0".parse().unwrap(),
            user: "agents".into(),
            timers: TimerConfig::default(),
            credentials: None,
            seed: 5,
        },
    )
    .await
    .unwrap();
    ua.set_inbound_policy(InboundPolicy {
        allowed_sources: vec!["127.0.0.1".parse().unwrap()],
        trunk_names: Vec::new(),
        unknown_source: UnknownSource::Reject,
        per_source_rate: 20,
        per_source_burst: 40,
        routes: vec![InboundRoute {
            number: "4930*".into(),
            target: RouteTarget::AgentGroup("support".into()),
        }],
    })
    .unwrap();
    let mut calls = ua.control().calls();
    assert!(calls.borrow().is_empty());

    // A caller on the trunk's address; it hangs up 1.5 s after the answer.
    let caller = Sipp::start_on(
        free_udp_port(),
        &["-sn", "uac", &ua.local_addr().to_string()],
        &["-m", "1", "-d", "1500", "-s", "4930777"],
    );
    let leg = loop {
        match tokio::time::timeout(Duration::from_secs(30), ua.next_event())
            .await
            .expect("the INVITE arrives")
            .unwrap()
        {
            AgentEvent::Incoming { leg, .. } => break leg,
            _ => continue,
        }
    };
    until(&mut calls, |l| {
        l.len() == 1 && l[0].phase == CallPhase::Ringing && l[0].direction == CallDirection::Inbound
    })
    .await;
    // SIPp's caller is `sipp`: not a phone number, starred.
    assert_eq!(calls.borrow()[0].number, "****");

    ua.answer(
        leg,
        b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
          m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
            .to_vec(),
    )
    .unwrap();
    // The list is fed by the events the agent gives out: keep taking them.
    let events = tokio::spawn(async move {
        let mut ended = false;
        while let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(30), ua.next_event()).await
        {
            if matches!(e, AgentEvent::Ended { .. }) {
                ended = true;
                break;
            }
        }
        (ua, ended)
    });
    until(&mut calls, |l| {
        l.len() == 1 && l[0].phase == CallPhase::Up && l[0].answered.is_some()
    })
    .await;
    let (ok, errors) = caller.passed().await;
    assert!(
        ok,
        "the caller's call was answered and hung up cleanly: {errors}"
    );
    let (_ua, ended) = events.await.unwrap();
    assert!(ended, "the caller's BYE ended the call");
    until(&mut calls, |l| l.is_empty()).await;
}

/// The real daemon: a caller from the trunk's address dials the route table's `service`
/// (the agent group `support`, nobody logged in: the box answers and queues it); the status
/// page lists it as an inbound call, up, and drops it after the caller hangs up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemons_status_page_lists_a_queued_inbound_call_until_the_caller_hangs_up() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(&dir.path().join("data")).await.unwrap();
        let mut tx = store.pool().begin().await.unwrap();
        callgate_appliance::agents::roster::apply_downlink(
            &mut tx,
            &Downlink::AgentRoster(AgentRoster {
                version: 1,
                groups: vec![AgentGroupBrief {
                    group: AgentGroupId(4),
                    name: "support".into(),
                }],
                agents: vec![],
            }),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        store.pool().close().await;
    }
    let agents_sip = format!("127.0.0.1:{}", free_udp_port());
    let rtp = (free_udp_port() & !1).min(58_000);
    let extra = format!(
        "[board]\nkind = \"none\"\n\
         [sip]\nlisten = \"127.0.0.1:{sip}\"\n\
         [[sip.trunks]]\nname = \"carrier\"\naddress = \"127.0.0.1:{trunk}\"\nmax_channels = 5\nmax_cps = 5\n\
         [[sip.routes]]\nnumber = \"service\"\nagent_group = \"support\"\n\
         [dialer]\nrtp_first_port = {rtp}\nrtp_last_port = {dialer_last}\n\
         [agents]\nsip_listen = \"{agents_sip}\"\nrtp_first_port = {agents_rtp}\nrtp_last_port = {agents_last}\n\
         queue_overflow_seconds = 600\n",
        sip = free_udp_port(),
        trunk = free_udp_port(),
        dialer_last = rtp + 99,
        agents_rtp = rtp + 100,
        agents_last = rtp + 199,
    );
    let b = Appliance::start_in(dir, &extra).await;
    b.set_up().await;
    let cookie = b.log_in().await;
    let started = Instant::now();
    while !b.log().contains("agents' SIP side, desk and lines started") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the agents' side did not start: {}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = || async {
        let html = b.get("/status", Some(&cookie)).await.text().await.unwrap();
        let table = html
            .split("id=\"call-list\"")
            .nth(1)
            .unwrap_or("")
            .to_string();
        let body = table.split("</table>").next().unwrap_or("").to_string();
        body.split("<tr>")
            .skip(2)
            .map(|r| {
                r.replace("</td>", "|")
                    .replace("<td>", "")
                    .replace("</tr>", "")
            })
            .map(|r| r.trim().to_string())
            .collect::<Vec<_>>()
    };

    // SIPp's caller holds 6 s after the answer, then hangs up.
    let caller = Sipp::start_on(
        free_udp_port(),
        &["-sn", "uac", &agents_sip],
        &["-m", "1", "-d", "6000", "-s", "service"],
    );
    let started = Instant::now();
    let row = loop {
        if let Some(r) = rows()
            .await
            .into_iter()
            .find(|r| r.contains("|inbound|up|"))
        {
            break r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no inbound call listed: {:?}\n{}",
            rows().await,
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The trunk is named by the INVITE's source address (the configured trunk's).
    assert!(row.starts_with("****|carrier|inbound|up|"), "{row}");
    let (ok, errors) = caller.passed().await;
    assert!(ok, "the caller was answered and hung up: {errors}");
    let started = Instant::now();
    loop {
        let now = rows().await;
        if now.iter().all(|r| !r.contains("|inbound|")) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the ended call is still listed: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
