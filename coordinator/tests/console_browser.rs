//! The HQ console in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed by `scripts/setup`) driven over WebDriver through login,
//! a contact-list upload with bad rows, campaign creation with a field error, and the live
//! dashboard updating over its WebSocket while simulated call results are applied through
//! the coordinator's uplink apply path.

mod console_support;

use callgate_common::time::UnixMillis;
use callgate_common::wire::CallOutcome;
use callgate_system_tests::browser::Browser;
use console_support::{uplink, Hq};
use fantoccini::{Client, Locator};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(15);

async fn type_into(c: &Client, css: &str, text: &str) {
    let el = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    el.clear().await.unwrap();
    el.send_keys(text).await.unwrap();
}

async fn click(c: &Client, css: &str) {
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

async fn text_of(c: &Client, css: &str) -> String {
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

/// Waits until `css`'s text satisfies `ok`; returns it.
async fn wait_text(c: &Client, css: &str, ok: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let t = match c.find(Locator::Css(css)).await {
            Ok(el) => el.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if ok(&t) {
            return t;
        }
        assert!(start.elapsed() < WAIT, "{css} still reads {t:?}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

async fn wait_for_path(c: &Client, prefix: &str) -> String {
    let start = Instant::now();
    loop {
        let url = c.current_url().await.unwrap();
        if url.path().starts_with(prefix) {
            return url.path().to_string();
        }
        assert!(start.elapsed() < WAIT, "still at {url}, expected {prefix}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_admin_logs_in_uploads_contacts_creates_a_campaign_and_watches_it_live_in_chromium() {
    let hq = Hq::start().await;
    let browser = Browser::start().await;
    let c = browser.client.clone();

    // Login: a wrong password first, then the right one.
    c.goto(&format!("{}/campaigns", hq.base)).await.unwrap();
    wait_for_path(&c, "/login").await;
    type_into(&c, "form#login input[name=username]", "admin").await;
    type_into(&c, "form#login input[name=password]", "wrong password!").await;
    click(&c, "form#login button").await;
    assert!(text_of(&c, ".error")
        .await
        .contains("Wrong username or password"));
    type_into(&c, "form#login input[name=username]", "admin").await;
    type_into(&c, "form#login input[name=password]", &hq.admin_password).await;
    click(&c, "form#login button").await;
    wait_for_path(&c, "/dashboard").await;

    // Contact list upload with bad rows: the report names their lines.
    let csv = hq.dir.path().join("leads.csv");
    std::fs::write(
        &csv,
        "phone,first_name\n+14155550101,Ann\nnot-a-number,Bob\n+14155550102,Cat\n+1415,Dan\n",
    )
    .unwrap();
    c.goto(&format!("{}/lists", hq.base)).await.unwrap();
    type_into(&c, "form#upload input[name=list_name]", "Browser leads").await;
    c.find(Locator::Css("form#upload input[name=file]"))
        .await
        .unwrap()
        .send_keys(&csv.display().to_string())
        .await
        .unwrap();
    click(&c, "form#upload button").await;
    wait_for_path(&c, "/imports/").await;
    wait_text(&c, "#import-state", |t| t == "done").await;
    assert_eq!(text_of(&c, "#rows-imported").await, "2");
    assert_eq!(text_of(&c, "#rows-rejected").await, "2");
    let lines: Vec<String> = {
        let mut v = Vec::new();
        for el in c
            .find_all(Locator::Css("#row-errors td.line"))
            .await
            .unwrap()
        {
            v.push(el.text().await.unwrap());
        }
        v
    };
    assert_eq!(lines, ["3", "5"]);

    // Campaign creation: a bad caller ID is shown next to its field, then fixed.
    c.goto(&format!("{}/campaigns/new", hq.base)).await.unwrap();
    type_into(&c, "form#campaign input[name=name]", "Browser campaign").await;
    type_into(&c, "form#campaign input[name=caller_id]", "12345").await;
    click(&c, "form#campaign input[name=contact_lists]").await;
    click(&c, "form#campaign button[type=submit]").await;
    let shown = text_of(&c, ".field-error[data-field=caller_id]").await;
    assert!(shown.contains("country code"), "{shown}");
    type_into(&c, "form#campaign input[name=caller_id]", "+14155550100").await;
    click(&c, "form#campaign button[type=submit]").await;
    let path = wait_for_path(&c, "/campaigns/").await;
    let id: i64 = path.trim_start_matches("/campaigns/").parse().unwrap();
    assert!(text_of(&c, ".notice").await.contains("Campaign created"));
    assert_eq!(text_of(&c, "#campaign-state").await, "draft");
    click(&c, "form#action-schedule button").await;
    wait_text(&c, "#campaign-state", |t| t == "scheduled").await;

    // The live dashboard follows simulated call results without a reload.
    c.goto(&format!("{}/dashboard", hq.base)).await.unwrap();
    assert_eq!(text_of(&c, "[data-live=attempts_24h]").await, "0");
    let before = text_of(&c, "[data-live=updated]").await;
    uplink::telemetry(&hq.store, "branch-1", 3, 4).await;
    for (i, outcome) in [
        CallOutcome::AnsweredHuman,
        CallOutcome::AnsweredHuman,
        CallOutcome::NoAnswer,
        CallOutcome::Abandoned,
    ]
    .into_iter()
    .enumerate()
    {
        uplink::attempt(&hq.store, "branch-1", id, i as u64 + 1, outcome).await;
    }
    wait_text(&c, "[data-live=attempts_24h]", |t| t == "4").await;
    assert_eq!(text_of(&c, "[data-live=calls]").await, "3");
    assert_eq!(text_of(&c, "[data-live=answer_rate]").await, "75.0 %");
    assert_eq!(text_of(&c, "[data-live=abandon_24h]").await, "33.3 %");
    assert_eq!(text_of(&c, "[data-live=agents_ready]").await, "4");
    assert_ne!(text_of(&c, "[data-live=updated]").await, before);
    let row = wait_text(&c, &format!("#live-campaigns tr[data-key=\"{id}\"]"), |t| {
        t.contains("33.3 %")
    })
    .await;
    assert!(
        row.contains("Browser campaign") && row.contains("3.0 % / 30 d"),
        "{row}"
    );
    // The box's per-campaign report fills the campaign's "calls in progress" cell.
    uplink::campaign_calls_at(&hq.store, "branch-1", &[(id, 2)], UnixMillis::now()).await;
    wait_text(
        &c,
        &format!("#live-campaigns tr[data-key=\"{id}\"] td:nth-child(3)"),
        |t| t == "2",
    )
    .await;
    let app = wait_text(&c, "#live-appliances tr[data-key=\"branch-1\"]", |t| {
        t.contains("online")
    })
    .await;
    assert!(app.contains("75.0 %"), "{app}");

    // One more result moves the figures again, still without a reload.
    uplink::attempt(&hq.store, "branch-1", id, 9, CallOutcome::Busy).await;
    wait_text(&c, "[data-live=attempts_24h]", |t| t == "5").await;
    assert_eq!(text_of(&c, "[data-live=answer_rate]").await, "60.0 %");

    // The campaign's own live view follows it too.
    c.goto(&format!("{}/campaigns/{id}", hq.base))
        .await
        .unwrap();
    wait_text(&c, "[data-live=attempts]", |t| t == "5").await;
    wait_text(&c, "[data-live=calls]", |t| t == "2").await;
    uplink::attempt(&hq.store, "branch-1", id, 10, CallOutcome::AnsweredHuman).await;
    wait_text(&c, "[data-live=attempts]", |t| t == "6").await;
    assert_eq!(text_of(&c, "[data-live=abandon_24h]").await, "25.0 %");
    assert_eq!(text_of(&c, "[data-live=cap]").await, "3.0 % / 30 d");
    c.close().await.unwrap();
}

async fn log_in(c: &Client, hq: &Hq) {
    c.goto(&format!("{}/login", hq.base)).await.unwrap();
    type_into(c, "form#login input[name=username]", "admin").await;
    type_into(c, "form#login input[name=password]", &hq.admin_password).await;
    click(c, "form#login button").await;
    wait_for_path(c, "/dashboard").await;
}

#[tokio::test]
async fn rules_are_built_without_json_profiles_edited_and_dnc_numbers_uploaded_in_chromium() {
    use callgate_coordinator::routing::Condition;
    let hq = Hq::start().await;
    let experts = callgate_coordinator::agents::create_group(&hq.store, "experts", "")
        .await
        .unwrap()
        .id
        .to_string();
    let browser = Browser::start().await;
    let c = browser.client.clone();
    log_in(&c, &hq).await;

    // Two rules from the condition builder: a tag, and a field equal to a value.
    c.goto(&format!("{}/routing", hq.base)).await.unwrap();
    type_into(&c, "input[name='rule.0.priority']", "20").await;
    type_into(&c, "input[name='rule.0.name']", "vip to experts").await;
    type_into(&c, "input[name='rule.0.value']", "vip").await;
    type_into(&c, "input[name='rule.0.target']", &experts).await;
    type_into(&c, "input[name='rule.1.priority']", "10").await;
    type_into(&c, "input[name='rule.1.name']", "platinum first").await;
    click(&c, "#rule-1-kind option[value=field]").await;
    type_into(&c, "input[name='rule.1.key']", "tier").await;
    type_into(&c, "input[name='rule.1.value']", "platinum").await;
    // ... or any contact tagged gold: a second condition, combined with "any of".
    click(&c, "#rule-1-join option[value=any]").await;
    click(&c, "#rule-1-extra-0-kind option[value=tag]").await;
    type_into(&c, "#rule-1-extra-0-value", "gold").await;
    type_into(&c, "input[name='rule.1.target']", &experts).await;
    // The preview says which rule a sample contact hits.
    type_into(&c, "input[name='sample.tags']", "vip").await;
    click(&c, "#preview").await;
    let hit = wait_text(&c, "#preview-result", |t| !t.is_empty()).await;
    assert!(hit.contains("vip to experts"), "{hit}");
    type_into(&c, "textarea[name='sample.fields']", "tier=Platinum").await;
    click(&c, "#preview").await;
    let hit = wait_text(&c, "#preview-result", |t| t.contains("platinum first")).await;
    assert!(hit.contains("decides"), "{hit}");
    type_into(&c, "textarea[name='sample.fields']", "tier=silver").await;
    type_into(&c, "input[name='sample.tags']", "gold").await;
    click(&c, "#preview").await;
    // The page comes back with the sample as sent (the textarea's own text), then:
    wait_text(&c, "textarea[name='sample.fields']", |t| {
        t.contains("silver")
    })
    .await;
    let hit = text_of(&c, "#preview-result").await;
    assert!(
        hit.contains("platinum first"),
        "any of: the tag alone is enough: {hit}"
    );
    click(&c, "#save-routing").await;
    wait_text(&c, ".notice", |t| t.contains("version 1 saved")).await;
    let saved = callgate_coordinator::routing::current(&hq.store)
        .await
        .unwrap();
    assert_eq!(
        saved
            .policy
            .rules
            .iter()
            .map(|r| r.when.clone())
            .collect::<Vec<_>>(),
        [
            Condition::Any(vec![
                Condition::Field {
                    name: "tier".into(),
                    equals: "platinum".into()
                },
                Condition::Tag("gold".into()),
            ]),
            Condition::Tag("vip".into()),
        ]
    );

    // A profile edited: bad rules are refused next to the profile, good ones saved.
    let us = callgate_coordinator::compliance::page_profiles(&hq.store, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.name == "us")
        .unwrap();
    c.goto(&format!("{}/profiles", hq.base)).await.unwrap();
    click(&c, &format!("#profile-{} summary", us.id)).await;
    let form = format!("form#edit-profile-{}", us.id);
    type_into(&c, &format!("{form} textarea[name=body]"), "{\"window\":").await;
    click(&c, &format!("{form} button")).await;
    let error = text_of(&c, &format!("[data-field='profile-{}']", us.id)).await;
    assert!(error.contains("body:"), "{error}");
    let mut edited = us.profile.clone();
    edited.abandon.cap_permille = 25;
    type_into(
        &c,
        &format!("{form} textarea[name=body]"),
        &serde_json::to_string(&edited).unwrap(),
    )
    .await;
    type_into(&c, &format!("{form} input[name=name]"), "us-strict").await;
    click(&c, &format!("{form} button")).await;
    wait_text(&c, ".notice", |t| t.contains("Profile us-strict saved")).await;
    let now = callgate_coordinator::compliance::get_profile(&hq.store, us.id)
        .await
        .unwrap();
    assert_eq!((now.name.as_str(), now.profile), ("us-strict", edited));

    // DNC numbers from a CSV file: the good rows added, the bad ones listed by line.
    let csv = hq.dir.path().join("dnc.csv");
    std::fs::write(
        &csv,
        "number,expires_on,reason\n+14155550111,,asked\n\n\nnot-a-number,,x\n+14155550112,2027-02-30,\n+14155550113,2027-03-01,court order\n",
    )
    .unwrap();
    c.goto(&format!("{}/dnc", hq.base)).await.unwrap();
    c.find(Locator::Css("form#dnc-upload input[name=file]"))
        .await
        .unwrap()
        .send_keys(&csv.display().to_string())
        .await
        .unwrap();
    click(&c, "form#dnc-upload button").await;
    let notice = wait_text(&c, ".notice", |t| t.contains("added")).await;
    assert!(notice.contains("2 numbers added"), "{notice}");
    assert!(notice.contains("2 rows refused"), "{notice}");
    let mut lines = Vec::new();
    for row in c
        .find_all(Locator::Css("#dnc-row-errors tbody tr"))
        .await
        .unwrap()
    {
        lines.push(row.text().await.unwrap());
    }
    assert_eq!(lines.len(), 2, "{lines:?}");
    // Lines counted as an editor shows them, blank lines included.
    assert!(lines[0].starts_with("5 number"), "{lines:?}");
    assert!(lines[1].starts_with("6 expires_on"), "{lines:?}");
    let entries = callgate_coordinator::compliance::page_dnc(&hq.store, 0, 10)
        .await
        .unwrap();
    assert_eq!(entries.len(), 2);
}
