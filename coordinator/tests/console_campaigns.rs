//! Campaigns and contact lists through the HQ console over real HTTPS: the form with every
//! field, errors next to the field at fault, the lifecycle buttons, the audit trail, and a
//! CSV upload whose refused rows are reported by line.

mod console_support;

use callgate_coordinator::campaigns::{self, CampaignState};
use console_support::{form, pairs, Hq};
use reqwest::StatusCode;
use std::time::{Duration, Instant};

/// The text of the error shown next to `field`.
fn error_next_to(body: &str, field: &str) -> Option<String> {
    let marker = format!("data-field=\"{field}\">");
    let at = body.find(&marker)? + marker.len();
    Some(body[at..at + body[at..].find('<')?].to_string())
}

#[tokio::test]
async fn a_campaign_is_created_with_every_field_and_bad_values_are_shown_next_to_their_field() {
    let hq = Hq::start().await;
    let admin = hq.admin().await;

    for (field, value, shown_at, says) in [
        ("caller_id", "12", "caller_id", "country code"),
        (
            "retry.busy.max_attempts",
            "three",
            "retry.busy.max_attempts",
            "not a number",
        ),
        (
            "retry.machine.backoff",
            "20",
            "retry.machine.backoff",
            "1 to 10",
        ),
        ("appliances", "branch-1 0", "appliances", "1 to 1000"),
        (
            "calling_window.end",
            "07:00",
            "calling_window.start",
            "window",
        ),
        ("ends_on", "2020-01-01", "ends_on", ""),
        (
            "conversion_dispositions",
            "refund",
            "conversion_dispositions",
            "is not one of the campaign",
        ),
        (
            "calling_window.holidays",
            "christmas",
            "calling_window.holidays",
            "YYYY-MM-DD",
        ),
    ] {
        let mut changes = vec![(field, value)];
        if field == "ends_on" {
            changes.push(("starts_on", "2021-01-01"));
        }
        let f = form(&admin, &changes).await;
        let r = admin.submit("/campaigns", &pairs(&f)).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{field}");
        let shown = error_next_to(&r.body, shown_at)
            .unwrap_or_else(|| panic!("no error next to {shown_at} for {field}={value}"));
        assert!(shown.contains(says), "{field}: {shown}");
        assert!(
            r.body
                .contains(&format!("value=\"{}\"", value.replace('\n', "")))
                || field == "appliances",
            "the typed value is kept in the form for {field}"
        );
    }
    assert!(
        campaigns::page(&hq.store, 0, 10).await.unwrap().is_empty(),
        "nothing stored"
    );

    let f = form(&admin, &[]).await;
    let r = admin.submit("/campaigns", &pairs(&f)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let c = &campaigns::page(&hq.store, 0, 10).await.unwrap()[0];
    assert_eq!(
        r.location.unwrap(),
        format!("/campaigns/{}?created=1", c.id)
    );
    assert_eq!(c.spec.name, "Renewals");
    assert_eq!(c.spec.calling_window.days, vec![0, 1, 2]);
    assert_eq!(c.spec.calling_window.holidays, vec!["2026-12-25"]);
    assert_eq!(c.spec.disposition_codes, vec!["sale", "callback"]);
    assert_eq!(c.spec.conversion_dispositions, vec!["sale"]);
    assert_eq!(c.spec.appliances.len(), 2);
    assert_eq!(c.spec.appliances[0].share, 2);
    assert_eq!(c.spec.retry.machine.max_attempts, 3);
    assert!(c.spec.recording_consent_announcement);
    assert_eq!(c.spec.wrap_up_seconds, 20);

    // Edit, then start, pause, resume and stop with the page's buttons.
    let page = admin.get(&format!("/campaigns/{}", c.id)).await;
    assert!(page.body.contains("id=\"action-schedule\""));
    let f = form(
        &admin,
        &[("name", "Renewals Q4"), ("wrap_up_seconds", "45")],
    )
    .await;
    let r = admin
        .submit(&format!("/campaigns/{}", c.id), &pairs(&f))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    for (action, state) in [
        ("schedule", CampaignState::Scheduled),
        ("pause", CampaignState::Paused),
        ("resume", CampaignState::Scheduled),
        ("stop", CampaignState::Stopped),
    ] {
        let r = admin
            .submit(
                &format!("/campaigns/{}/action", c.id),
                &[("action", action)],
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{action}: {}", r.body);
        assert_eq!(campaigns::get(&hq.store, c.id).await.unwrap().state, state);
    }
    let r = admin
        .submit(
            &format!("/campaigns/{}/action", c.id),
            &[("action", "pause")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.body.contains("cannot pause a campaign that is stopped"),
        "{}",
        r.body
    );

    let entries =
        callgate_coordinator::console::audit::page(&hq.store, &Default::default(), None, 100)
            .await
            .unwrap();
    let actions: Vec<&str> = entries.iter().rev().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "user.create",
            "campaign.create",
            "campaign.edit",
            "campaign.schedule",
            "campaign.pause",
            "campaign.resume",
            "campaign.stop"
        ]
    );
    let edit = entries
        .iter()
        .find(|e| e.action == "campaign.edit")
        .unwrap();
    assert!(edit
        .before
        .as_deref()
        .unwrap()
        .contains("\"wrap_up_seconds\":20"));
    assert!(edit
        .after
        .as_deref()
        .unwrap()
        .contains("\"wrap_up_seconds\":45"));
    assert_eq!(edit.actor, "admin");
}

/// A CSV with good rows, a duplicate, and bad rows on lines 3, 5 and 7.
pub const CSV: &str = "phone,first_name,timezone\n\
+14155550101,Ann,America/Los_Angeles\n\
not-a-number,Bob,\n\
+14155550102,Cat,America/Los_Angeles\n\
+1415,Dan,\n\
+14155550101,Ann again,\n\
+14155550103,Eve,Mars/Olympus\n\
+442079460000,Fay,Europe/London\n";

#[tokio::test]
async fn a_csv_upload_imports_the_good_rows_and_reports_the_bad_ones_by_line() {
    let hq = Hq::start().await;
    let admin = hq.admin().await;
    let form = reqwest::multipart::Form::new()
        .text("csrf", admin.csrf.clone())
        .text("list_id", "")
        .text("list_name", "November leads")
        .text("default_region", "US")
        .part(
            "file",
            reqwest::multipart::Part::text(CSV).file_name("leads.csv"),
        );
    let r = admin
        .http
        .post(format!("{}/lists", admin.base))
        .header("cookie", admin.cookie.clone().unwrap())
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let import_page = r.headers()["location"].to_str().unwrap().to_string();
    assert!(import_page.starts_with("/imports/"));
    let start = Instant::now();
    let body = loop {
        let page = admin.get(&import_page).await;
        assert_eq!(page.status, StatusCode::OK);
        if !page.body.contains("id=\"import-state\">running") {
            break page.body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "import never finished"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(body.contains("id=\"import-state\">done"), "{body}");
    assert!(body.contains("id=\"rows-imported\">3<"), "{body}");
    assert!(body.contains("id=\"rows-duplicate\">1<"), "{body}");
    assert!(body.contains("id=\"rows-rejected\">3<"), "{body}");
    for line in [3, 5, 7] {
        assert!(
            body.contains(&format!("<td class=\"line\">{line}</td>")),
            "line {line} in {body}"
        );
    }
    assert!(!body.contains("<td class=\"line\">2</td>"));
    let lists = admin.get("/lists").await;
    assert!(lists.body.contains("November leads"));
    let list = &callgate_coordinator::contacts::page_lists(&hq.store, 0, 10)
        .await
        .unwrap()[0];
    assert_eq!(list.contacts, 3);
    // A second upload with no file is refused by name and stores nothing.
    let form = reqwest::multipart::Form::new()
        .text("csrf", admin.csrf.clone())
        .text("list_name", "empty");
    let r = admin
        .http
        .post(format!("{}/lists", admin.base))
        .header("cookie", admin.cookie.clone().unwrap())
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("file: choose a CSV file"));
    assert_eq!(
        callgate_coordinator::contacts::page_lists(&hq.store, 0, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}
