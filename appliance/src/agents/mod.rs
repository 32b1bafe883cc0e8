//! # Agents: the roster, routing at answer time and the blended inbound queue
//!
//! Owns who may log in on the agent page (the roster the coordinator sends, with argon2 PHC
//! passwords), the routing policy in force, every agent's state (ready, reserved, talking,
//! wrap-up, paused with a reason, logged out) and which agent takes an answered or inbound
//! call.
//!
//! Rooms:
//! - [`roster`]: the roster and the routing policy in the store (newest version wins);
//! - [`desk`]: [`desk::AgentDesk`], the sans-IO core (no tokio, no clock, time passed in):
//!   agent states, routing of answered calls, the 2-second safe-harbour rule, the inbound
//!   queue (positions, overflow) and the counts the pacing core needs;
//! - [`script`]: screen-pop contents (masked number, fields, the script with `{{variables}}`
//!   filled in);
//! - [`inbound_record`]: the call records of inbound calls (answered, abandoned, overflowed,
//!   refused);
//! - [`lines`]: the agents' telephone lines: nailed-up legs to their phones, inbound calls
//!   answered, held with music and bridged to agents (SIP + media);
//! - [`bench`]: the `agents-bench` command (routing cost with N agents);
//! - [`service`]: the tokio driver around the desk: its timer, the durable outbox for agent
//!   events, the store for dispositions, and live views for the agent page.
//!
//! Talks to: the sync outbox (agent events), the store, the SIP user agent that serves the
//! branch's phones and the media layer (only in [`lines`]); the dialer calls the desk's
//! documented API. Must not: dial customers, or change campaign, lease or grant data.

pub mod bench;
pub mod desk;
pub mod inbound_record;
pub mod lines;
pub mod phone_bindings;
pub mod roster;
pub mod script;
pub mod service;

use callgate_common::ids::{AgentId, CallId};
use desk::{DeskOutput, DeskSettings};
use lines::LineSettings;
use service::{AgentDeskService, SharedOutbox};
use sqlx::SqlitePool;
use tokio::sync::{mpsc, watch};

/// What [`start`] needs from the daemon.
pub struct AgentsSetup {
    /// The box's store (roster, policy, sessions, dispositions).
    pub pool: SqlitePool,
    /// The sync outbox (`None` while the box is not enrolled).
    pub outbox: Option<SharedOutbox>,
    /// How the desk behaves.
    pub desk: DeskSettings,
    /// The agents' SIP side (registrar for the desk phones, inbound route table; see
    /// [`lines::start_agent_sip`]) and media settings, when SIP runs.
    pub lines: Option<(crate::sip::udp::UdpAgent, LineSettings)>,
    /// Where desk outputs about calls the lines do not hold go (the dialer's answered
    /// outbound calls: connect, safe harbour).
    pub dialer: Option<mpsc::UnboundedSender<DeskOutput>>,
}

/// The running agents subsystem.
#[derive(Debug, Clone)]
pub struct Agents {
    /// The desk, for the agent page (`web::WebUi::bind_with_agents`) and the dialer
    /// (`offer`, `pacing_counts`, agent events).
    pub desk: AgentDeskService,
    /// The agents' lines, for bridging the dialer's answered calls (`None` without a SIP
    /// side).
    pub lines: Option<lines::LinesHandle>,
}

/// Starts the agents subsystem: the desk (timer, outbox writer) and, with a SIP side, the
/// agents' lines. Returns the desk for the agent page
/// (`web::WebUi::bind_with_agents`) and the dialer (`offer`, `pacing_counts`). Everything
/// stops when `shutdown` turns true.
pub async fn start(
    setup: AgentsSetup,
    shutdown: watch::Receiver<bool>,
) -> Result<AgentDeskService, AgentsError> {
    Ok(start_with_lines(setup, shutdown).await?.desk)
}

/// [`start`], also returning the handle on the agents' lines the dialer bridges answered
/// calls through.
pub async fn start_with_lines(
    setup: AgentsSetup,
    shutdown: watch::Receiver<bool>,
) -> Result<Agents, AgentsError> {
    let (desk, outputs) =
        AgentDeskService::start(setup.pool, setup.outbox, setup.desk, shutdown.clone()).await?;
    match setup.lines {
        Some((ua, settings)) => {
            let (handle, commands) = lines::LinesHandle::channel();
            tokio::spawn(lines::run_agent_lines(
                ua,
                desk.clone(),
                outputs,
                setup.dialer,
                (handle.clone(), commands),
                settings,
                shutdown,
            ));
            return Ok(Agents {
                desk,
                lines: Some(handle),
            });
        }
        None => {
            let dialer = setup.dialer;
            tokio::spawn(async move {
                let mut outputs = outputs;
                while let Some(o) = outputs.recv().await {
                    match &dialer {
                        Some(tx) => {
                            let _ = tx.send(o);
                        }
                        None => {
                            tracing::debug!(output = ?o, "desk output with no call side running")
                        }
                    }
                }
            });
        }
    }
    Ok(Agents { desk, lines: None })
}

/// Why an agent operation or a roster/policy change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AgentsError {
    /// The roster is malformed; `field` names the entry at fault (`agents[2].login`).
    #[error("roster {field}: {reason}")]
    InvalidRoster {
        /// The offending entry, as a path.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The routing policy is malformed (names the rule).
    #[error("routing policy {0}")]
    InvalidPolicy(callgate_common::routing::InvalidPolicy),
    /// The agent is not on the roster.
    #[error("agent {0} is not on this box's roster")]
    UnknownAgent(AgentId),
    /// The agent must log in first.
    #[error("agent {0} is not logged in")]
    NotLoggedIn(AgentId),
    /// The agent's phone leg is not up yet, so the agent cannot take calls.
    #[error("agent {0}'s phone has not answered yet")]
    PhoneNotConnected(AgentId),
    /// The operation needs the agent off a call (reserved or talking).
    #[error("agent {agent} is on call {call}: finish it first")]
    OnCall {
        /// The agent.
        agent: AgentId,
        /// The call.
        call: CallId,
    },
    /// The agent is in wrap-up: the disposition (or the end of the wrap-up time) makes it
    /// ready.
    #[error("call {0} is in wrap-up: save its disposition to be ready again")]
    WrapUpPending(CallId),
    /// A pause needs a reason of 1 to 100 characters.
    #[error("a pause needs a reason of 1 to 100 characters")]
    BadPauseReason,
    /// There is no call to set a disposition for.
    #[error("agent {0} has no call to set a disposition for")]
    NoCallToDispose(AgentId),
    /// The code is not one of the call's disposition codes.
    #[error("`{code}` is not a disposition code of this call (choose one of: {allowed})")]
    UnknownDisposition {
        /// The code given.
        code: String,
        /// The codes allowed, comma-separated.
        allowed: String,
    },
    /// The call already has a disposition.
    #[error("call {0} already has a disposition")]
    AlreadyDisposed(CallId),
    /// The call is already known to the desk.
    #[error("call {0} is already offered")]
    DuplicateCall(CallId),
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
    /// The durable outbox refused an agent event.
    #[error("outbox: {0}")]
    Outbox(String),
    /// The agent is not talking on a call it could hang up.
    #[error("agent {0} is not talking on a call")]
    NoCallToHangUp(AgentId),
    /// A preview request was refused (not ready, nothing left, the dialer said no).
    #[error("preview: {0}")]
    Preview(String),
}

impl From<sqlx::Error> for AgentsError {
    fn from(e: sqlx::Error) -> Self {
        AgentsError::Store(e.to_string())
    }
}
