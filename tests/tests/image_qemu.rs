//! The appliance's OS image, whole: `images/build` makes it from the debug daemon binary
//! (cached under `target/image-qemu/`, rebuilt when the binary or `images/` change), the test
//! reads its file system with `debugfs`, boots a copy of its bootable disk under QEMU (UEFI
//! firmware OVMF, systemd-boot from the disk's EFI system partition) and plays the field
//! technician: reads the setup code and the certificate fingerprint off the serial console,
//! checks the fingerprint against the certificate the web UI presents, and sets the admin
//! password with that code. After the guest powers off, the disk shows the setup code file
//! root-only.
//!
//! Needs `mmdebstrap`, `qemu-system-x86`, `ovmf`, `e2fsprogs`, `dosfstools`, `mtools`,
//! `fdisk` (scripts/setup) and root (for
//! mmdebstrap's root mode). `CALLGATE_QEMU_ACCEL=tcg` forces the software emulator (what CI
//! without KVM runs); `kvm` forces KVM; unset or `auto` picks KVM when it is usable.

use callgate_system_tests::image::{self, Accel, Vm};
use callgate_system_tests::{binary, run_to_end};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

const SETUP_CODE_FILE: &str = "/etc/callgate/setup-code";
const LABEL_ALPHABET: &str = "23456789ABCDEFGHJKMNPQRSTUVWXYZ";
const PASSWORD: &str = "correct horse battery";
/// Boot to the console greeting; TCG on a loaded 2-core machine takes ~1 minute.
const BOOT_LIMIT: Duration = Duration::from_secs(300);

/// What the console's greeting shows.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Greeting {
    web_ui: String,
    setup_code: String,
    fingerprint: String,
}

/// The last complete greeting on the console: one whose fingerprint is 32 hex pairs (before
/// the daemon has made its certificate the greeting says so instead).
fn greeting(console: &str) -> Option<Greeting> {
    let value = |line: &str, label: &str| {
        line.trim_start()
            .strip_prefix(label)
            .map(|rest| rest.trim().to_string())
    };
    let lines: Vec<&str> = console.lines().collect();
    let at = lines
        .iter()
        .rposition(|l| l.trim_start().starts_with("Web certificate SHA-256:"))?;
    let fingerprint = value(lines[at], "Web certificate SHA-256:")?;
    let is_fingerprint = fingerprint.split(':').count() == 32
        && fingerprint
            .split(':')
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    if !is_fingerprint || at < 2 {
        return None;
    }
    Some(Greeting {
        web_ui: value(lines[at - 2], "Web UI:")?,
        setup_code: value(lines[at - 1], "Setup code (as on the label):")?,
        fingerprint,
    })
}

fn sha256_fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn text(bytes: Option<Vec<u8>>, what: &str) -> String {
    String::from_utf8(bytes.unwrap_or_else(|| panic!("{what} is missing from the image")))
        .expect("UTF-8")
}

#[test]
fn the_greeting_is_read_only_when_the_fingerprint_is_complete() {
    let pending = "  Web UI:                          https://\\4/\n  Setup code (as on the label):    ABCDEFGHJK\n  Web certificate SHA-256:         (not made yet: the daemon has not started)\n";
    assert_eq!(greeting(pending), None);
    let fp = vec!["AB"; 32].join(":");
    let done = format!(
        "{pending}\nCallgate appliance callgate\n  Web UI:                          https://10.0.2.15/\n  Setup code (as on the label):    ABCDEFGHJK\n  Web certificate SHA-256:         {fp}\n\ncallgate login:"
    );
    assert_eq!(
        greeting(&done),
        Some(Greeting {
            web_ui: "https://10.0.2.15/".into(),
            setup_code: "ABCDEFGHJK".into(),
            fingerprint: fp.clone(),
        })
    );
    let short = done.replace(&fp, &fp[..92]);
    assert_eq!(greeting(&short), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_boots_to_a_console_showing_the_setup_code_and_fingerprint_that_the_web_ui_takes()
{
    let started = Instant::now();
    let accel = Accel::from_env();
    let daemon = binary("callgate-appliance");
    let (img, build_time) = image::cached_image(&daemon);
    let rootfs = img.rootfs();

    // The pristine image: no setup code yet (each box makes its own at first boot), no
    // account with a password, the config the daemon itself accepts.
    assert_eq!(
        image::debugfs_stat(&rootfs, SETUP_CODE_FILE),
        None,
        "the image must not ship a setup code: every box would share it"
    );
    let shadow = text(image::debugfs_cat(&rootfs, "/etc/shadow"), "/etc/shadow");
    assert!(shadow.lines().any(|l| l.starts_with("root:")), "{shadow}");
    for line in shadow.lines() {
        let mut fields = line.split(':');
        let (user, hash) = (fields.next().unwrap(), fields.next().unwrap_or(""));
        assert!(
            hash.starts_with('!') || hash.starts_with('*'),
            "account {user} has a usable password in the image: {line}"
        );
    }
    let config = text(
        image::debugfs_cat(&rootfs, "/etc/callgate/appliance.toml"),
        "/etc/callgate/appliance.toml",
    );
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("appliance.toml");
    std::fs::write(&config_path, &config).unwrap();
    let (status, stdout, stderr) = run_to_end(
        "callgate-appliance",
        &["--config", config_path.to_str().unwrap(), "check-config"],
    );
    assert!(status.success(), "the image's config is refused: {stderr}");
    assert!(stdout.contains("0.0.0.0:443"), "{stdout}");
    let unit = text(
        image::debugfs_cat(&rootfs, "/etc/systemd/system/callgate-appliance.service"),
        "the daemon's unit",
    );
    assert!(
        unit.contains("LoadCredential=setup-code:/etc/callgate/setup-code"),
        "{unit}"
    );
    assert!(unit.contains("User=callgate"), "{unit}");

    // Boot a copy and read the greeting off the serial console. The journal is forwarded to
    // the console too, so a unit or the daemon printing the code would show there.
    let boot_start = Instant::now();
    let mut vm = Vm::boot(&img, accel, 443, "systemd.journald.forward_to_console=1");
    let shown = vm.wait_for_console(BOOT_LIMIT, greeting).await;
    let boot_time = boot_start.elapsed();
    assert_eq!(shown.setup_code.len(), 10, "{shown:?}");
    assert!(
        shown.setup_code.chars().all(|c| LABEL_ALPHABET.contains(c)),
        "the setup code uses letters off the label alphabet: {shown:?}"
    );
    assert!(
        shown.web_ui.starts_with("https://10.0.2.15"),
        "the console names the box's address: {shown:?}"
    );
    // Only the greeting shows the code: no boot message, unit or daemon log line (all on the
    // console here: the daemon's own line proves the journal reaches it) echoes it.
    let console = vm.console();
    assert!(
        console.contains("local web UI listening"),
        "the journal is not forwarded to the console, so the next check would prove nothing"
    );
    for line in console.lines().filter(|l| l.contains(&shown.setup_code)) {
        assert!(
            line.trim_start()
                .starts_with("Setup code (as on the label):"),
            "the setup code appears outside the greeting: {line}"
        );
    }

    // The certificate the web UI presents is the one whose fingerprint the console shows.
    let base = format!("https://127.0.0.1:{}", vm.host_port);
    let probe = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .tls_info(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let web_start = Instant::now();
    let presented = loop {
        match probe.get(format!("{base}/login")).send().await {
            Ok(r) => {
                let info = r
                    .extensions()
                    .get::<reqwest::tls::TlsInfo>()
                    .expect("TLS info on the response");
                break info
                    .peer_certificate()
                    .expect("the UI presents a certificate")
                    .to_vec();
            }
            Err(e) => {
                assert!(
                    web_start.elapsed() < Duration::from_secs(120),
                    "the web UI is not reachable through the forwarded port: {e}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    assert_eq!(
        sha256_fingerprint(&presented),
        shown.fingerprint,
        "the console's fingerprint is not the presented certificate's"
    );

    // A technician trusting exactly that certificate sets the admin password.
    let pinned = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_der(&presented).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let setup = |code: String| {
        let pinned = pinned.clone();
        let url = format!("{base}/setup");
        async move {
            pinned
                .post(url)
                .form(&[
                    ("setup_code", code.as_str()),
                    ("username", "tech"),
                    ("password", PASSWORD),
                    ("confirm", PASSWORD),
                ])
                .send()
                .await
                .expect("posting the setup form")
        }
    };
    let wrong: String = shown.setup_code.chars().rev().collect::<String>() + "X";
    let r = setup(wrong).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("the setup code is not the one on the box"),
        "a wrong code is refused with a clear error: {body}"
    );
    let r = setup(shown.setup_code.clone()).await;
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "the console's code works"
    );
    assert_eq!(r.headers()["location"], "/login?created=1");
    let r = pinned
        .post(format!("{base}/login"))
        .form(&[("username", "tech"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "the new password logs in"
    );
    assert!(r.headers().contains_key("set-cookie"));

    // Power off cleanly; the disk then holds the code root-only, the same as shown.
    let status = vm.power_off(Duration::from_secs(180)).await;
    assert!(status.success(), "QEMU exited with {status}");
    let disk = vm.root_partition();
    let fsck = std::process::Command::new("e2fsck")
        .args(["-f", "-n"])
        .arg(&disk)
        .output()
        .expect("running e2fsck");
    assert!(
        fsck.status.success(),
        "the disk is not clean after power-off: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    assert_eq!(
        image::debugfs_stat(&disk, SETUP_CODE_FILE),
        Some(image::FileStat {
            mode: 0o600,
            uid: 0,
            gid: 0
        }),
        "the setup code file is root:root 0600"
    );
    let on_disk = text(image::debugfs_cat(&disk, SETUP_CODE_FILE), SETUP_CODE_FILE);
    assert_eq!(on_disk.trim(), shown.setup_code);

    eprintln!(
        "| accel | image build | boot to greeting | whole test |\n\
         |---|---|---|---|\n\
         | {accel:?} | {:.1} s{} | {:.1} s | {:.1} s |",
        build_time.as_secs_f64(),
        if build_time.is_zero() {
            " (cached)"
        } else {
            ""
        },
        boot_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
