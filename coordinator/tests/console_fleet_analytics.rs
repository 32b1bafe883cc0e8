//! Fleet, live figures, analytics and CSV export in the HQ console over real HTTPS, with
//! appliance traffic applied through the coordinator's uplink apply path.

mod console_support;

use callgate_common::store::Backend;
use callgate_common::time::UnixMillis;
use callgate_common::wire::CallOutcome;
use callgate_coordinator::console::live;
use console_support::{uplink, Hq, PASSWORD};
use reqwest::StatusCode;

#[tokio::test]
async fn an_admin_registers_an_appliance_sees_its_claim_code_once_and_revokes_it() {
    let hq = Hq::start().await;
    let admin = hq.admin().await;
    let r = admin
        .submit("/fleet", &[("name", "Bad Name!"), ("site", "x")])
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("name:"), "{}", r.body);

    let r = admin
        .submit("/fleet", &[("name", "branch-7"), ("site", "Leeds")])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let at = r
        .body
        .find("id=\"claim-code\">")
        .expect("the claim code is shown")
        + 16;
    let code = &r.body[at..at + 19];
    assert_eq!(code.len(), 19, "{code}");
    assert_eq!(code.matches('-').count(), 3, "{code}");
    let again = admin.get("/fleet").await;
    assert!(!again.body.contains(code), "shown once only");
    assert!(again.body.contains("branch-7") && again.body.contains("never connected"));

    let r = admin.submit("/fleet/branch-7/revoke", &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("branch-7 revoked"));
    let state = callgate_coordinator::enroll::registry::state(
        hq.store.pool(),
        &callgate_common::ids::ApplianceId::new("branch-7").unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        state,
        Some(callgate_coordinator::enroll::registry::ApplianceState::Revoked)
    );
    let entries =
        callgate_coordinator::console::audit::page(&hq.store, &Default::default(), None, 10)
            .await
            .unwrap();
    assert_eq!(entries[0].action, "appliance.revoke");
    assert!(entries[0]
        .before
        .as_deref()
        .unwrap()
        .contains("\"registered\""));
    assert!(entries[0].after.as_deref().unwrap().contains("\"revoked\""));
    assert_eq!(entries[1].action, "appliance.register");
    assert!(
        !entries[1].after.as_deref().unwrap().contains(code),
        "no claim code in the log"
    );

    // A supervisor may not touch the fleet.
    admin
        .submit(
            "/users",
            &[
                ("username", "sue"),
                ("role", "supervisor"),
                ("password", PASSWORD),
            ],
        )
        .await;
    let sue = hq.login("sue", PASSWORD).await;
    assert_eq!(
        sue.submit("/fleet", &[("name", "branch-8")]).await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn the_fleet_shows_online_appliances_and_offline_ones_with_their_last_known_figures() {
    let hq = Hq::start().await;
    uplink::telemetry(&hq.store, "branch-1", 2, 5).await;
    // branch-2 was last heard from ten minutes ago.
    let ten_min_ago = UnixMillis(UnixMillis::now().0 - 600_000);
    uplink::telemetry_at(&hq.store, "branch-2", 4, 1, ten_min_ago).await;
    let s = live::snapshot(&hq.store, UnixMillis::now()).await.unwrap();
    let b1 = s.appliances.iter().find(|a| a.name == "branch-1").unwrap();
    let b2 = s.appliances.iter().find(|a| a.name == "branch-2").unwrap();
    assert!(b1.online && b1.status == "online");
    assert!(
        !b2.online && b2.status.starts_with("offline since "),
        "{}",
        b2.status
    );
    assert_eq!(
        (b2.calls, b2.agents_ready),
        (4, 1),
        "last known figures kept"
    );
    assert_eq!(
        s.totals.calls, 2,
        "only online appliances' calls are in progress"
    );
    assert_eq!(s.totals.appliances_online, 1);
    assert!(
        b1.trunks[0] == "carrier-a up ASR 45.0 % PDD 1800 ms, 2 calls",
        "{:?}",
        b1.trunks
    );

    let admin = hq.admin().await;
    let page = admin.get("/fleet").await;
    assert!(page.body.contains("offline since"), "{}", page.body);
    assert!(page.body.contains("last known"));
    let csv = admin.get("/export/fleet").await;
    assert_eq!(csv.status, StatusCode::OK);
    let mut lines = csv.body.lines();
    assert_eq!(
        lines.next().unwrap(),
        "appliance,status,calls,agents_ready,attempts_24h,answer_rate,occupancy,outbox_depth,firmware,trunks"
    );
    let branch_1 = lines.next().unwrap();
    assert!(branch_1.starts_with("branch-1,online,2,5,"), "{branch_1}");
    assert!(
        branch_1.ends_with(",\"carrier-a up ASR 45.0 % PDD 1800 ms, 2 calls\""),
        "the export carries the trunks as the page shows them: {branch_1}"
    );
    assert!(lines.next().unwrap().starts_with("branch-2,offline since"));
}

async fn abandon_rates_are_shown_against_the_cap_and_analytics_draw_and_export_them(
    backend: Backend,
) {
    let hq = Hq::start_on(backend).await;
    let admin = hq.admin().await;
    // A campaign under the UK profile (3 % over 24 h), created through the console.
    let profiles = callgate_coordinator::compliance::page_profiles(&hq.store, 0, 10)
        .await
        .unwrap();
    let uk = profiles.iter().find(|p| p.name == "uk").unwrap().id;
    let spec: callgate_coordinator::campaigns::CampaignSpec = serde_json::from_value(serde_json::json!({
        "name": "UK renewals", "kind": "service", "dial_mode": "predictive",
        "compliance_profile_id": uk,
        "calling_window": {"start_minute": 480, "end_minute": 1260, "days": [0,1,2,3,4], "holidays": []},
        "caller_id": "+442079460000",
        "disposition_codes": ["sale", "callback"], "conversion_dispositions": ["sale"]
    }))
    .unwrap();
    let c = callgate_coordinator::campaigns::create(&hq.store, spec)
        .await
        .unwrap();
    for i in 0..19 {
        // Three sales (conversions) and two call-backs (not).
        let disposition = match i {
            0..3 => Some("sale"),
            3..5 => Some("callback"),
            _ => None,
        };
        uplink::attempt_with(
            &hq.store,
            "branch-1",
            c.id,
            i,
            CallOutcome::AnsweredHuman,
            disposition,
        )
        .await;
    }
    uplink::attempt(&hq.store, "branch-1", c.id, 50, CallOutcome::Abandoned).await;
    uplink::attempt(&hq.store, "branch-1", c.id, 51, CallOutcome::Busy).await;
    let s = live::snapshot(&hq.store, UnixMillis::now()).await.unwrap();
    let row = s.campaigns.iter().find(|r| r.id == c.id).unwrap();
    assert_eq!(row.attempts_24h, 21);
    assert_eq!(row.abandon_24h, "5.0 %");
    assert_eq!(row.cap, "3.0 % / 24 h");
    assert!(row.over_cap, "5 % is over the 3 % cap");
    let dash = admin.get("/dashboard").await;
    assert!(dash.body.contains("class=\"over\""), "the row is flagged");
    assert!(dash.body.contains("UK renewals"));

    let page = admin.get("/analytics?days=7").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.body.matches("<svg class=\"chart\"").count(), 10);
    for title in [
        "Attempts",
        "Connects",
        "Answer rate",
        "Average handle time",
        "Abandons",
        "Conversions",
        "MOS",
        "Agent occupancy",
        "ASR per carrier",
        "PDD per carrier",
    ] {
        assert!(
            page.body.contains(&format!("<title>{title}</title>")),
            "{title}"
        );
    }
    assert!(page.body.contains("carrier-a"));
    let daily = admin
        .get(&format!("/export/daily?days=3&campaign={}", c.id))
        .await;
    let last = daily.body.lines().last().unwrap().to_string();
    let cells: Vec<&str> = last.split(',').collect();
    assert_eq!(cells[1..4], ["21", "20", "95.238"], "{last}");
    assert_eq!(cells[4], "50.000", "19 agent calls of 50 s each: {last}");
    assert_eq!(cells[5], "1");
    assert_eq!(
        cells[7], "3",
        "three sales, the call-backs are not conversions: {last}"
    );
    assert!(
        page.body.contains("<title>Conversions</title>"),
        "the conversions chart is drawn"
    );
    let carriers = admin.get("/export/carriers?days=3").await;
    assert!(
        carriers.body.contains("carrier-a,21,20,95.238,1800.000"),
        "{}",
        carriers.body
    );
    for table in ["campaigns", "lists", "audit", "dnc", "users", "live"] {
        let r = admin.get(&format!("/export/{table}")).await;
        assert_eq!(r.status, StatusCode::OK, "{table}");
        assert!(r.body.lines().count() >= 1, "{table} has a header");
    }
    assert_eq!(
        admin.get("/export/secrets").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn on_sqlite_abandon_rates_are_shown_against_the_cap_and_analytics_draw_and_export_them() {
    abandon_rates_are_shown_against_the_cap_and_analytics_draw_and_export_them(Backend::Sqlite)
        .await;
}

#[tokio::test]
async fn on_postgres_abandon_rates_are_shown_against_the_cap_and_analytics_draw_and_export_them() {
    abandon_rates_are_shown_against_the_cap_and_analytics_draw_and_export_them(Backend::Postgres)
        .await;
}

#[tokio::test]
async fn presence_from_the_link_gives_the_fleet_its_firmware_and_since_when() {
    use callgate_common::ids::ApplianceId;
    use callgate_coordinator::sync::presence;
    let hq = Hq::start().await;
    let pool = hq.store.pool();
    let b3 = ApplianceId::new("branch-3").unwrap();
    let b4 = ApplianceId::new("branch-4").unwrap();
    let hour_ago = UnixMillis(UnixMillis::now().0 - 3_600_000);
    presence::hello(pool, &b3, "1.4.2", hour_ago).await.unwrap();
    presence::hello(pool, &b4, "1.3.9", hour_ago).await.unwrap();
    // branch-4's last will: offline now, though it was heard from recently.
    presence::status(pool, &b4, false, UnixMillis::now())
        .await
        .unwrap();
    uplink::telemetry(&hq.store, "branch-4", 1, 1).await;

    let s = live::snapshot(&hq.store, UnixMillis::now()).await.unwrap();
    let a3 = s.appliances.iter().find(|a| a.name == "branch-3").unwrap();
    let a4 = s.appliances.iter().find(|a| a.name == "branch-4").unwrap();
    assert!(
        a3.online && a3.status.starts_with("online since "),
        "{}",
        a3.status
    );
    assert_eq!(a3.firmware, "1.4.2");
    assert!(
        !a4.online && a4.status.starts_with("offline since "),
        "the last will wins over recent traffic: {}",
        a4.status
    );
    assert_eq!(a4.firmware, "1.3.9", "the last known firmware stays");

    let page = hq.admin().await.get("/fleet").await;
    assert!(
        page.body.contains("1.4.2") && page.body.contains("1.3.9"),
        "{}",
        page.body
    );
}

/// Progressive service campaigns under the first profile, one per name; their ids.
async fn campaigns_named<const N: usize>(hq: &Hq, names: [&str; N]) -> [i64; N] {
    let us = callgate_coordinator::compliance::page_profiles(&hq.store, 0, 10)
        .await
        .unwrap()[0]
        .id;
    let mut ids = [0; N];
    for (id, name) in ids.iter_mut().zip(names) {
        let spec: callgate_coordinator::campaigns::CampaignSpec =
            serde_json::from_value(serde_json::json!({
                "name": name, "kind": "service", "dial_mode": "progressive",
                "compliance_profile_id": us,
                "calling_window": {"start_minute": 480, "end_minute": 1260, "days": [0,1,2,3,4], "holidays": []},
                "caller_id": "+14155550100",
            }))
            .unwrap();
        *id = callgate_coordinator::campaigns::create(&hq.store, spec)
            .await
            .unwrap()
            .id;
    }
    ids
}

async fn occupancy_comes_from_the_appliances_agent_events(backend: Backend) {
    use callgate_common::wire::AgentState;
    let hq = Hq::start_on(backend).await;
    let [renewals, quiet] = campaigns_named(&hq, ["renewals", "quiet"]).await;
    let now = UnixMillis::now();
    let min = |m: i64| UnixMillis(now.0 - m * 60_000);
    // Agent 1: ready since before the window, talking 10 to 5 minutes ago: busy 5 of 15 min.
    uplink::agent_event(&hq.store, "branch-1", 1, AgentState::Ready, min(20)).await;
    let talking = AgentState::Talking;
    uplink::agent_event_on(&hq.store, "branch-1", 1, talking, min(10), Some(renewals)).await;
    uplink::agent_event(&hq.store, "branch-1", 1, AgentState::Ready, min(5)).await;
    // Agent 2: paused (not available) until 3 minutes ago, then ready.
    let lunch = AgentState::Paused {
        reason: "lunch".into(),
    };
    uplink::agent_event(&hq.store, "branch-1", 2, lunch, min(20)).await;
    uplink::agent_event(&hq.store, "branch-1", 2, AgentState::Ready, min(3)).await;
    // Another box: one agent in wrap-up the whole window.
    let wrap_up = AgentState::WrapUp;
    uplink::agent_event_on(&hq.store, "branch-2", 1, wrap_up, min(16), Some(renewals)).await;

    let s = live::snapshot(&hq.store, now).await.unwrap();
    let b1 = s.appliances.iter().find(|a| a.name == "branch-1").unwrap();
    assert_eq!(
        (b1.busy_ms, b1.available_ms),
        (5 * 60_000, 18 * 60_000),
        "5 busy minutes over 15 + 3 available"
    );
    assert_eq!(b1.occupancy, "27.7 %");
    let b2 = s.appliances.iter().find(|a| a.name == "branch-2").unwrap();
    assert_eq!(b2.occupancy, "100.0 %");
    assert_eq!(
        s.totals.occupancy, "60.6 %",
        "20 busy of 33 available minutes"
    );
    // The campaign: 5 + 15 minutes on its calls, over the 15 + 15 available minutes of the
    // two agents who served it (agent 2 never did); the other campaign had nobody.
    let occupancy = |id: i64| {
        s.campaigns
            .iter()
            .find(|c| c.id == id)
            .unwrap()
            .occupancy
            .clone()
    };
    assert_eq!(occupancy(renewals), "66.6 %");
    assert_eq!(occupancy(quiet), "–");
    let admin = hq.admin().await;
    let page = admin.get("/dashboard").await;
    assert!(page.body.contains("<td>66.6 %</td></tr>"), "{}", page.body);

    // Over time (analytics, per UTC day), two days back so that the events above stay
    // out of it: agent 7 available 10:00-12:00 and busy on the campaign 10:30-11:15,
    // agent 8 available 10:00-11:00 and never busy.
    let d0 = (now.0 / 86_400_000 - 2) * 86_400_000;
    let at = |h: i64, m: i64| UnixMillis(d0 + h * 3_600_000 + m * 60_000);
    for (agent, state, when, campaign) in [
        (7, AgentState::Ready, at(10, 0), None),
        (7, AgentState::Talking, at(10, 30), Some(renewals)),
        (7, AgentState::WrapUp, at(11, 0), Some(renewals)),
        (7, AgentState::Ready, at(11, 15), None),
        (7, AgentState::LoggedOut, at(12, 0), None),
        (8, AgentState::Ready, at(10, 0), None),
        (8, AgentState::LoggedOut, at(11, 0), None),
    ] {
        uplink::agent_event_on(&hq.store, "branch-9", agent, state, when, campaign).await;
    }
    let first_row = |csv: &str| csv.lines().nth(1).unwrap().to_string();
    let all = admin.get("/export/daily?days=3").await.body;
    assert!(
        first_row(&all).ends_with(",25.000"),
        "45 busy of 180 available minutes: {all}"
    );
    let one = admin
        .get(&format!("/export/daily?days=3&campaign={renewals}"))
        .await
        .body;
    assert!(
        first_row(&one).ends_with(",37.500"),
        "45 busy of agent 7's 120 minutes: {one}"
    );
    assert!(admin
        .get("/analytics?days=3")
        .await
        .body
        .contains("<title>Agent occupancy</title>"));
}

async fn calls_in_progress_per_campaign_are_what_the_online_boxes_report(backend: Backend) {
    let hq = Hq::start_on(backend).await;
    let [renewals, winback] = campaigns_named(&hq, ["renewals", "winback"]).await;
    let now = UnixMillis::now();
    // branch-1 is online with 3 calls on renewals and 1 on winback; branch-2 said 4 on
    // renewals ten minutes ago and has not been heard from since.
    uplink::telemetry(&hq.store, "branch-1", 4, 2).await;
    uplink::campaign_calls_at(&hq.store, "branch-1", &[(renewals, 3), (winback, 1)], now).await;
    let ten_min_ago = UnixMillis(now.0 - 600_000);
    uplink::telemetry_at(&hq.store, "branch-2", 4, 1, ten_min_ago).await;
    uplink::campaign_calls_at(&hq.store, "branch-2", &[(renewals, 4)], ten_min_ago).await;
    let calls =
        |s: &live::Snapshot, id: i64| s.campaigns.iter().find(|c| c.id == id).unwrap().calls;
    let s = live::snapshot(&hq.store, UnixMillis::now()).await.unwrap();
    assert_eq!(
        (calls(&s, renewals), calls(&s, winback)),
        (3, 1),
        "an offline box's last report counts for nothing"
    );
    // winback's call ended: branch-1's next report leaves it out.
    uplink::campaign_calls_at(&hq.store, "branch-1", &[(renewals, 2)], UnixMillis::now()).await;
    let s = live::snapshot(&hq.store, UnixMillis::now()).await.unwrap();
    assert_eq!((calls(&s, renewals), calls(&s, winback)), (2, 0));
    let admin = hq.admin().await;
    let page = admin.get("/dashboard").await;
    assert!(
        page.body.contains(&format!(
            "<tr data-key=\"{renewals}\"><td>renewals</td><td>draft</td><td>2</td><td>0</td>"
        )),
        "calls in progress, then contacts on lease: {}",
        page.body
    );
    let csv = admin.get("/export/live").await.body;
    assert!(
        csv.lines()
            .any(|l| l.starts_with(&format!("{renewals},renewals,draft,2,0,"))),
        "{csv}"
    );
}

#[tokio::test]
async fn on_sqlite_calls_in_progress_per_campaign_are_what_the_online_boxes_report() {
    calls_in_progress_per_campaign_are_what_the_online_boxes_report(Backend::Sqlite).await;
}

#[tokio::test]
async fn on_postgres_calls_in_progress_per_campaign_are_what_the_online_boxes_report() {
    calls_in_progress_per_campaign_are_what_the_online_boxes_report(Backend::Postgres).await;
}

#[tokio::test]
async fn on_sqlite_occupancy_comes_from_the_appliances_agent_events() {
    occupancy_comes_from_the_appliances_agent_events(Backend::Sqlite).await;
}

#[tokio::test]
async fn on_postgres_occupancy_comes_from_the_appliances_agent_events() {
    occupancy_comes_from_the_appliances_agent_events(Backend::Postgres).await;
}
