//! The HQ console's access control over real HTTPS: sessions, CSRF, throttling, roles,
//! user management and the audit log.

mod console_support;

use callgate_common::store::Backend;
use console_support::{Hq, PASSWORD};
use reqwest::StatusCode;

#[tokio::test]
async fn pages_need_a_session_and_login_sets_a_secure_http_only_strict_cookie() {
    let hq = Hq::start().await;
    let anon = hq.anonymous();
    for path in ["/campaigns", "/users", "/audit", "/lists", "/campaigns/new"] {
        let r = anon.get(path).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(r.location.as_deref(), Some("/login"), "{path}");
    }
    let r = anon
        .post(
            "/login",
            &[("username", "admin"), ("password", &hq.admin_password)],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let set = r.set_cookie.unwrap();
    for attr in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{attr} missing from {set}");
    }
    let admin = hq.admin().await;
    let page = admin.get("/campaigns").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Log out admin"));

    // Logging out ends the session on the server, not only in the browser.
    let r = admin.submit("/logout", &[]).await;
    assert_eq!(r.location.as_deref(), Some("/login"));
    assert_eq!(
        admin.get("/campaigns").await.location.as_deref(),
        Some("/login?expired=1")
    );
}

#[tokio::test]
async fn wrong_passwords_are_refused_and_then_throttled_even_for_the_right_one() {
    let hq = Hq::start().await;
    let anon = hq.anonymous();
    for i in 0..5 {
        let r = anon
            .post(
                "/login",
                &[("username", "admin"), ("password", "not the password")],
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "attempt {i}");
        assert!(r.body.contains("Wrong username or password"));
        assert!(r.cookie.is_none());
    }
    let r = anon
        .post(
            "/login",
            &[("username", "admin"), ("password", &hq.admin_password)],
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.body.contains("Too many failed logins"));
    assert!(r.cookie.is_none(), "no session while locked");
}

#[tokio::test]
async fn a_form_without_the_sessions_csrf_token_is_refused_and_changes_nothing() {
    let hq = Hq::start().await;
    let admin = hq.admin().await;
    let form = [
        ("username", "mallory"),
        ("role", "admin"),
        ("password", PASSWORD),
    ];
    let r = admin.post("/users", &form).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let mut forged = vec![("csrf", "0123456789abcdef0123456789abcdef")];
    forged.extend_from_slice(&form);
    assert_eq!(
        admin.post("/users", &forged).await.status,
        StatusCode::FORBIDDEN
    );
    let users = callgate_coordinator::console::auth::users(&hq.store)
        .await
        .unwrap();
    assert_eq!(users.len(), 1, "only the first admin: {users:?}");
}

async fn users_are_managed_and_every_change_is_audited_with_before_and_after(backend: Backend) {
    let hq = Hq::start_on(backend).await;
    let admin = hq.admin().await;
    let r = admin
        .submit(
            "/users",
            &[
                ("username", "sam"),
                ("role", "supervisor"),
                ("password", "short"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("data-field=\"password\""), "{}", r.body);
    assert!(r.body.contains("at least 12 characters"));

    let r = admin
        .submit(
            "/users",
            &[
                ("username", "sam"),
                ("role", "supervisor"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("User sam created"));
    let r = admin
        .submit(
            "/users",
            &[
                ("username", "sam"),
                ("role", "viewer"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert!(r.body.contains("already taken"), "{}", r.body);

    let sam = hq.login("sam", PASSWORD).await;
    let users = callgate_coordinator::console::auth::users(&hq.store)
        .await
        .unwrap();
    let id = users.iter().find(|u| u.username == "sam").unwrap().id;
    // Demoted to viewer and disabled: sam's open session ends at once.
    let r = admin
        .submit(&format!("/users/{id}"), &[("role", "viewer")])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        sam.get("/campaigns").await.location.as_deref(),
        Some("/login?expired=1")
    );
    let r = hq
        .anonymous()
        .post("/login", &[("username", "sam"), ("password", PASSWORD)])
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "a disabled user cannot log in"
    );

    // The last admin cannot lock everybody out.
    let admin_id = users.iter().find(|u| u.username == "admin").unwrap().id;
    let r = admin
        .submit(
            &format!("/users/{admin_id}"),
            &[("role", "viewer"), ("enabled", "1")],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("last enabled admin"));

    let audit = admin.get("/audit").await;
    assert_eq!(audit.status, StatusCode::OK);
    let entries =
        callgate_coordinator::console::audit::page(&hq.store, &Default::default(), None, 100)
            .await
            .unwrap();
    let actions: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| (e.actor.as_str(), e.action.as_str(), e.target.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("admin", "user.update", "user:sam"),
            ("admin", "user.create", "user:sam"),
            ("system", "user.create", "user:admin"),
        ]
    );
    let update = &entries[0];
    let before: serde_json::Value =
        serde_json::from_str(update.before.as_deref().unwrap()).unwrap();
    let after: serde_json::Value = serde_json::from_str(update.after.as_deref().unwrap()).unwrap();
    assert_eq!(
        (before["role"].as_str(), before["enabled"].as_bool()),
        (Some("supervisor"), Some(true))
    );
    assert_eq!(
        (after["role"].as_str(), after["enabled"].as_bool()),
        (Some("viewer"), Some(false))
    );
    assert!(entries[1].before.is_none());
    assert!(
        !update.after.as_deref().unwrap().contains("argon2"),
        "no hash in the log"
    );
    assert!(audit.body.contains("user.update") && audit.body.contains("user:sam"));
}

#[tokio::test]
async fn on_sqlite_users_are_managed_and_every_change_is_audited_with_before_and_after() {
    users_are_managed_and_every_change_is_audited_with_before_and_after(Backend::Sqlite).await;
}

#[tokio::test]
async fn on_postgres_users_are_managed_and_every_change_is_audited_with_before_and_after() {
    users_are_managed_and_every_change_is_audited_with_before_and_after(Backend::Postgres).await;
}

#[tokio::test]
async fn a_viewer_reads_every_page_but_cannot_change_anything() {
    let hq = Hq::start().await;
    let admin = hq.admin().await;
    admin
        .submit(
            "/users",
            &[
                ("username", "vic"),
                ("role", "viewer"),
                ("password", PASSWORD),
            ],
        )
        .await;
    let viewer = hq.login("vic", PASSWORD).await;
    for path in [
        "/dashboard",
        "/campaigns",
        "/lists",
        "/fleet",
        "/analytics",
        "/routing",
        "/dnc",
        "/profiles",
        "/export/campaigns",
    ] {
        assert_eq!(viewer.get(path).await.status, StatusCode::OK, "{path}");
    }
    for path in [
        "/users",
        "/audit",
        "/campaigns/new",
        "/export/audit",
        "/export/users",
    ] {
        assert_eq!(
            viewer.get(path).await.status,
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }
    let audit_rows = || async {
        callgate_coordinator::console::audit::page(&hq.store, &Default::default(), None, 1000)
            .await
            .unwrap()
            .len()
    };
    let before = audit_rows().await;
    // Every changing route, with the viewer's own valid CSRF token.
    let posts: [(&str, Vec<(&str, &str)>); 12] = [
        (
            "/users",
            vec![("username", "x"), ("role", "admin"), ("password", PASSWORD)],
        ),
        ("/users/1", vec![("role", "viewer")]),
        ("/campaigns", vec![("name", "c")]),
        ("/campaigns/1", vec![("name", "c")]),
        ("/campaigns/1/action", vec![("action", "schedule")]),
        ("/fleet", vec![("name", "branch-9")]),
        ("/fleet/branch-9/revoke", vec![]),
        (
            "/routing",
            vec![
                ("rule.0.name", "x"),
                ("rule.0.priority", "1"),
                ("rule.0.when", "\"always\""),
                ("rule.0.action", "robot_script"),
                ("rule.0.target", "s"),
            ],
        ),
        ("/dnc", vec![("number", "+14155550100")]),
        ("/dnc/1/remove", vec![]),
        ("/profiles", vec![("name", "p"), ("body", "{}")]),
        ("/profiles/1", vec![("name", "p"), ("body", "{}")]),
    ];
    for (path, form) in posts {
        let r = viewer.submit(path, &form).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {}", r.body);
        assert!(r.body.contains("a viewer may not do this"), "{path}");
    }
    let form = reqwest::multipart::Form::new()
        .text("csrf", viewer.csrf.clone())
        .text("list_name", "sneaky")
        .part(
            "file",
            reqwest::multipart::Part::text("phone\n+14155550100\n").file_name("x.csv"),
        );
    let r = viewer
        .http
        .post(format!("{}/lists", viewer.base))
        .header("cookie", viewer.cookie.clone().unwrap())
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(audit_rows().await, before, "nothing was changed");
    assert!(callgate_coordinator::contacts::page_lists(&hq.store, 0, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        callgate_coordinator::console::auth::users(&hq.store)
            .await
            .unwrap()
            .len(),
        2
    );
}
