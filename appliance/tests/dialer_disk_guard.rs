//! The disk guard stops new calls: while the recordings disk reads nearly full no INVITE
//! reaches the carrier (SIPp), the contacts stay pending (nothing handed back or failed) and
//! the box says why; once the hold lifts (in a running dialer) or the threshold is raised (the
//! daemon restarted with a new config) every contact is dialled.
//!
//! The agents' inbound calls get 503 Service Unavailable while new calls are held, and are
//! answered again once the hold lifts (SIPp callers against the real agent lines).
//!
//! The daemon test reads the real filesystem, whatever its size and fullness — no mock of
//! the filesystem: a free-space floor above the disk's whole size
//! (`recording.disk_refuse_free_mb`) makes it read as nearly full; then the floor off and
//! `disk_refuse_percent = 100` make it read as healthy (unless it is completely full).

mod dialer_support;
mod sip_support;

use callgate_appliance::dialer::store;
use callgate_appliance::dialer::CampaignRun;
use callgate_appliance::store::Store;
use callgate_common::time::UnixMillis;
use dialer_support::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long "nothing happens" is watched: enough for a dialer that ignores the hold to have
/// sent its first INVITEs many times over (it dials within milliseconds of holding a grant).
const QUIET: Duration = Duration::from_secs(4);

const RECIPIENT: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_dialer_sends_no_invite_keeps_its_contacts_and_dials_them_when_the_hold_lifts() {
    const CONTACTS: u64 = 4;
    let carrier = Carrier::start_traced();
    let mut rig = Rig::new().await;
    let why = "the recordings disk is nearly full (test)";
    let (hold, held) = tokio::sync::watch::channel(Some(why.to_string()));
    rig.new_calls = Some(held);
    let hour = UnixMillis::now().plus_millis(3_600_000);
    rig.feed(agentless_brief(all_day())).await;
    rig.feed(lease(1, 0..CONTACTS, hour, |_| false)).await;
    rig.feed(grant(2, hour)).await;
    rig.start_dialer(carrier.addr, Duration::from_secs(3)).await;
    let status = rig.dialer.as_ref().unwrap().status();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let waiting = status.borrow().iter().any(|s| {
            s.campaign == CAMPAIGN
                && s.run == CampaignRun::Waiting(format!("no new calls: {why}"))
                && s.pending == CONTACTS as u32
        });
        if waiting {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the campaign never said why it waits: {:?}",
            *status.borrow()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(QUIET).await;
    assert!(
        rig.invites().is_empty(),
        "the dialer sent an INVITE while held"
    );
    assert_eq!(
        carrier.invites_received(),
        0,
        "SIPp got an INVITE while held"
    );
    assert_eq!(
        rig.unsettled().await,
        CONTACTS as i64,
        "contacts stay pending"
    );
    assert!(
        rig.uplinks().await.is_empty(),
        "nothing handed back or reported"
    );

    hold.send(None).unwrap();
    rig.settled(Duration::from_secs(90)).await;
    assert_eq!(rig.invites().len(), CONTACTS as usize);
    let deadline = Instant::now() + Duration::from_secs(60);
    while carrier.invites_received() < CONTACTS as usize {
        assert!(
            Instant::now() < deadline,
            "SIPp logged {} INVITEs; errors: {}",
            carrier.invites_received(),
            carrier.errors()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rig.dialer.take().unwrap().stop().await;
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The daemon, killed when dropped (the test stops it with SIGTERM first).
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Daemon {
    fn start(dir: &std::path::Path, log: &str) -> Daemon {
        Daemon(
            Command::new(env!("CARGO_BIN_EXE_callgate-appliance"))
                .args(["--config", "config.toml", "run"])
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join(log)).unwrap())
                .spawn()
                .unwrap(),
        )
    }

    async fn stop(mut self) {
        let kill = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                assert!(s.success(), "{s:?}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not stop on SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `/healthz`'s status code and body.
async fn health(ops: u16) -> Option<(u16, String)> {
    let r = reqwest::get(format!("http://127.0.0.1:{ops}/healthz"))
        .await
        .ok()?;
    let code = r.status().as_u16();
    Some((code, r.text().await.ok()?))
}

async fn wait_health(ops: u16, want: u16, log: impl Fn() -> String) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some((code, body)) = health(ops).await {
            if code == want {
                return body;
            }
        }
        assert!(
            Instant::now() < deadline,
            "/healthz never answered {want}; daemon log:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn unsettled(store: &Store) -> i64 {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM dialer_contacts WHERE state IN ('pending', 'dialling')",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_on_a_full_recordings_disk_dials_nobody_until_its_threshold_is_raised() {
    const CONTACTS: u64 = 3;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let data = dir.path().join("data");
    let recordings = dir.path().join("recordings");
    std::fs::create_dir_all(&recordings).unwrap();
    let (_, total) = callgate_appliance::recording::filesystem_usage(&recordings).unwrap();
    // More megabytes than the whole filesystem holds: never that much free.
    let beyond_the_disk_mb = total / 1_000_000 + 1;
    let hour = UnixMillis::now().plus_millis(3_600_000);
    let store = Store::open(&data).await.unwrap();
    for body in [
        agentless_brief(all_day()),
        lease(1, 0..CONTACTS, hour, |_| false),
        grant(3, hour),
    ] {
        assert!(store::apply_now(store.pool(), &body).await.unwrap());
    }
    let carrier = Carrier::start_traced();
    let (ops, sip) = (free_tcp_port(), free_udp_port());
    let rtp = (free_udp_port() & !1).min(60_000);
    let config = |alarm: u8, refuse: u8, floor_mb: u64| {
        format!(
            "[appliance]\nid = \"branch-disk\"\ndata_dir = \"data\"\n[log]\nlevel = \"callgate_appliance=debug,info\"\n\
             [ops]\nlisten = \"127.0.0.1:{ops}\"\n\
             [web]\nenabled = false\n\
             [board]\nkind = \"none\"\n\
             [sip]\nlisten = \"127.0.0.1:{sip}\"\n\
             [[sip.trunks]]\nname = \"carrier\"\naddress = \"{carrier}\"\nmax_channels = 10\nmax_cps = 50\n\
             [dialer]\nrtp_first_port = {rtp}\nrtp_last_port = {last}\nring_timeout_seconds = 3\n\
             [recording]\nrecipients = [\"{RECIPIENT}\"]\ndirectory = \"recordings\"\n\
             disk_alarm_percent = {alarm}\ndisk_refuse_percent = {refuse}\n\
             disk_refuse_free_mb = {floor_mb}\n",
            carrier = carrier.addr,
            last = rtp + 199,
        )
    };
    let log = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();

    // No disk has more free space than its size: "nearly full" by the floor.
    std::fs::write(
        dir.path().join("config.toml"),
        config(99, 100, beyond_the_disk_mb),
    )
    .unwrap();
    let daemon = Daemon::start(dir.path(), "full.log");
    let body = wait_health(ops, 503, || log("full.log")).await;
    assert!(
        body.contains("recording disk")
            && body.contains("no new calls")
            && body.contains(&format!("under {beyond_the_disk_mb} MB free")),
        "{body}"
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    while !log("full.log").contains("SIP engine and campaign executor started") {
        assert!(
            Instant::now() < deadline,
            "dialer never started:\n{}",
            log("full.log")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        carrier.invites_received(),
        0,
        "SIPp got an INVITE from a box whose disk is full; daemon log:\n{}",
        log("full.log")
    );
    assert_eq!(
        unsettled(&store).await,
        CONTACTS as i64,
        "contacts stay pending"
    );
    daemon.stop().await;
    assert_eq!(
        unsettled(&store).await,
        CONTACTS as i64,
        "a stop while held hands nothing back"
    );

    // The floor off and the refusal at 100 %: the same contacts are dialled.
    std::fs::write(dir.path().join("config.toml"), config(99, 100, 0)).unwrap();
    let daemon = Daemon::start(dir.path(), "raised.log");
    let body = wait_health(ops, 200, || log("raised.log")).await;
    assert!(body.contains("recording disk"), "{body}");
    let deadline = Instant::now() + Duration::from_secs(90);
    while unsettled(&store).await > 0 || carrier.invites_received() < CONTACTS as usize {
        assert!(
            Instant::now() < deadline,
            "contacts not dialled after the threshold was raised (SIPp saw {} INVITEs); daemon log:\n{}",
            carrier.invites_received(),
            log("raised.log")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_inbound_calls_get_503_while_new_calls_are_held_and_are_answered_after() {
    use callgate_appliance::agents::desk::DeskSettings;
    use callgate_appliance::agents::lines::{LineSettings, OverflowRoute};
    use callgate_appliance::agents::AgentsSetup;
    use callgate_appliance::media::RtpPortRange;
    use callgate_appliance::sip::udp::UdpAgent;
    use callgate_common::ids::{AgentGroupId, AgentId};
    use callgate_common::wire::{AgentBrief, AgentGroupBrief, AgentRoster, Downlink};
    use callgate_sip::agent::AgentConfig;
    use callgate_sip::inbound::{InboundPolicy, InboundRoute, RouteTarget, UnknownSource};

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    let roster = AgentRoster {
        version: 1,
        groups: vec![AgentGroupBrief {
            group: AgentGroupId(4),
            name: "support".into(),
        }],
        agents: vec![AgentBrief {
            agent: AgentId(11),
            name: "Ann Agent".into(),
            login: "ann".into(),
            password_phc: callgate_appliance::web::auth::hash_password("agent password 1"),
            sip_username: "desk1".into(),
            skills: vec![],
            groups: vec![AgentGroupId(4)],
        }],
    };
    let mut tx = store.pool().begin().await.unwrap();
    callgate_appliance::agents::roster::apply_downlink(&mut tx, &Downlink::AgentRoster(roster))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let ua = UdpAgent::start(
        "127.0.0.1:0".parse().unwrap(),
        AgentConfig {
            local: "127.0.0.1:0".parse().unwrap(),
            user: "branch".into(),
            timers: Default::default(),
            credentials: None,
            seed: std::process::id().into(),
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
            number: "service".into(),
            target: RouteTarget::AgentGroup("support".into()),
        }],
    })
    .unwrap();
    let box_addr = ua.local_addr().to_string();
    let base = (free_udp_port() & !1).min(60_000);
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let agents = callgate_appliance::agents::start_with_lines(
        AgentsSetup {
            pool: store.pool().clone(),
            outbox: None,
            desk: DeskSettings::default(),
            lines: Some((
                ua,
                LineSettings {
                    media_ip: "127.0.0.1".parse().unwrap(),
                    rtp_ports: RtpPortRange::new(base, base + 40).unwrap(),
                    phone_ring_timeout: Duration::from_secs(10),
                    overflow: OverflowRoute::HangUp,
                    phone_srtp: false,
                },
            )),
            dialer: None,
        },
        stop_rx,
    )
    .await
    .unwrap();
    let (hold, held) = tokio::sync::watch::channel(Some(
        "the recordings disk is nearly full (test)".to_string(),
    ));
    agents.lines.as_ref().unwrap().hold_new_calls(held);

    let refused = sip_support::Sipp::start_on(
        sip_support::free_udp_port(),
        &[
            "-sf",
            &sip_support::scenario("uac_expect_unavailable.xml"),
            &box_addr,
        ],
        &["-m", "1"],
    );
    let (ok, errors) = refused.passed().await;
    assert!(ok, "the caller got 503 while new calls are held: {errors}");
    assert_eq!(agents.desk.pacing_counts().inbound_waiting, 0);

    hold.send(None).unwrap();
    // Answered and queued (nobody is logged in); the caller hangs up after 1 s on hold.
    let caller = sip_support::Sipp::start_on(
        sip_support::free_udp_port(),
        &["-sn", "uac", &box_addr],
        &["-m", "1", "-d", "1000"],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while agents.desk.pacing_counts().inbound_waiting == 0 {
        assert!(Instant::now() < deadline, "the caller was never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (ok, errors) = caller.passed().await;
    assert!(ok, "the caller was answered once the hold lifted: {errors}");
    let _ = stop.send(true);
}
