//! The daemon registers a `[[sip.trunks]]` entry with `register_expires_s` at its carrier:
//! a SIPp registrar challenges with digest, grants 2 s, and checks (`verifyauth`) both the
//! first REGISTER and the refresh the daemon sends a second later; SIPp's exit status says
//! whether they passed. A wrong password gets SIPp's 403, which the daemon logs with its next try.

mod sip_support;

use sip_support::{free_udp_port, scenario, Sipp};
use std::process::{Command, Stdio};
use std::time::Duration;

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the daemon when the test ends, however it ends.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the daemon against SIPp's registrar with `password`; SIPp's verdict, its errors,
/// and the daemon's log once it has a line containing `logged` (waiting up to a minute).
async fn registration_through_the_daemon(password: &str, logged: &str) -> (bool, String, String) {
    let registrar = Sipp::start(&["-sf", &scenario("registrar_auth.xml")]);
    let dir = tempfile::tempdir().unwrap();
    let (ops, sip) = (free_tcp_port(), free_udp_port());
    let rtp = (free_udp_port() & !1).min(60_000);
    let config = format!(
        "[appliance]\nid = \"branch-register\"\ndata_dir = \"data\"\n\
         [log]\nlevel = \"callgate_appliance=debug,callgate_sip_net=debug,info\"\n\
         [ops]\nlisten = \"127.0.0.1:{ops}\"\n\
         [web]\nenabled = false\n\
         [board]\nkind = \"none\"\n\
         [sip]\nlisten = \"127.0.0.1:{sip}\"\n\
         [[sip.trunks]]\nname = \"carrier\"\nhost = \"{addr}\"\nusername = \"trunk7\"\n\
         password = \"{password}\"\nregister_expires_s = 3600\nmax_channels = 1\nmax_cps = 1\n\
         [dialer]\nrtp_first_port = {rtp}\nrtp_last_port = {last}\n",
        addr = registrar.addr,
        last = rtp + 9,
    );
    std::fs::write(dir.path().join("config.toml"), config).unwrap();
    let _daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_callgate-appliance"))
            .args(["--config", "config.toml", "run"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("daemon.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let (ok, errors) = registrar.passed().await;
    let read = || std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !read().contains(logged) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (ok, errors, read())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_registers_a_trunk_with_digest_and_refreshes_it() {
    let (ok, errors, log) =
        registration_through_the_daemon("pw7", "trunk registered at its carrier").await;
    assert!(
        ok,
        "SIPp verified both REGISTERs: {errors}\ndaemon log:\n{log}"
    );
    assert!(
        log.contains("registering the trunk at its carrier"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trunk_registration_refused_403_is_logged_naming_the_trunk() {
    // SIPp answers a wrong password 403 and ends its scenario (successfully).
    let (ok, errors, log) = registration_through_the_daemon("not-pw7", "registration failed").await;
    assert!(ok, "{errors}");
    let refused = log
        .lines()
        .find(|l| l.contains("registration failed: 403"))
        .unwrap_or_else(|| panic!("no refusal logged:\n{log}"));
    // It names the trunk and when it is tried again (capped back-off, first 2.5-5 s).
    assert!(
        refused.contains("trunk carrier registration failed") && refused.contains("next try in"),
        "{refused}"
    );
    assert!(!log.contains("trunk registered at its carrier"), "{log}");
}
