//! The appliance's local ops listener: `/healthz` and `/metrics` on loopback by default.
//! The technicians' HTTPS web UI is a separate room (issue 9).
//!
//! Owns the listening socket, graceful shutdown and the order in which the daemon's parts
//! start and stop (store, board, sync link, agents' desk and lines, SIP engine + dialer with
//! its answered-call dispatch, web UI with the agent page); owns no call handling itself.

use crate::board::BoardTask;
use crate::config::ValidConfig;
use crate::store::Store;
use callgate_board::led::{LedPattern, StatusLed};
use callgate_common::observe::{self, CheckResult, HealthChecks};
use std::sync::Arc;
use tokio::net::TcpListener;

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] callgate_common::store::StoreError),
    /// The board could not be opened.
    #[error("board: {0}")]
    Board(#[from] callgate_board::linux::LinuxBoardError),
    /// The web UI could not start.
    #[error(transparent)]
    Web(#[from] crate::web::WebError),
    /// The link to the coordinator could not start.
    #[error(transparent)]
    Sync(#[from] crate::sync::SyncError),
    /// The SIP engine or the campaign executor could not start.
    #[error(transparent)]
    Dialer(#[from] crate::dialer::DialerError),
    /// The agent desk could not start.
    #[error("agents: {0}")]
    Agents(#[from] crate::agents::AgentsError),
    /// The agents' SIP side (`agents.sip_listen`) could not start.
    #[error("agents' SIP side: {0}")]
    AgentsSip(#[source] crate::sip::udp::DriverError),
    /// The ops address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The listener failed while serving.
    #[error("ops listener failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// The program's name in health output and logs.
pub const SERVICE: &str = "callgate-appliance";

/// Why [`run`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunExit {
    /// `shutdown` resolved: the daemon is done.
    Stopped,
    /// Something asked for a restart in place (enrollment, factory reset), for this reason.
    Restart(String),
}

/// Opens the store, binds the ops listener and runs until `shutdown` resolves or a restart
/// is requested.
pub async fn run(
    config: ValidConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<RunExit, ServerError> {
    let mut config = config;
    crate::web::trunks::apply_overlay(&mut config);
    let restart = crate::restart::RestartSwitch::new();
    let metrics = observe::install_metrics();
    let store = Store::open(&config.raw.appliance.data_dir).await?;
    // Recordings: what a crash left unlisted is listed (and `.part` files deleted) before
    // any call records; then retention and the disk guard run for the daemon's lifetime.
    let recording_upkeep = match &config.recording {
        Some(recording) => {
            let segments = crate::recording::SqliteSegmentStore::new(store.pool().clone());
            if let Err(e) = crate::recording::recover_at_start(recording, &segments).await {
                tracing::error!(error = %e, "start-up scan of the recordings directory failed");
            }
            Some(crate::recording::RecordingUpkeep::start(
                recording.clone(),
                segments,
                crate::recording::UpkeepRhythm::default(),
            ))
        }
        None => None,
    };
    let board = BoardTask::start(&config.raw.board)?.map(Arc::new);
    // The engine's health feeds the watchdog gate: a stalled daemon stops kicking it.
    let health_feed = board.clone().map(|board| {
        board.set_led(StatusLed::Power, LedPattern::On);
        let store = store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tick.tick().await;
                board.report_health(store.ping().await.is_ok());
            }
        })
    });
    let mut sync = crate::sync::service::SyncTask::start(&config, store.pool()).await?;
    // The button held through boot: factory reset, then a fresh start without identity.
    let button_reset = board.as_ref().map(|board| {
        let requested = board.factory_reset_requested();
        let pool = store.pool().clone();
        let identity_dir = config.raw.appliance.data_dir.join("identity");
        let restart = restart.clone();
        tokio::spawn(async move {
            requested.notified().await;
            match crate::reset::factory_reset(&pool, &identity_dir).await {
                Ok(_) => restart.request("factory reset from the front-panel button"),
                Err(e) => tracing::error!(error = %e, "factory reset from the button failed"),
            }
        })
    });
    let listener = TcpListener::bind(config.ops_listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.ops_listen,
            source,
        })?;
    let local = listener.local_addr().map_err(ServerError::Serve)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // The dialer and the agents share one outbox; without the sync link (box not enrolled)
    // it is opened here and what it stores goes out once the link runs.
    let outbox = match (&sync.outbox, &config.sip) {
        (Some(o), _) => Some(o.clone()),
        (None, Some(_)) => {
            let cfg = crate::sync::service::outbox_config(config.raw.sync.outbox_quota_mib);
            let ob = crate::sync::outbox_store::UplinkOutbox::open(store.pool().clone(), cfg)
                .await
                .map_err(crate::dialer::DialerError::from)?;
            Some(Arc::new(tokio::sync::RwLock::new(Arc::new(ob))))
        }
        (None, None) => None,
    };
    // Speech for robot scripts (campaign calls and inbound overflow): espeak-ng, cached.
    let speech = Arc::new(crate::robot_call::SpeechCache::new(
        Arc::new(callgate_robot::EspeakNg::default()),
        crate::robot_call::speech::DEFAULT_CAPACITY,
    ));
    // The agents (desk, the agents' SIP side on `agents.sip_listen`, their lines) run when
    // `[sip]` and `agents.sip_listen` are configured; the agent page is served with them.
    let (desk, agent_side, agent_sip) = match (&config.sip, &config.agents) {
        (Some(sip), Some(agents)) => {
            let (desk, side, agent_sip) = start_agents(
                sip,
                agents,
                &store,
                outbox.clone(),
                &stop_rx,
                config.recording.as_ref(),
                speech.clone(),
            )
            .await?;
            (Some(desk), Some(side), Some(agent_sip))
        }
        _ => {
            tracing::info!(
                "no [sip] section or agents.sip_listen: agents and the agent page are off"
            );
            (None, None, None)
        }
    };
    // Robot scripts for agentless campaigns and robot routes: each campaign's script comes
    // with its brief; a campaign without one (or with a refused one) hears the `[dialer]`
    // announcement. Prompt files are looked up in `<data_dir>/prompts`.
    let robot_placement = match &config.sip {
        Some(_) => Some(crate::robot_call::RobotPlacement::new(
            speech.clone(),
            config.raw.appliance.data_dir.join("prompts"),
            crate::dialer::driver::dialer_announcement(&config)?,
        )),
        None => None,
    };
    // Why no new call may start: the recordings disk nearly full (the dialer starts no
    // attempt and agents' inbound calls are refused with 503 while it holds).
    let new_calls_held = recording_upkeep.as_ref().map(|u| u.new_calls_held());
    if let (Some(side), Some(held)) = (&agent_side, &new_calls_held) {
        side.lines.hold_new_calls(held.clone());
    }
    // The SIP engine and the campaign executor run when `[sip]` is configured.
    let dialer = match &config.sip {
        Some(sip) => Some(
            crate::dialer::driver::start_from_config(
                &config,
                sip,
                store.pool(),
                outbox.clone(),
                agent_side,
                robot_placement.clone(),
                new_calls_held.clone(),
            )
            .await?,
        ),
        None => {
            tracing::info!("no [sip] section: the SIP engine and the dialer are off");
            None
        }
    };
    // Every brief the dialer holds gives the robot placement its campaign's script.
    let robot_briefs = match (&robot_placement, &dialer) {
        (Some(robot), Some(dialer)) => {
            let robot = robot.clone();
            let mut briefs = dialer.control().briefs();
            let mut stop = stop_rx.clone();
            Some(tokio::spawn(async move {
                loop {
                    for brief in briefs.borrow_and_update().iter() {
                        if let Err(e) = robot.set_campaign(brief) {
                            tracing::warn!(campaign = %brief.campaign, error = %e,
                                "robot script refused: the campaign's calls hear the announcement");
                        }
                    }
                    tokio::select! {
                        changed = briefs.changed() => if changed.is_err() { return },
                        _ = stop.changed() => return,
                    }
                }
            }))
        }
        _ => None,
    };
    // Telemetry to the coordinator (issue 5): campaigns, agents, temperature, disk, outbox.
    sync.start_telemetry(crate::sync::telemetry::TelemetrySources {
        data_dir: config.raw.appliance.data_dir.clone(),
        campaigns: dialer.as_ref().map(|d| d.status()),
        agents_ready: desk.clone().map(|d| {
            Box::new(move || d.pacing_counts().ready_before_queue)
                as crate::sync::telemetry::CountFn
        }),
        agents_changed: desk.as_ref().map(|d| d.changes()),
        temperature: board.as_ref().map(|b| {
            let t = b.temperature();
            Box::new(move || *t.lock().unwrap_or_else(|p| p.into_inner()))
                as crate::sync::telemetry::TemperatureFn
        }),
        trunks: dialer
            .as_ref()
            .map(|d| Arc::new(d.trunk_control()) as Arc<dyn crate::web::status::TrunkSource>),
    });
    let web =
        if config.raw.web.enabled {
            let data_dir = &config.raw.appliance.data_dir;
            let mut names = config.raw.web.certificate_names.clone();
            if let Ok(addrs) = callgate_board::linux::lan_addresses() {
                names.extend(addrs.into_iter().map(|(_, ip)| ip.to_string()));
            }
            names.push("127.0.0.1".into());
            let settings = crate::web::WebSettings {
                listen: config.web_listen,
                setup_code_file: config
                    .raw
                    .web
                    .setup_code_file
                    .clone()
                    .unwrap_or_else(|| data_dir.join("setup-code")),
                certificate_names: names,
                sessions: crate::web::auth::SessionPolicy {
                    idle_ms: i64::from(config.raw.web.session_idle_minutes) * 60_000,
                    absolute_ms: i64::from(config.raw.web.session_max_hours) * 3_600_000,
                },
                reboot_command: config.raw.web.reboot_command.clone(),
                identity_dir: data_dir.join("identity"),
                restart: restart.clone(),
                sip: config.sip.clone(),
            };
            let enrolled_as = crate::sync::enroll::Enrollment::load(
                &crate::sync::identity::IdentityDir::in_data_dir(data_dir),
            )
            .map(|e| e.appliance.to_string());
            let source = crate::web::status::StatusSource {
                appliance: config.id.as_ref().map(ToString::to_string).or(enrolled_as),
                started: std::time::Instant::now(),
                store: store.clone(),
                data_dir: data_dir.clone(),
                temperature: board.as_ref().map(|b| b.temperature()).unwrap_or_default(),
                link: sync.status.clone(),
                outbox: sync.outbox.clone(),
                campaigns: dialer.as_ref().map(|d| d.status()),
            };
            let trunks = dialer.as_ref().map(|d| d.trunk_control());
            let engine = crate::web::status::LiveEngine {
                trunks: trunks
                    .clone()
                    .map(|t| Arc::new(t) as Arc<dyn crate::web::status::TrunkSource>),
                probing: config
                    .sip
                    .as_ref()
                    .is_some_and(|s| s.router.probe.is_some()),
                agents: None,
                ..Default::default()
            };
            let controls = crate::web::trunks::SipControls {
                trunks,
                agents: agent_sip.clone(),
                dialer: dialer.as_ref().map(|d| d.control()),
            };
            let ui = crate::web::WebUi::bind_with_agents(&settings, source, desk.clone())?
                .with_engine(engine, config.raw.sip.clone(), controls);
            let web_addr = ui.local_addr().map_err(ServerError::Serve)?;
            tracing::info!(
                url = %format!("https://{web_addr}/"),
                fingerprint = %ui.fingerprint(),
                setup_code_file = %settings.setup_code_file.display(),
                "local web UI listening; check the certificate fingerprint in the browser"
            );
            let mut rx = stop_rx.clone();
            Some(tokio::spawn(ui.serve(async move {
                let _ = rx.wait_for(|stop| *stop).await;
            })))
        } else {
            None
        };
    tracing::info!(
        listen = %local,
        appliance = ?config.id,
        data_dir = %config.raw.appliance.data_dir.display(),
        "appliance running; health at http://{local}/healthz"
    );
    let checks: HealthChecks = {
        let store = store.clone();
        let new_calls_held = new_calls_held.clone();
        Arc::new(move || {
            let store = store.clone();
            // The disk guard holding new calls is a failed check: the box cannot do its job.
            let disk = new_calls_held.as_ref().map(|h| match &*h.borrow() {
                None => CheckResult::ok("recording disk"),
                Some(why) => CheckResult::failed("recording disk", format!("no new calls: {why}")),
            });
            Box::pin(async move {
                let mut checks = vec![match store.ping().await {
                    Ok(()) => CheckResult::ok("store"),
                    Err(e) => CheckResult::failed("store", e.to_string()),
                }];
                checks.extend(disk);
                checks
            })
        })
    };
    let app = observe::ops_router(SERVICE, env!("CARGO_PKG_VERSION"), checks, metrics);
    metrics::gauge!("callgate_appliance_up").set(1.0);
    let restart_wait = restart.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                () = shutdown => {}
                reason = restart_wait.requested() => {
                    tracing::warn!(%reason, "restarting the daemon");
                }
            }
            let _ = stop_tx.send(true);
        })
        .await
        .map_err(ServerError::Serve)?;
    if let Some(web) = web {
        match observe::shutdown_stage("local web UI", web).await {
            Ok(Err(e)) => tracing::error!(error = %e, "web UI stopped with an error"),
            Err(e) => tracing::error!(error = %e, "web UI task failed"),
            Ok(Ok(())) => {}
        }
    }
    if let Some(task) = robot_briefs {
        task.abort();
    }
    if let Some(reset) = button_reset {
        reset.abort();
    }
    if let Some(feed) = health_feed {
        feed.abort();
        let _ = observe::shutdown_stage("health feed", feed).await;
    }
    if let Some(board) = board.and_then(Arc::into_inner) {
        board.stop();
    }
    if let Some(dialer) = dialer {
        observe::shutdown_stage("dialer", dialer.stop()).await;
    }
    if let Some(upkeep) = recording_upkeep {
        observe::shutdown_stage("recording upkeep", upkeep.stop()).await;
    }
    observe::shutdown_stage("sync link", sync.stop()).await;
    observe::shutdown_stage("store", store.pool().close()).await;
    tracing::info!("appliance stopped");
    Ok(match restart.reason() {
        Some(reason) => RunExit::Restart(reason),
        None => RunExit::Stopped,
    })
}

/// The route `agents.overflow` chose for queued inbound callers who waited too long.
fn overflow_route(
    overflow: &crate::config::ValidOverflow,
    store: &Store,
    recording: Option<&crate::recording::ValidRecording>,
    speech: Arc<crate::robot_call::SpeechCache>,
) -> Result<crate::agents::lines::OverflowRoute, ServerError> {
    use crate::agents::lines::OverflowRoute;
    use crate::config::ValidOverflow;
    use crate::robot_call::{OverflowTarget, ScriptOverflow, Voicemail};
    let recorded = recording.map(|r| {
        (
            r.clone(),
            crate::recording::SqliteSegmentStore::new(store.pool().clone()),
        )
    });
    Ok(match overflow {
        ValidOverflow::HangUp => OverflowRoute::HangUp,
        ValidOverflow::Robot(script) => OverflowRoute::Robot(OverflowTarget(Arc::new(
            ScriptOverflow::new(script.clone(), speech, recorded),
        ))),
        ValidOverflow::Voicemail {
            greeting,
            max_message,
        } => {
            let recorded = recorded.ok_or_else(|| crate::dialer::DialerError::Prompt {
                path: greeting.display().to_string(),
                reason: "voicemail needs [recording]".into(),
            })?;
            let voicemail =
                Voicemail::from_wav_file(greeting, *max_message, recorded).map_err(|e| {
                    crate::dialer::DialerError::Prompt {
                        path: greeting.display().to_string(),
                        reason: e.to_string(),
                    }
                })?;
            OverflowRoute::Robot(OverflowTarget(Arc::new(voicemail)))
        }
    })
}

/// Starts the agents' SIP side, the desk and the lines; returns the desk (for the agent
/// page), what the dialer needs to place answered calls with agents, and the agents' SIP
/// side's control (the web UI's phone and trunk edits reload it).
async fn start_agents(
    sip: &crate::sip::config::SipSettings,
    agents: &crate::config::ValidAgents,
    store: &Store,
    outbox: Option<crate::agents::service::SharedOutbox>,
    stop_rx: &tokio::sync::watch::Receiver<bool>,
    recording: Option<&crate::recording::ValidRecording>,
    speech: Arc<crate::robot_call::SpeechCache>,
) -> Result<
    (
        crate::agents::service::AgentDeskService,
        crate::dialer::driver::AgentSide,
        crate::sip::udp::AgentSipControl,
    ),
    ServerError,
> {
    use crate::agents::lines::LineSettings;
    let ua = crate::agents::lines::start_agent_sip_on(
        sip,
        agents.phone_listeners(),
        agents.digest_algorithms.clone(),
    )
    .await
    .map_err(ServerError::AgentsSip)?;
    let sip_addr = ua.local_addr();
    let agent_sip = ua.control();
    let (first, last) = agents.ports;
    let rtp_ports =
        crate::media::RtpPortRange::new(first, last).map_err(crate::dialer::DialerError::from)?;
    let (desk_tx, desk_outputs) = tokio::sync::mpsc::unbounded_channel();
    let started = crate::agents::start_with_lines(
        crate::agents::AgentsSetup {
            pool: store.pool().clone(),
            outbox,
            desk: agents.desk.clone(),
            lines: Some((
                ua,
                LineSettings {
                    media_ip: agents.media_address,
                    rtp_ports,
                    phone_ring_timeout: agents.phone_ring_timeout,
                    overflow: overflow_route(&agents.overflow, store, recording, speech)?,
                    phone_srtp: agents.phone_srtp,
                },
            )),
            dialer: Some(desk_tx),
        },
        stop_rx.clone(),
    )
    .await?;
    let safe_harbour = match &agents.safe_harbour_prompt {
        Some(path) => crate::dialer::placement::Announcement::from_wav_file(
            path,
            callgate_common::wire::CallOutcome::Abandoned,
        )?,
        None => {
            tracing::warn!("no agents.safe_harbour_prompt: abandoned calls hear a tone sequence; record the real message");
            crate::dialer::placement::Announcement::new(
                callgate_media::prompt::Prompt::tones(
                    &[(523.3, 300, 100), (659.3, 300, 100), (523.3, 300, 400)],
                    8_000,
                ),
                callgate_common::wire::CallOutcome::Abandoned,
            )
        }
    };
    let lines = started.lines.ok_or(crate::dialer::DialerError::Stopped)?;
    tracing::info!(sip = %sip_addr, media = %agents.media_address, "agents' SIP side, desk and lines started");
    Ok((
        started.desk.clone(),
        crate::dialer::driver::AgentSide {
            desk: started.desk,
            lines,
            desk_outputs,
            safe_harbour,
            shutdown: stop_rx.clone(),
        },
        agent_sip,
    ))
}
