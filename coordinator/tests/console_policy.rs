//! The routing-policy editor, DNC management and compliance profiles in the HQ console over
//! real HTTPS: validation naming the rule at fault, the preview of which rule a sample
//! contact hits, and who may change what.

mod console_support;

use console_support::{Client, Hq, PASSWORD};
use reqwest::StatusCode;

fn rule<'a>(
    i: usize,
    p: &'a str,
    name: &'a str,
    when: &'a str,
    action: &'a str,
    target: &'a str,
) -> Vec<(String, &'a str)> {
    vec![
        (format!("rule.{i}.priority"), p),
        (format!("rule.{i}.name"), name),
        (format!("rule.{i}.when"), when),
        (format!("rule.{i}.action"), action),
        (format!("rule.{i}.target"), target),
    ]
}

async fn post_rules(
    c: &Client,
    path: &str,
    rules: &[Vec<(String, &str)>],
    sample: &[(&str, &str)],
) -> console_support::Reply {
    let mut form: Vec<(&str, &str)> = Vec::new();
    for r in rules {
        for (k, v) in r {
            form.push((k.as_str(), v));
        }
    }
    form.extend_from_slice(sample);
    c.submit(path, &form).await
}

#[tokio::test]
async fn routing_rules_are_validated_previewed_and_saved_as_versions() {
    let hq = Hq::start().await;
    let admin = hq.admin().await;
    let experts = callgate_coordinator::agents::create_group(&hq.store, "experts", "")
        .await
        .unwrap();
    let qa = callgate_coordinator::agents::create_group(&hq.store, "qa", "")
        .await
        .unwrap();
    let (experts, qa) = (experts.id.to_string(), qa.id.to_string());
    let rules = vec![
        rule(
            0,
            "20",
            "platinum to experts",
            r#"{"field":{"name":"tier","equals":"platinum"}}"#,
            "agent_group",
            &experts,
        ),
        rule(
            1,
            "10",
            "complaints to QA",
            r#"{"tag":"complaint"}"#,
            "agent_group",
            &qa,
        ),
        rule(
            2,
            "30",
            "unresolved to the same agent",
            r#"{"last_outcome":"unresolved"}"#,
            "last_agent",
            &experts,
        ),
    ];

    // Preview on the draft: the lowest priority number that holds wins.
    let r = post_rules(
        &admin,
        "/routing/preview",
        &rules,
        &[
            ("sample.fields", "tier=platinum"),
            ("sample.tags", "complaint"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.body
            .contains("Rule &#34;complaints to QA&#34; decides: agent group"),
        "{}",
        r.body
    );
    let r = post_rules(
        &admin,
        "/routing/preview",
        &rules,
        &[("sample.fields", "tier=platinum")],
    )
    .await;
    assert!(
        r.body
            .contains("Rule &#34;platinum to experts&#34; decides"),
        "{}",
        r.body
    );
    let r = post_rules(
        &admin,
        "/routing/preview",
        &rules,
        &[("sample.last_outcome", "resolved")],
    )
    .await;
    assert!(r.body.contains("No rule matches"), "{}", r.body);
    assert!(
        callgate_coordinator::routing::current(&hq.store)
            .await
            .is_err(),
        "a preview saves nothing"
    );

    // A bad condition and an unknown group are named on their row.
    let mut bad = rules.clone();
    bad[2] = rule(2, "30", "broken", "{tag: complaint}", "agent_group", &qa);
    let r = post_rules(&admin, "/routing", &bad, &[]).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.body.contains("data-field=\"rule.2\">condition:"),
        "{}",
        r.body
    );
    let mut bad = rules.clone();
    bad[0] = rule(0, "20", "ghost group", r#""always""#, "agent_group", "999");
    let r = post_rules(&admin, "/routing", &bad, &[]).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.body
            .contains("data-field=\"rule.0\">agent group 999 does not exist"),
        "{}",
        r.body
    );

    let r = post_rules(&admin, "/routing", &rules, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("version 1 saved"));
    let saved = callgate_coordinator::routing::current(&hq.store)
        .await
        .unwrap();
    let names: Vec<&str> = saved.policy.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "complaints to QA",
            "platinum to experts",
            "unresolved to the same agent"
        ]
    );
    let page = admin.get("/routing").await;
    assert!(page.body.contains("value=\"complaints to QA\""));

    // A compliance officer may not change routing, a supervisor may.
    admin
        .submit(
            "/users",
            &[
                ("username", "cora"),
                ("role", "compliance"),
                ("password", PASSWORD),
            ],
        )
        .await;
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
    let cora = hq.login("cora", PASSWORD).await;
    assert_eq!(
        post_rules(&cora, "/routing", &rules, &[]).await.status,
        StatusCode::FORBIDDEN
    );
    let sue = hq.login("sue", PASSWORD).await;
    assert_eq!(
        post_rules(&sue, "/routing", &rules, &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        callgate_coordinator::routing::current(&hq.store)
            .await
            .unwrap()
            .version,
        2
    );
}

#[tokio::test]
async fn dnc_entries_and_profiles_are_managed_by_compliance_and_audited() {
    let hq = Hq::start().await;
    let admin = hq.admin().await;
    admin
        .submit(
            "/users",
            &[
                ("username", "cora"),
                ("role", "compliance"),
                ("password", PASSWORD),
            ],
        )
        .await;
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
    let cora = hq.login("cora", PASSWORD).await;
    let sue = hq.login("sue", PASSWORD).await;

    let r = cora
        .submit("/dnc", &[("number", "0123"), ("reason", "asked")])
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("number:"), "{}", r.body);
    let r = cora
        .submit(
            "/dnc",
            &[("number", "+14155550123"), ("expires_on", "someday")],
        )
        .await;
    assert!(r.body.contains("expires_on"), "{}", r.body);
    let r = cora
        .submit(
            "/dnc",
            &[
                ("number", "+14155550123"),
                ("expires_on", "2027-01-31"),
                ("reason", "asked"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        !r.body.contains("+14155550123"),
        "numbers are masked on the page"
    );
    assert!(r.body.contains("2027-01-31"));
    assert_eq!(
        sue.submit("/dnc", &[("number", "+14155550124")])
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let all = callgate_coordinator::compliance::page_dnc(&hq.store, 0, 10)
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    let id = all[0].id;
    assert_eq!(
        sue.submit(&format!("/dnc/{id}/remove"), &[]).await.status,
        StatusCode::FORBIDDEN,
        "a supervisor cannot take numbers off the list"
    );
    let r = cora.submit(&format!("/dnc/{}/remove", id + 100), &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body.contains("No do-not-call entry"), "{}", r.body);
    let r = cora
        .submit(
            "/dnc",
            &[("number", "+14155550125"), ("reason", "to be removed")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let added = callgate_coordinator::compliance::page_dnc(&hq.store, id, 10)
        .await
        .unwrap();
    let second = added[0].id;
    let r = cora.submit(&format!("/dnc/{second}/remove"), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.body.contains("taken off the do-not-call list"),
        "{}",
        r.body
    );
    let all = callgate_coordinator::compliance::page_dnc(&hq.store, 0, 10)
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![id],
        "only the removed entry is gone"
    );

    let mut body: serde_json::Value =
        serde_json::to_value(callgate_common::compliance::ComplianceProfile::us()).unwrap();
    body["retention_days"] = serde_json::json!(30);
    let body = body.to_string();
    let r = cora
        .submit(
            "/profiles",
            &[("name", "us-short-retention"), ("body", "{not json")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("body:"));
    let r = cora
        .submit(
            "/profiles",
            &[("name", "us-short-retention"), ("body", &body)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = cora
        .submit(
            "/profiles",
            &[("name", "us-short-retention"), ("body", &body)],
        )
        .await;
    assert!(r.body.contains("exists already"));
    assert_eq!(
        sue.submit("/profiles", &[("name", "x"), ("body", &body)])
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    let audit = cora.get("/audit?actor=cora").await;
    assert_eq!(audit.status, StatusCode::OK);
    let entries = callgate_coordinator::console::audit::page(
        &hq.store,
        &callgate_coordinator::console::audit::AuditFilter {
            actor: Some("cora".into()),
            action: None,
        },
        None,
        10,
    )
    .await
    .unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["profile.create", "dnc.remove", "dnc.add", "dnc.add"]
    );
    assert!(
        entries[1].after.is_none() && entries[1].before.is_some(),
        "a removal keeps what was removed"
    );
    assert!(
        !entries[3].after.as_deref().unwrap().contains("4155550123"),
        "masked in the log too"
    );
}

#[tokio::test]
async fn profile_edits_dnc_uploads_and_built_conditions_refuse_bad_input_by_name() {
    let hq = Hq::start().await;
    let admin = hq.admin().await;
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
    let profiles = callgate_coordinator::compliance::page_profiles(&hq.store, 0, 10)
        .await
        .unwrap();
    let (us, uk) = (&profiles[0], &profiles[1]);
    let body = serde_json::to_string(&us.profile).unwrap();

    // Profile edits.
    let r = admin
        .submit(
            &format!("/profiles/{}", us.id),
            &[("name", "us"), ("body", "{\"window\": 3}")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.body
            .contains(&format!("data-field=\"profile-{}\">body:", us.id)),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("{&#34;window&#34;: 3}"),
        "the typed text is kept"
    );
    let r = admin
        .submit(
            &format!("/profiles/{}", us.id),
            &[("name", uk.name.as_str()), ("body", &body)],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("exists already"), "{}", r.body);
    let r = admin
        .submit("/profiles/999", &[("name", "x"), ("body", &body)])
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let mut bad = us.profile.clone();
    bad.abandon.cap_permille = 2000;
    let r = admin
        .submit(
            &format!("/profiles/{}", us.id),
            &[
                ("name", "us"),
                ("body", &serde_json::to_string(&bad).unwrap()),
            ],
        )
        .await;
    assert!(r.body.contains("abandon.cap_permille"), "{}", r.body);
    assert_eq!(
        sue.submit(
            &format!("/profiles/{}", us.id),
            &[("name", "us"), ("body", &body)]
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        callgate_coordinator::compliance::page_profiles(&hq.store, 0, 10)
            .await
            .unwrap(),
        profiles,
        "nothing changed"
    );
    let mut stricter = us.profile.clone();
    stricter.abandon.cap_permille = 20;
    let r = admin
        .submit(
            &format!("/profiles/{}", us.id),
            &[
                ("name", "us-2"),
                ("body", &serde_json::to_string(&stricter).unwrap()),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let entry = &callgate_coordinator::console::audit::page(
        &hq.store,
        &callgate_coordinator::console::audit::AuditFilter {
            action: Some("profile.edit".into()),
            ..Default::default()
        },
        None,
        10,
    )
    .await
    .unwrap()[0];
    assert!(entry.before.as_deref().unwrap().contains("\"name\":\"us\""));
    assert!(entry
        .after
        .as_deref()
        .unwrap()
        .contains("\"name\":\"us-2\""));
    assert!(entry
        .after
        .as_deref()
        .unwrap()
        .contains("\"cap_permille\":20"));

    // DNC uploads.
    let upload = |c: &console_support::Client, csrf: String, file: Option<&'static str>| {
        let mut form = reqwest::multipart::Form::new().text("csrf", csrf);
        if let Some(f) = file {
            form = form.part(
                "file",
                reqwest::multipart::Part::text(f).file_name("dnc.csv"),
            );
        }
        c.http
            .post(format!("{}/dnc/upload", c.base))
            .header("cookie", c.cookie.clone().unwrap())
            .multipart(form)
    };
    let status = |r: reqwest::Response| r.status();
    let r = upload(&admin, admin.csrf.clone(), None)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("file: choose a CSV file"));
    let r = upload(&admin, admin.csrf.clone(), Some("phone\n+14155550100\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("column &#34;phone&#34;"));
    let r = upload(&admin, admin.csrf.clone(), Some("number\nnope\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "no good row");
    assert!(r.text().await.unwrap().contains("0 numbers added"));
    let forged = upload(&admin, "0".repeat(32), Some("number\n+14155550100\n"));
    assert_eq!(status(forged.send().await.unwrap()), StatusCode::FORBIDDEN);
    let supervisor = upload(&sue, sue.csrf.clone(), Some("number\n+14155550100\n"));
    assert_eq!(
        status(supervisor.send().await.unwrap()),
        StatusCode::FORBIDDEN
    );
    assert!(callgate_coordinator::compliance::page_dnc(&hq.store, 0, 10)
        .await
        .unwrap()
        .is_empty());

    // The condition builder names what is missing, on its row.
    let group = callgate_coordinator::agents::create_group(&hq.store, "g", "")
        .await
        .unwrap()
        .id
        .to_string();
    for (kind, key, value, says) in [
        ("field", "", "platinum", "give the field&#39;s name"),
        ("tag", "", "", "tag: give a value"),
        ("campaign", "", "three", "is not a campaign id"),
        ("sometimes", "", "", "is not one of the kinds"),
    ] {
        let r = admin
            .submit(
                "/routing",
                &[
                    ("rule.0.priority", "1"),
                    ("rule.0.name", "r"),
                    ("rule.0.kind", kind),
                    ("rule.0.key", key),
                    ("rule.0.value", value),
                    ("rule.0.when", ""),
                    ("rule.0.action", "agent_group"),
                    ("rule.0.target", group.as_str()),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{kind}");
        assert!(
            r.body.contains("data-field=\"rule.0\">condition:") && r.body.contains(says),
            "{kind}: {}",
            r.body
        );
    }
    assert!(callgate_coordinator::routing::current(&hq.store)
        .await
        .is_err());

    // "Any of" / "all of" in the builder: a bad second condition is named by its place,
    // a good one is saved as `Any`, and comes back in the builder, not as JSON.
    let rule = |extra_kind: &'static str, extra_value: &'static str| {
        vec![
            ("rule.0.priority", "1"),
            ("rule.0.name", "escalate"),
            ("rule.0.kind", "tag"),
            ("rule.0.key", ""),
            ("rule.0.value", "complaint"),
            ("rule.0.when", ""),
            ("rule.0.join", "any"),
            ("rule.0.extra.0.kind", extra_kind),
            ("rule.0.extra.0.key", ""),
            ("rule.0.extra.0.value", extra_value),
            ("rule.0.extra.1.kind", ""),
            ("rule.0.action", "agent_group"),
        ]
    };
    let mut bad = rule("last_outcome", "");
    bad.push(("rule.0.target", group.as_str()));
    let r = admin.submit("/routing", &bad).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.body
            .contains("condition: condition 2: last_outcome: give a value"),
        "{}",
        r.body
    );
    let mut good = rule("last_outcome", "unresolved");
    good.push(("rule.0.target", group.as_str()));
    let r = admin.submit("/routing", &good).await;
    assert!(
        r.status.is_success() || r.status.is_redirection(),
        "{}",
        r.body
    );
    let saved = callgate_coordinator::routing::current(&hq.store)
        .await
        .unwrap();
    assert_eq!(
        saved.policy.rules[0].when,
        callgate_coordinator::routing::Condition::Any(vec![
            callgate_coordinator::routing::Condition::Tag("complaint".into()),
            callgate_coordinator::routing::Condition::LastOutcome("unresolved".into()),
        ])
    );
    let page = admin.get("/routing").await.body;
    assert!(
        page.contains("<option value=\"any\" selected>any of</option>"),
        "{page}"
    );
    assert!(page.contains("value=\"unresolved\""), "{page}");
}
