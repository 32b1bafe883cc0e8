//! The local web UI, served by the real `callgate-appliance` binary over HTTPS: first-boot
//! setup with the label's code, login, throttling, sessions, CSRF, the live status stream,
//! logout and factory reset.

mod common;

use common::{Appliance, PASSWORD};
use reqwest::header::{LOCATION, SET_COOKIE};
use reqwest::StatusCode;

fn location(r: &reqwest::Response) -> String {
    r.headers()[LOCATION].to_str().unwrap().to_string()
}

fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    html[at..at + 32].to_string()
}

#[tokio::test]
async fn first_boot_setup_needs_the_label_code_and_happens_once() {
    let b = Appliance::start().await;
    assert_eq!(location(&b.get("/", None).await), "/setup");
    assert_eq!(
        location(&b.get("/status", None).await),
        "/setup",
        "nothing before setup"
    );

    let pw = PASSWORD;
    let r = b
        .post(
            "/setup",
            None,
            &[
                ("setup_code", "WRONG12345"),
                ("username", "tech"),
                ("password", pw),
                ("confirm", pw),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("setup code is not the one on the box"));

    let code = b.setup_code();
    let r = b
        .post(
            "/setup",
            None,
            &[
                ("setup_code", &code),
                ("username", "tech"),
                ("password", "short"),
                ("confirm", "short"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("at least 12 characters"));

    b.set_up().await;
    assert_eq!(
        location(&b.get("/setup", None).await),
        "/login",
        "setup is gone once done"
    );
    let r = b
        .post(
            "/setup",
            None,
            &[
                ("setup_code", &code),
                ("username", "evil"),
                ("password", pw),
                ("confirm", pw),
            ],
        )
        .await;
    assert_eq!(location(&r), "/login", "a second admin cannot be created");
    let r = b
        .post("/login", None, &[("username", "evil"), ("password", pw)])
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_session_sees_live_status_and_forms_need_its_csrf_token() {
    let b = Appliance::start().await;
    b.set_up().await;
    let r = b
        .post(
            "/login",
            None,
            &[("username", "tech"), ("password", PASSWORD)],
        )
        .await;
    let set_cookie = r.headers()[SET_COOKIE].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_string();

    let r = b.get("/status", Some(&cookie)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert!(r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'self'"));
    let html = r.text().await.unwrap();
    assert!(html.contains("branch-web"), "{html}");
    assert!(
        html.contains("36.5 °C"),
        "the simulated board's sensor reading: {html}"
    );

    // The live stream pushes a status event straight away.
    let mut events = b.get("/events", Some(&cookie)).await;
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let chunk = String::from_utf8(events.chunk().await.unwrap().unwrap().to_vec()).unwrap();
    assert!(
        chunk.contains("event: status") && chunk.contains("\"temperature\""),
        "{chunk}"
    );

    // A form without the session's CSRF token is refused and changes nothing.
    let r = b
        .post(
            "/logout",
            Some(&cookie),
            &[("csrf", "0123456789abcdef0123456789abcdef")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        b.get("/status", Some(&cookie)).await.status(),
        StatusCode::OK
    );

    let csrf = csrf_of(&b.get("/system", Some(&cookie)).await.text().await.unwrap());
    let r = b.post("/logout", Some(&cookie), &[("csrf", &csrf)]).await;
    assert_eq!(location(&r), "/login");
    assert_eq!(
        location(&b.get("/status", Some(&cookie)).await),
        "/login?expired=1"
    );
    assert_eq!(
        location(&b.get("/events", Some(&cookie)).await),
        "/login?expired=1"
    );
}

#[tokio::test]
async fn repeated_wrong_passwords_lock_the_source_even_for_the_right_one() {
    let b = Appliance::start().await;
    b.set_up().await;
    for _ in 0..5 {
        let r = b
            .post(
                "/login",
                None,
                &[("username", "tech"), ("password", "guess guess guess")],
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = b
        .post(
            "/login",
            None,
            &[("username", "tech"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.text().await.unwrap().contains("Too many failed logins"));
}

#[tokio::test]
async fn factory_reset_needs_the_typed_confirmation_and_returns_to_setup() {
    let b = Appliance::start().await;
    b.set_up().await;
    let cookie = b.log_in().await;
    std::fs::create_dir_all(b.identity_dir()).unwrap();
    std::fs::write(b.identity_dir().join("cert.pem"), "x").unwrap();
    let csrf = csrf_of(&b.get("/system", Some(&cookie)).await.text().await.unwrap());

    let r = b
        .post(
            "/system/factory-reset",
            Some(&cookie),
            &[("csrf", &csrf), ("confirm", "reset")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("Type RESET"));
    assert!(
        b.identity_dir().exists(),
        "nothing removed without the confirmation"
    );

    let r = b
        .post(
            "/system/factory-reset",
            Some(&cookie),
            &[("csrf", &csrf), ("confirm", "RESET")],
        )
        .await;
    assert_eq!(location(&r), "/setup");
    assert!(!b.identity_dir().exists());
    // The daemon restarts in place after a reset; the box comes back without an account.
    b.wait_until_up().await;
    assert_eq!(location(&b.get("/status", Some(&cookie)).await), "/setup");
}

#[tokio::test]
async fn reboot_is_refused_when_no_command_is_configured() {
    let b = Appliance::start().await;
    b.set_up().await;
    let cookie = b.log_in().await;
    let html = b.get("/system", Some(&cookie)).await.text().await.unwrap();
    assert!(html.contains("Reboot is not configured"));
    let csrf = csrf_of(&html);
    let r = b
        .post(
            "/system/reboot",
            Some(&cookie),
            &[("csrf", &csrf), ("confirm", "yes")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn reboot_runs_the_configured_command_only_once_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("rebooted");
    let b = Appliance::start_in(
        dir,
        &format!("reboot_command = [\"touch\", \"{}\"]\n", marker.display()),
    )
    .await;
    b.set_up().await;
    let cookie = b.log_in().await;
    let html = b.get("/system", Some(&cookie)).await.text().await.unwrap();
    assert!(html.contains("Reboot now"), "{html}");
    let csrf = csrf_of(&html);
    let r = b
        .post(
            "/system/reboot",
            Some(&cookie),
            &[("csrf", csrf.as_str()), ("confirm", "")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("Tick the box to confirm the reboot."));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!marker.exists(), "an unconfirmed reboot runs nothing");
    let r = b
        .post(
            "/system/reboot",
            Some(&cookie),
            &[("csrf", csrf.as_str()), ("confirm", "yes")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("Rebooting."));
    let start = std::time::Instant::now();
    while !marker.exists() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "the reboot command never ran"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_logs_page_shows_the_daemons_own_recent_lines_filtered_and_as_a_download() {
    let b = Appliance::start().await;
    b.set_up().await;
    assert_eq!(
        location(&b.get("/logs.txt", None).await),
        "/login",
        "logs need a session"
    );
    let cookie = b.log_in().await;

    let html = b.get("/logs", Some(&cookie)).await.text().await.unwrap();
    assert!(html.contains("appliance running"), "{html}");
    assert!(html.contains("local web UI listening"), "{html}");

    let html = b
        .get("/logs?q=web+UI+listening", Some(&cookie))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("local web UI listening"));
    assert!(
        !html.contains("appliance running"),
        "lines without the term are left out"
    );
    let html = b
        .get("/logs?q=no-such-words-logged", Some(&cookie))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("No log lines"), "{html}");
    assert!(
        html.contains("no-such-words-logged"),
        "the term is echoed back"
    );

    let r = b.get("/logs.txt?q=running", Some(&cookie)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "text/plain; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    assert!(text.contains("appliance running"), "{text}");
    assert!(!text.contains("\u{1b}["), "no terminal colour codes");
}
