//! The agents' telephone lines: the tokio driver between the desk ([`AgentDeskService`]),
//! the SIP user agent that serves the branch's phones ([`UdpAgent`] with its registrar and
//! inbound route table) and the media layer.
//!
//! - **Nailed-up legs.** When the desk asks ([`DeskOutput::CallPhone`], at login) the
//!   agent's registered phone is called once and the leg is kept up; its answer makes the
//!   agent ready, and the leg failing or dropping logs the agent out with the reason.
//! - **Inbound calls** the route table sends to an agent group (`AgentEvent::Incoming` with
//!   `RouteTarget::AgentGroup`) are answered and put in front of the desk. A queued caller
//!   hears hold music (a tone pattern: no music file ships yet) and, at each position
//!   announcement, that many short beeps (no recorded number prompts yet). When the desk
//!   connects the caller, the agent hears the connect beep on the nailed-up leg and the two
//!   legs are bridged ([`run_bridge`]; recorded, after the consent announcement when one is
//!   configured, once [`LinesHandle::record_calls`] was given the box's recording); the
//!   caller's hang-up ends the bridge and the agent's leg is re-opened on the same port for
//!   the next call.
//! - **Call records**: every inbound call (answered by an agent, abandoned in the queue,
//!   overflowed, refused) leaves one `CallRecord`, committed by [`super::inbound_record`]
//!   before the caller's SIP leg is released.
//! - **Overflow** ([`DeskOutput::Overflow`]) goes to [`OverflowRoute`]: hang up, or hand
//!   the caller's media to a robot script or voicemail (`crate::robot_call::overflow`),
//!   hanging the caller up when it is done. A script's `transfer` goes through the desk's
//!   transfer hook (`AgentDeskService::transfer`); the desk's decisions about such a call
//!   go to that hook, not to these lines.
//!
//! - **Answered outbound calls** the dialer's placement hands over ([`LinesHandle::bridge_outbound`],
//!   after the desk chose the agent): the customer's leg (owned by the dialer until then) is
//!   bridged to the nailed-up leg at once, the agent hearing the connect beep mixed over the
//!   customer's first words, recorded when the call has a recorder. When the bridge ends
//!   the agent's leg is re-opened.
//!
//! - **Robot transfers** ([`LinesHandle::bridge_audio`], after the desk chose the agent for
//!   a script's `transfer`): the robot keeps the customer's leg and hands its audio over as
//!   frames ([`AgentAudio`]); the frames are relayed to and from the nailed-up leg from the
//!   first one, the agent hearing the connect beep mixed over the customer's first words,
//!   until the call ends, and the agent's leg is re-opened.
//!
//! Outputs about calls this driver does not hold (the dialer's outbound calls) are passed on
//! to `others` untouched.
//!
//! Must not: decide which agent takes a call (the desk does), or dial customers.

use super::desk::{DeskOutput, InboundCall, OfferDecision};
use super::inbound_record::{self, InboundEnd, InboundFacts};
use super::roster;
use super::script::ScreenPop;
use super::service::AgentDeskService;
use crate::media::{
    run_audio_leg, run_bridge, BridgeCommand, BridgeReport, LegAudio, LegReport, MediaError,
    RtpLeg, RtpPortRange,
};
use crate::recording::{CallRecorder, SqliteSegmentStore};
use crate::robot_call::{AgentAudio, OverflowReport};
use crate::sip::udp::UdpAgent;
use callgate_common::ids::{AgentId, CallId, TrunkId};
use callgate_common::phone::PhoneNumber;
use callgate_common::time::UnixMillis;
use callgate_common::wire::CallQuality;
use callgate_media::g711::Codec;
use callgate_media::prompt::Prompt;
use callgate_media::sdp::{
    accept_answer, answer_offer, create_offer, Direction, LocalMedia, NegotiatedAudio,
    SessionDescription,
};
use callgate_sip::agent::{AgentEvent, CallSpec, LegId};
use callgate_sip::inbound::RouteTarget;
use callgate_sip::uri::Uri;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// What an overflowing queued call gets.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverflowRoute {
    /// The call is ended.
    HangUp,
    /// The caller's media goes to a robot script or voicemail; the call ends when it is done.
    Robot(crate::robot_call::OverflowTarget),
}

/// How the lines behave.
#[derive(Debug)]
pub struct LineSettings {
    /// The address our RTP sockets bind and our SDP announces.
    pub media_ip: IpAddr,
    /// Where RTP port pairs come from.
    pub rtp_ports: RtpPortRange,
    /// How long an agent's phone may ring before the login fails.
    pub phone_ring_timeout: Duration,
    /// What overflowing queued calls get.
    pub overflow: OverflowRoute,
    /// Offer SRTP (RTP/SAVP, SDES AES_CM_128_HMAC_SHA1_80) on the agents' nailed-up legs:
    /// a phone that answers plain RTP is not used (its agent's login fails, saying why).
    pub phone_srtp: bool,
}

/// Starts the agents' SIP user agent on `bind` from the validated `[sip]` settings: the
/// registrar serves `[[sip.phones]]` (challenging with `digest_algorithms`, in order), the
/// inbound gate and route table are `[sip.inbound]` and `[[sip.routes]]`.
pub async fn start_agent_sip(
    settings: &crate::sip::config::SipSettings,
    bind: SocketAddr,
    digest_algorithms: Vec<String>,
) -> Result<UdpAgent, crate::sip::udp::DriverError> {
    start_agent_sip_on(settings, PhoneListeners::udp(bind), digest_algorithms).await
}

/// Where the agents' user agent listens for desk phones.
#[derive(Debug, Clone)]
pub struct PhoneListeners {
    /// UDP (`agents.sip_listen`); also the agent's own address.
    pub udp: SocketAddr,
    /// TCP (`agents.sip_tcp_listen`).
    pub tcp: Option<SocketAddr>,
    /// TLS (`agents.sip_tls_listen`) with the settings it serves (the box's certificate).
    pub tls: Option<(SocketAddr, callgate_sip_net::TlsSettings)>,
}

impl PhoneListeners {
    /// UDP only.
    pub fn udp(bind: SocketAddr) -> PhoneListeners {
        PhoneListeners {
            udp: bind,
            tcp: None,
            tls: None,
        }
    }
}

/// [`start_agent_sip`] on every listener of `listeners`: desk phones that register over
/// TCP or TLS are called back over that transport, on their own connection while it is
/// open.
pub async fn start_agent_sip_on(
    settings: &crate::sip::config::SipSettings,
    listeners: PhoneListeners,
    digest_algorithms: Vec<String>,
) -> Result<UdpAgent, crate::sip::udp::DriverError> {
    let bind = listeners.udp;
    let (tls, tls_settings) = match listeners.tls {
        Some((addr, settings)) => (vec![addr], Some(settings)),
        None => (Vec::new(), None),
    };
    let endpoint = callgate_sip_net::EndpointConfig {
        udp: vec![bind],
        tcp: listeners.tcp.into_iter().collect(),
        tls,
        tls_settings,
        streams: settings.endpoint.streams,
        ..callgate_sip_net::EndpointConfig::default()
    };
    let ua = UdpAgent::start_on(
        endpoint,
        callgate_sip::agent::AgentConfig {
            local: bind,
            user: settings.user.clone(),
            timers: settings.timers,
            credentials: None,
            seed: u64::from(std::process::id()),
        },
    )
    .await?;
    ua.set_registrar(callgate_sip::registrar::Registrar::new(
        callgate_sip::registrar::RegistrarConfig {
            algorithms: digest_algorithms,
            ..callgate_sip::registrar::RegistrarConfig::default()
        },
        settings.phones.clone(),
    ))?;
    ua.set_inbound_policy(settings.inbound.clone())?;
    Ok(ua)
}

/// The recorder a bridged outbound call may carry (customer left, agent right).
pub type BridgeRecorder = CallRecorder<SqliteSegmentStore>;

/// A running bridge between an outbound customer and an agent's nailed-up leg.
#[derive(Debug)]
pub struct OutboundBridge {
    /// `Hangup` ends the bridge (the customer hung up, or the call must end).
    pub commands: mpsc::Sender<BridgeCommand>,
    /// The bridge's report when it ended (the customer's leg quality, recording segments).
    pub report: oneshot::Receiver<Result<BridgeReport, MediaError>>,
}

/// Why an outbound call could not be bridged; the customer's leg comes back unused (it is
/// lost only when the lines stopped while holding it).
#[derive(Debug)]
pub struct NotBridged {
    /// The customer's leg, still open.
    pub customer: Option<RtpLeg>,
    /// The recorder, still unused.
    pub recorder: Option<BridgeRecorder>,
    /// Why.
    pub reason: String,
}

/// A running frame relay between a robot call's customer audio and an agent's nailed-up leg.
#[derive(Debug)]
pub struct AudioBridge {
    /// `Hangup` ends the relay (the customer hung up, or the call must end).
    pub commands: mpsc::Sender<BridgeCommand>,
    /// The agent leg's report when the relay ended.
    pub report: oneshot::Receiver<Result<LegReport, MediaError>>,
}

enum LinesCommand {
    /// From now on, refuse new inbound calls while this says why.
    HoldNewCalls(watch::Receiver<Option<String>>),
    /// From now on, record inbound calls bridged to agents.
    RecordCalls(Box<(crate::recording::ValidRecording, SqliteSegmentStore)>),
    RelayAudio {
        call: CallId,
        agent: AgentId,
        audio: AgentAudio,
        reply: oneshot::Sender<Result<AudioBridge, String>>,
    },
    BridgeOutbound {
        call: CallId,
        agent: AgentId,
        customer: Box<RtpLeg>,
        recorder: Option<BridgeRecorder>,
        consent: Option<std::sync::Arc<Prompt>>,
        reply: oneshot::Sender<Result<OutboundBridge, Box<NotBridged>>>,
    },
    BridgeEnded {
        call: CallId,
        agent: AgentId,
    },
}

/// A handle on the running lines, for the dialer's placement of answered outbound calls.
#[derive(Debug, Clone)]
pub struct LinesHandle {
    commands: mpsc::UnboundedSender<LinesCommand>,
}

impl std::fmt::Debug for LinesCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinesCommand::BridgeOutbound { call, agent, .. } => {
                write!(f, "BridgeOutbound({call}, {agent})")
            }
            LinesCommand::RelayAudio { call, agent, .. } => {
                write!(f, "RelayAudio({call}, {agent})")
            }
            LinesCommand::BridgeEnded { call, agent } => write!(f, "BridgeEnded({call}, {agent})"),
            LinesCommand::HoldNewCalls(held) => write!(f, "HoldNewCalls({:?})", *held.borrow()),
            LinesCommand::RecordCalls(_) => f.write_str("RecordCalls"),
        }
    }
}

impl LinesHandle {
    /// A handle and the receiver [`run_agent_lines`] takes.
    pub fn channel() -> (LinesHandle, LinesCommands) {
        let (tx, rx) = mpsc::unbounded_channel();
        (LinesHandle { commands: tx }, LinesCommands(rx))
    }

    /// Bridges an answered outbound call to `agent` (whom the desk reserved for it): the
    /// agent hears the connect beep, then the legs are bridged. The caller tells the desk
    /// `call_bridged` / `call_ended`. The customer's leg comes back when the agent's line has
    /// no media (or the lines stopped).
    pub async fn bridge_outbound(
        &self,
        call: CallId,
        agent: AgentId,
        customer: RtpLeg,
        recorder: Option<BridgeRecorder>,
        consent: Option<std::sync::Arc<Prompt>>,
    ) -> Result<OutboundBridge, Box<NotBridged>> {
        let (reply, rx) = oneshot::channel();
        let cmd = LinesCommand::BridgeOutbound {
            call,
            agent,
            customer: Box::new(customer),
            recorder,
            consent,
            reply,
        };
        if let Err(mpsc::error::SendError(cmd)) = self.commands.send(cmd) {
            let LinesCommand::BridgeOutbound {
                customer, recorder, ..
            } = cmd
            else {
                unreachable!("sent a bridge command")
            };
            return Err(Box::new(NotBridged {
                customer: Some(*customer),
                recorder,
                reason: "the agents' lines have stopped".into(),
            }));
        }
        rx.await.unwrap_or_else(|_| {
            Err(Box::new(NotBridged {
                customer: None,
                recorder: None,
                reason: "the agents' lines stopped".into(),
            }))
        })
    }
}

impl LinesHandle {
    /// While `held` says why (e.g. the recordings disk is nearly full), new inbound calls
    /// for agent groups are refused with 503 Service Unavailable; calls already answered
    /// carry on.
    pub fn hold_new_calls(&self, held: watch::Receiver<Option<String>>) {
        let _ = self.commands.send(LinesCommand::HoldNewCalls(held));
    }

    /// From now on, inbound calls bridged to agents are recorded with `recording` into
    /// `store` (caller left, agent right), after the recording-consent announcement when one
    /// is configured; the call record counts the segments.
    pub fn record_calls(
        &self,
        recording: crate::recording::ValidRecording,
        store: SqliteSegmentStore,
    ) {
        let _ = self
            .commands
            .send(LinesCommand::RecordCalls(Box::new((recording, store))));
    }

    /// Relays a robot call's customer `audio` to `agent` (whom the desk reserved for it):
    /// the agent hears the connect beep, then the customer's frames go to the agent's
    /// nailed-up leg and the agent's to the customer. The caller tells the desk
    /// `call_bridged` / `call_ended`. Refused (with the reason) when the agent's line has no
    /// media or the lines stopped; the audio channels are then dropped.
    pub async fn bridge_audio(
        &self,
        call: CallId,
        agent: AgentId,
        audio: AgentAudio,
    ) -> Result<AudioBridge, String> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(LinesCommand::RelayAudio {
                call,
                agent,
                audio,
                reply,
            })
            .map_err(|_| "the agents' lines have stopped".to_string())?;
        rx.await
            .unwrap_or_else(|_| Err("the agents' lines stopped".into()))
    }
}

/// The receiving end of a [`LinesHandle`].
#[derive(Debug)]
pub struct LinesCommands(mpsc::UnboundedReceiver<LinesCommand>);

/// Who a SIP leg belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LegRole {
    Phone(AgentId),
    Caller(CallId),
}

/// An agent's nailed-up leg.
struct PhoneLine {
    leg: LegId,
    offer: SessionDescription,
    local: SocketAddr,
    /// Bound while ringing; turned into `media` at the answer.
    sockets: Option<(UdpSocket, UdpSocket)>,
    audio: Option<NegotiatedAudio>,
    /// The idle media leg (taken while a bridge runs).
    media: Option<RtpLeg>,
    /// The caller it is bridged to.
    bridged_to: Option<CallId>,
}

/// What a caller's media is doing.
enum CallerMedia {
    /// Answered, nobody playing to it yet.
    Idle(Box<RtpLeg>),
    /// Hold music; the task gives the leg back when `stop` fires.
    Holding {
        positions: mpsc::UnboundedSender<usize>,
        stop: oneshot::Sender<()>,
        task: JoinHandle<RtpLeg>,
    },
    /// Bridged to an agent; the task gives the caller leg's quality and the recording
    /// segments sealed.
    Bridged {
        agent: AgentId,
        commands: mpsc::Sender<BridgeCommand>,
        task: JoinHandle<(Option<CallQuality>, u32)>,
    },
    /// With a robot script or voicemail after overflow; `end_now` tells it the caller left.
    Overflow {
        end_now: watch::Sender<bool>,
        task: JoinHandle<OverflowReport>,
    },
    /// Between states (only while being changed).
    Moving,
}

/// Takes a caller's media leg off hold (or idle) for a bridge or an overflow; `None` (and
/// the line left as it was, or `Moving` when the hold task failed) when it has none to give.
async fn take_caller_media(line: &mut CallerLine, call: CallId) -> Option<RtpLeg> {
    match std::mem::replace(&mut line.media, CallerMedia::Moving) {
        CallerMedia::Idle(rtp) => Some(*rtp),
        CallerMedia::Holding { stop, task, .. } => {
            let _ = stop.send(());
            match task.await {
                Ok(rtp) => Some(rtp),
                Err(e) => {
                    tracing::error!(%call, error = %e, "hold music task failed");
                    None
                }
            }
        }
        other => {
            line.media = other;
            None
        }
    }
}

struct CallerLine {
    leg: LegId,
    media: CallerMedia,
    /// What the call record needs.
    facts: InboundFacts,
    /// A second handle on each of the caller's RTP/RTCP sockets: the ports stay bound until
    /// the call record is committed (the media tasks close theirs earlier).
    _ports: Vec<std::net::UdpSocket>,
    /// The caller's number (masked) for the technician's list of calls to listen to.
    _named: Option<crate::call_tap::TapRegistration>,
}

/// The running lines.
struct Lines {
    ua: UdpAgent,
    desk: AgentDeskService,
    settings: LineSettings,
    roles: HashMap<LegId, LegRole>,
    phones: HashMap<AgentId, PhoneLine>,
    callers: HashMap<CallId, CallerLine>,
    others: Option<mpsc::UnboundedSender<DeskOutput>>,
    session_id: u64,
    /// Outbound calls bridged to agents: the bridge's commands, by call.
    outbound: HashMap<CallId, mpsc::Sender<BridgeCommand>>,
    /// For bridge tasks to report their end.
    own: mpsc::UnboundedSender<LinesCommand>,
    /// Overflowed calls whose robot script or voicemail is done.
    overflow_done: mpsc::UnboundedSender<CallId>,
    /// Why new inbound calls are refused, when that is watched.
    new_calls_held: Option<watch::Receiver<Option<String>>>,
    /// How inbound calls bridged to agents are recorded, when they are.
    recording: Option<(crate::recording::ValidRecording, SqliteSegmentStore)>,
}

/// Runs the lines until `shutdown` turns true or the user agent stops. `desk_outputs` is
/// the receiver [`AgentDeskService::start`] returned; outputs for calls not held here go to
/// `others`; `commands` come from the [`LinesHandle`] made with them.
pub async fn run_agent_lines(
    ua: UdpAgent,
    desk: AgentDeskService,
    mut desk_outputs: mpsc::UnboundedReceiver<DeskOutput>,
    others: Option<mpsc::UnboundedSender<DeskOutput>>,
    (handle, LinesCommands(mut commands)): (LinesHandle, LinesCommands),
    settings: LineSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let own = handle.commands.clone();
    drop(handle);
    // The phones bound before a restart can be called at once (see `phone_bindings`).
    let sip = ua.control();
    super::phone_bindings::restore(desk.pool(), &sip).await;
    tokio::spawn(super::phone_bindings::keep(
        desk.pool().clone(),
        sip,
        shutdown.clone(),
    ));
    let (overflow_done, mut overflow_finished) = mpsc::unbounded_channel();
    let mut lines = Lines {
        outbound: HashMap::new(),
        own,
        ua,
        desk,
        settings,
        roles: HashMap::new(),
        phones: HashMap::new(),
        callers: HashMap::new(),
        others,
        session_id: u64::from(std::process::id()) << 16,
        overflow_done,
        new_calls_held: None,
        recording: None,
    };
    loop {
        tokio::select! {
            event = lines.ua.next_event() => match event {
                Some(e) => lines.on_sip(e).await,
                None => {
                    tracing::error!("the agents' SIP user agent stopped");
                    return;
                }
            },
            output = desk_outputs.recv() => match output {
                Some(o) => lines.on_desk(o).await,
                None => return,
            },
            Some(command) = commands.recv() => lines.on_command(command).await,
            Some(call) = overflow_finished.recv() => {
                if lines.callers.contains_key(&call) {
                    lines.end_caller(call, true).await;
                }
            }
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

impl Lines {
    fn local_media(&mut self, rtp_port: u16) -> LocalMedia {
        self.session_id += 1;
        LocalMedia {
            address: self.settings.media_ip,
            rtp_port,
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            telephone_event: true,
            ptime_ms: 20,
            direction: Direction::SendRecv,
            session_id: self.session_id,
            session_version: 1,
            srtp: None,
        }
    }

    async fn on_desk(&mut self, output: DeskOutput) {
        match output {
            DeskOutput::CallPhone { agent } => self.call_phone(agent).await,
            DeskOutput::ReleasePhone { agent } => {
                if let Some(line) = self.phones.remove(&agent) {
                    self.roles.remove(&line.leg);
                    let _ = self.ua.hang_up(line.leg);
                }
            }
            DeskOutput::Connect { call, agent } if self.holds_media(call) => {
                self.connect(call, agent).await;
            }
            DeskOutput::QueuePosition { call, position } if self.callers.contains_key(&call) => {
                if let Some(CallerLine {
                    media: CallerMedia::Holding { positions, .. },
                    ..
                }) = self.callers.get(&call)
                {
                    let _ = positions.send(position);
                }
            }
            DeskOutput::Overflow { call, group } if self.callers.contains_key(&call) => {
                match self.settings.overflow.clone() {
                    OverflowRoute::HangUp => {
                        tracing::warn!(%call, %group, "queued call overflowed; no voicemail or robot route yet, ending it");
                        self.end_caller(call, true).await;
                    }
                    OverflowRoute::Robot(target) => self.overflow_to(call, group, target).await,
                }
            }
            DeskOutput::HangUp { call, agent } if self.holds_media(call) => {
                tracing::info!(%call, %agent, "the agent hung up the inbound call");
                self.end_caller(call, true).await;
            }
            DeskOutput::AgentLost { call, agent } if self.holds_media(call) => {
                tracing::warn!(%call, %agent, "the agent of a call was lost; ending the call");
                self.end_caller(call, true).await;
            }
            other => {
                if let Some(tx) = &self.others {
                    let _ = tx.send(other);
                }
            }
        }
    }

    /// Whether the lines hold `call`'s media themselves: a caller whose media a robot script
    /// has (overflow) is the script's — the desk's decisions about its `transfer` go to the
    /// transfer hook (`others`).
    fn holds_media(&self, call: CallId) -> bool {
        self.callers
            .get(&call)
            .is_some_and(|l| !matches!(l.media, CallerMedia::Overflow { .. }))
    }

    async fn call_phone(&mut self, agent: AgentId) {
        let fail = |reason: String| (agent, reason);
        let attempt: Result<(), (AgentId, String)> = async {
            let username = roster::sip_username(self.desk.pool(), agent)
                .await
                .map_err(|e| fail(format!("store: {e}")))?
                .ok_or_else(|| fail("not on the roster".into()))?;
            let bindings = self
                .ua
                .bindings(&username)
                .await
                .map_err(|e| fail(format!("SIP: {e}")))?;
            let Some((contact, source)) = bindings.into_iter().next() else {
                return Err(fail(format!("phone `{username}` is not registered")));
            };
            let to = Uri::parse(&contact)
                .map_err(|e| fail(format!("phone contact `{contact}`: {e}")))?;
            let sockets = self
                .settings
                .rtp_ports
                .bind_pair(self.settings.media_ip)
                .await
                .map_err(|e| fail(e.to_string()))?;
            let local = sockets
                .0
                .local_addr()
                .map_err(|e| fail(format!("RTP socket: {e}")))?;
            let mut media = self.local_media(local.port());
            if self.settings.phone_srtp {
                media.srtp = Some(crate::media::fresh_srtp_key().map_err(|e| fail(e.to_string()))?);
            }
            let offer = create_offer(&media);
            let spec = CallSpec {
                ring_timeout: Some(self.settings.phone_ring_timeout),
                ..CallSpec::new(to, source, offer.to_string().into_bytes())
            };
            let leg = self
                .ua
                .place_call(spec)
                .await
                .map_err(|e| fail(format!("SIP: {e}")))?;
            tracing::info!(%agent, phone = %username, "calling the agent's phone for the nailed-up leg");
            self.roles.insert(leg, LegRole::Phone(agent));
            self.phones.insert(
                agent,
                PhoneLine {
                    leg,
                    offer,
                    local,
                    sockets: Some(sockets),
                    audio: None,
                    media: None,
                    bridged_to: None,
                },
            );
            Ok(())
        }
        .await;
        if let Err((agent, reason)) = attempt {
            tracing::warn!(%agent, %reason, "agent line could not be set up");
            self.desk
                .phone_leg_down(agent, &format!("agent line: {reason}"));
        }
    }

    async fn on_sip(&mut self, event: AgentEvent) {
        match event {
            AgentEvent::Incoming {
                leg,
                from,
                number,
                trunk,
                target,
                body,
            } => {
                self.incoming(leg, &from, &number, trunk, target, &body)
                    .await
            }
            AgentEvent::Answered { leg, body } => {
                if let Some(LegRole::Phone(agent)) = self.roles.get(&leg).copied() {
                    self.phone_answered(agent, &body);
                }
            }
            AgentEvent::Failed {
                leg,
                status,
                reason,
            } => {
                if let Some(LegRole::Phone(agent)) = self.roles.remove(&leg) {
                    self.phones.remove(&agent);
                    self.desk.phone_leg_down(
                        agent,
                        &format!("agent line: the phone did not answer ({status} {reason})"),
                    );
                }
            }
            AgentEvent::Ended { leg, by_peer } => match self.roles.remove(&leg) {
                Some(LegRole::Phone(agent)) => {
                    let line = self.phones.remove(&agent);
                    if let Some(call) = line.and_then(|l| l.bridged_to) {
                        if let Some(bridge) = self.outbound.get(&call) {
                            let _ = bridge.try_send(BridgeCommand::Hangup);
                        }
                        if let Some(CallerLine {
                            media: CallerMedia::Bridged { commands, .. },
                            ..
                        }) = self.callers.get(&call)
                        {
                            let _ = commands.try_send(BridgeCommand::Hangup);
                        }
                    }
                    let why = if by_peer {
                        "agent line: the phone hung up"
                    } else {
                        "agent line: ended by the appliance"
                    };
                    self.desk.phone_leg_down(agent, why);
                }
                Some(LegRole::Caller(call)) => self.end_caller(call, false).await,
                None => {}
            },
            _ => {}
        }
    }

    fn phone_answered(&mut self, agent: AgentId, body: &[u8]) {
        let Some(line) = self.phones.get_mut(&agent) else {
            return;
        };
        let audio = std::str::from_utf8(body)
            .map_err(|e| e.to_string())
            .and_then(|t| SessionDescription::parse(t).map_err(|e| e.to_string()))
            .and_then(|answer| accept_answer(&line.offer, &answer).map_err(|e| e.to_string()));
        let media = audio.and_then(|audio| {
            let sockets = line.sockets.take().ok_or("sockets already used")?;
            let leg = RtpLeg::new(sockets, &audio).map_err(|e| e.to_string())?;
            line.audio = Some(audio);
            Ok(leg)
        });
        match media {
            Ok(leg) => {
                line.media = Some(leg);
                tracing::info!(%agent, "agent line up");
                if let Err(e) = self.desk.phone_leg_up(agent) {
                    tracing::warn!(%agent, error = %e, "agent line up for an agent no longer logging in");
                }
            }
            Err(reason) => {
                let leg = line.leg;
                self.phones.remove(&agent);
                self.roles.remove(&leg);
                let _ = self.ua.hang_up(leg);
                self.desk.phone_leg_down(
                    agent,
                    &format!("agent line: the phone's answer is unusable ({reason})"),
                );
            }
        }
    }

    async fn incoming(
        &mut self,
        leg: LegId,
        from: &str,
        number: &str,
        trunk: Option<String>,
        target: RouteTarget,
        body: &[u8],
    ) {
        let facts = InboundFacts {
            call: CallId::new_v7(),
            started_at: UnixMillis::now(),
            answered_at: None,
            remote: caller_number(from),
            trunk: trunk.and_then(|name| TrunkId::new(name).ok()),
        };
        let held = self
            .new_calls_held
            .as_ref()
            .and_then(|h| h.borrow().clone());
        if let Some(why) = held {
            tracing::warn!(%number, reason = %why, "inbound call refused: no new calls start");
            self.reject(leg, &facts, 503, "Service Unavailable").await;
            return;
        }
        let RouteTarget::AgentGroup(group_name) = target else {
            tracing::info!(%number, ?target, "inbound call not for an agent group: refused here");
            self.reject(leg, &facts, 404, "Not Found").await;
            return;
        };
        let Some((group, name)) = self.desk.group_by_name(&group_name) else {
            tracing::warn!(%number, group = %group_name, "inbound route names an agent group not on the roster");
            self.reject(leg, &facts, 480, "Temporarily Unavailable")
                .await;
            return;
        };
        let answered = async {
            let offer = SessionDescription::parse(
                std::str::from_utf8(body).map_err(|_| (400, "offer is not UTF-8".to_string()))?,
            )
            .map_err(|e| (e.status_code(), e.to_string()))?;
            let sockets = self
                .settings
                .rtp_ports
                .bind_pair(self.settings.media_ip)
                .await
                .map_err(|e| (503, e.to_string()))?;
            let port = sockets
                .0
                .local_addr()
                .map_err(|e| (503, e.to_string()))?
                .port();
            // A caller offering SRTP (RTP/SAVP with SDES keys) gets it, under a fresh key of
            // ours; a plain offer is answered plain (the key is then unused).
            let mut local = self.local_media(port);
            local.srtp = Some(crate::media::fresh_srtp_key().map_err(|e| (503, e.to_string()))?);
            let oa = answer_offer(&offer, &local).map_err(|e| (e.status_code(), e.to_string()))?;
            let ports = [&sockets.0, &sockets.1]
                .into_iter()
                .map(crate::dialer::driver::dup)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| (503, e.to_string()))?;
            let rtp = RtpLeg::new(sockets, &oa.audio).map_err(|e| (503, e.to_string()))?;
            Ok::<_, (u16, String)>((oa.answer, rtp, ports))
        }
        .await;
        let (answer, rtp, ports) = match answered {
            Ok(x) => x,
            Err((status, reason)) => {
                tracing::warn!(%number, status, %reason, "inbound call refused");
                self.reject(leg, &facts, status, "Not Acceptable Here")
                    .await;
                return;
            }
        };
        if let Err(e) = self.ua.answer(leg, answer.to_string().into_bytes()) {
            tracing::error!(error = %e, "answering an inbound call failed");
            let record = inbound_record::record_of(&facts, &InboundEnd::Failed);
            inbound_record::commit(&self.desk, record).await;
            return;
        }
        let facts = InboundFacts {
            answered_at: Some(UnixMillis::now()),
            ..facts
        };
        let call = facts.call;
        let caller = facts.remote.clone();
        let pop = ScreenPop::new(
            &name,
            caller.as_ref(),
            &[("called number".to_string(), number.to_string())],
            "",
        );
        self.roles.insert(leg, LegRole::Caller(call));
        self.callers.insert(
            call,
            CallerLine {
                leg,
                media: CallerMedia::Idle(Box::new(rtp)),
                facts,
                _ports: ports,
                _named: caller
                    .as_ref()
                    .map(|n| crate::call_tap::live().name(call, n.masked())),
            },
        );
        tracing::info!(%call, %number, group = %name, "inbound call for an agent group");
        match self.desk.enqueue_inbound(InboundCall { call, group, pop }) {
            Ok(OfferDecision::Connect { agent }) => self.connect(call, agent).await,
            Ok(OfferDecision::Queued { position }) => self.hold(call, position),
            Ok(other) => tracing::error!(%call, ?other, "unexpected decision for an inbound call"),
            Err(e) => {
                tracing::error!(%call, error = %e, "the desk refused an inbound call");
                self.end_caller(call, true).await;
            }
        }
    }

    async fn on_command(&mut self, command: LinesCommand) {
        match command {
            LinesCommand::HoldNewCalls(held) => self.new_calls_held = Some(held),
            LinesCommand::RecordCalls(recording) => self.recording = Some(*recording),
            LinesCommand::BridgeOutbound {
                call,
                agent,
                customer,
                recorder,
                consent,
                reply,
            } => {
                let result = self.bridge_outbound(call, agent, *customer, recorder, consent);
                if let Err(e) = &result {
                    let reason = &e.reason;
                    tracing::warn!(%call, %agent, %reason, "outbound call not bridged");
                }
                // The placement is gone (the dialer stopped): end the bridge at once.
                if let Err(Ok(bridge)) = reply.send(result) {
                    let _ = bridge.commands.try_send(BridgeCommand::Hangup);
                }
            }
            LinesCommand::RelayAudio {
                call,
                agent,
                audio,
                reply,
            } => {
                let result = self.bridge_audio(call, agent, audio);
                if let Err(reason) = &result {
                    tracing::warn!(%call, %agent, %reason, "transferred call not bridged");
                }
                if let Err(Ok(bridge)) = reply.send(result) {
                    let _ = bridge.commands.try_send(BridgeCommand::Hangup);
                }
            }
            LinesCommand::BridgeEnded { call, agent } => {
                self.outbound.remove(&call);
                let ours = self
                    .phones
                    .get(&agent)
                    .is_some_and(|p| p.bridged_to == Some(call));
                if ours {
                    self.reopen_agent_media(agent).await;
                }
            }
        }
    }

    /// Bridges an answered outbound call (the dialer's customer leg) to the agent's
    /// nailed-up leg, announced to the agent by a beep.
    fn bridge_outbound(
        &mut self,
        call: CallId,
        agent: AgentId,
        customer: RtpLeg,
        recorder: Option<BridgeRecorder>,
        consent: Option<std::sync::Arc<Prompt>>,
    ) -> Result<OutboundBridge, Box<NotBridged>> {
        let Some(phone) = self.phones.get_mut(&agent) else {
            return Err(Box::new(NotBridged {
                customer: Some(customer),
                recorder,
                reason: format!("agent {agent} has no line"),
            }));
        };
        let Some(agent_leg) = phone.media.take() else {
            return Err(Box::new(NotBridged {
                customer: Some(customer),
                recorder,
                reason: format!("agent {agent}'s line has no media (already bridged?)"),
            }));
        };
        phone.bridged_to = Some(call);
        let (commands, rx) = mpsc::channel(4);
        // The beep goes to the agent over the customer's first words: the bridge starts at once.
        let _ = commands.try_send(BridgeCommand::PlayToAgent(Prompt::connect_beep()));
        let (report_tx, report) = oneshot::channel();
        let ended = self.own.clone();
        let tap = tap_point(call, "outbound call bridged to an agent", &commands);
        tokio::spawn(async move {
            // The customer hears the consent announcement first (the agent is held back
            // meanwhile); recording starts when it has ended.
            let consent = consent.map(|p| (*p).clone());
            let result = run_bridge(customer, agent_leg, recorder, consent, rx).await;
            drop(tap);
            match &result {
                Ok(r) => tracing::debug!(
                    %call,
                    to_customer = r.to_customer.relayed,
                    to_agent = r.to_agent.relayed,
                    "outbound bridge ended"
                ),
                Err(e) => tracing::warn!(%call, error = %e, "outbound bridge failed"),
            }
            let _ = ended.send(LinesCommand::BridgeEnded { call, agent });
            let _ = report_tx.send(result);
        });
        self.outbound.insert(call, commands.clone());
        Ok(OutboundBridge { commands, report })
    }

    /// Relays a transferred robot call's audio to the agent's nailed-up leg, announced to
    /// the agent by a beep.
    fn bridge_audio(
        &mut self,
        call: CallId,
        agent: AgentId,
        audio: AgentAudio,
    ) -> Result<AudioBridge, String> {
        let phone = self
            .phones
            .get_mut(&agent)
            .ok_or_else(|| format!("agent {agent} has no line"))?;
        let agent_leg = phone
            .media
            .take()
            .ok_or_else(|| format!("agent {agent}'s line has no media (already bridged?)"))?;
        phone.bridged_to = Some(call);
        let (commands, rx) = mpsc::channel(4);
        // The beep goes to the agent over the customer's first words: the relay starts at once.
        let _ = commands.try_send(BridgeCommand::PlayToAgent(Prompt::connect_beep()));
        let (report_tx, report) = oneshot::channel();
        let ended = self.own.clone();
        let tap = tap_point(call, "robot call transferred to an agent", &commands);
        tokio::spawn(async move {
            let result = relay_audio(agent_leg, audio, rx).await;
            drop(tap);
            match &result {
                Ok(r) => tracing::debug!(
                    %call,
                    to_agent = r.packets_sent,
                    from_agent = r.receive.received,
                    "transferred call's relay ended"
                ),
                Err(e) => tracing::warn!(%call, error = %e, "transferred call's relay failed"),
            }
            let _ = ended.send(LinesCommand::BridgeEnded { call, agent });
            let _ = report_tx.send(result);
        });
        self.outbound.insert(call, commands.clone());
        Ok(AudioBridge { commands, report })
    }

    /// Starts hold music for a queued caller, announcing `position` first.
    fn hold(&mut self, call: CallId, position: usize) {
        let Some(line) = self.callers.get_mut(&call) else {
            return;
        };
        let CallerMedia::Idle(rtp) = std::mem::replace(&mut line.media, CallerMedia::Moving) else {
            return;
        };
        let (positions, rx) = mpsc::unbounded_channel();
        let _ = positions.send(position);
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(play_hold(call, *rtp, rx, stop_rx));
        line.media = CallerMedia::Holding {
            positions,
            stop,
            task,
        };
    }

    /// Bridges a caller to the agent's nailed-up leg, announced to the agent by a beep.
    async fn connect(&mut self, call: CallId, agent: AgentId) {
        let Some(line) = self.callers.get_mut(&call) else {
            return;
        };
        let Some(customer) = take_caller_media(line, call).await else {
            return;
        };
        let agent_media = self
            .phones
            .get_mut(&agent)
            .and_then(|p| p.media.take().map(|m| (m, p)));
        let Some((agent_leg, phone)) = agent_media else {
            tracing::warn!(%call, %agent, "the agent's line has no media; the call waits for another agent");
            line.media = CallerMedia::Idle(Box::new(customer));
            self.desk
                .phone_leg_down(agent, "agent line: no media on the nailed-up leg");
            return;
        };
        phone.bridged_to = Some(call);
        let (commands, rx) = mpsc::channel(4);
        // The beep goes to the agent over the caller's first words: the bridge starts at once.
        let _ = commands.try_send(BridgeCommand::PlayToAgent(Prompt::connect_beep()));
        let quality_log = crate::media::LegQualityLog::new(self.desk.pool().clone(), call);
        let tap = tap_point(call, "inbound call bridged to an agent", &commands);
        let recorder = self.recording.as_ref().and_then(|(settings, store)| {
            crate::dialer::placement::start_recorder(call, settings, store.clone())
        });
        // A recorded caller hears the consent announcement first (the agent is held back).
        let consent = recorder
            .as_ref()
            .and(self.recording.as_ref())
            .and_then(|(settings, _)| settings.consent.as_ref().map(|p| (**p).clone()));
        let task = tokio::spawn(async move {
            let result = run_bridge(customer, agent_leg, recorder, consent, rx).await;
            drop(tap);
            match result {
                Ok(report) => {
                    tracing::info!(
                        to_customer = report.to_customer.relayed,
                        to_agent = report.to_agent.relayed,
                        "bridge ended"
                    );
                    // The caller's leg and the agent's, as the dialer's bridged calls store them.
                    quality_log
                        .record(0, crate::media::LegRole::Customer, &report.customer)
                        .await;
                    for (i, leg) in report.agent_legs.iter().enumerate() {
                        quality_log
                            .record(i as u32 + 1, crate::media::LegRole::Agent, leg)
                            .await;
                    }
                    let segments = match &report.recording {
                        Some(Ok(all)) => all.len() as u32,
                        Some(Err(e)) => {
                            tracing::error!(%call, error = %e, "recording of the inbound call failed");
                            0
                        }
                        None => 0,
                    };
                    (
                        Some(crate::dialer::placement::quality_of(&report.customer)),
                        segments,
                    )
                }
                Err(e) => {
                    tracing::warn!(error = %e, "bridge failed");
                    (None, 0)
                }
            }
        });
        line.media = CallerMedia::Bridged {
            agent,
            commands,
            task,
        };
        self.desk.call_bridged(call);
    }

    /// Hands an overflowed caller's media to a robot script or voicemail; the caller is hung
    /// up when it is done (`overflow_done`).
    async fn overflow_to(
        &mut self,
        call: CallId,
        group: callgate_common::ids::AgentGroupId,
        target: crate::robot_call::OverflowTarget,
    ) {
        let Some(line) = self.callers.get_mut(&call) else {
            return;
        };
        let Some(customer) = take_caller_media(line, call).await else {
            return;
        };
        let (end_now, end_rx) = watch::channel(false);
        let done = self.overflow_done.clone();
        let caller = line.facts.remote.clone();
        let transfer = self.desk.transfer();
        tracing::info!(%call, %group, "queued call overflowed to a robot script or voicemail");
        let task = tokio::spawn(async move {
            let overflow = crate::robot_call::OverflowCall {
                call,
                group,
                caller,
                customer,
                frame_samples: 160,
                end_now: end_rx,
                transfer,
            };
            let report = target.0.take_call(overflow).await;
            let _ = done.send(call);
            report
        });
        line.media = CallerMedia::Overflow { end_now, task };
    }

    /// Ends a caller's call: its media stops (a bridged agent's line gets its media back on
    /// the same port), the desk hears the call ended, the call record is committed
    /// (`inbound_record`), and then — when `hang_up` (the caller is still on the line) —
    /// the caller's SIP leg is hung up and its RTP ports are let go.
    async fn end_caller(&mut self, call: CallId, hang_up: bool) {
        let Some(line) = self.callers.remove(&call) else {
            return;
        };
        let end = match line.media {
            CallerMedia::Holding { stop, task, .. } => {
                let _ = stop.send(());
                let _ = task.await;
                InboundEnd::Abandoned
            }
            CallerMedia::Bridged {
                agent,
                commands,
                task,
            } => {
                let _ = commands.send(BridgeCommand::Hangup).await;
                let (quality, recording_segments) = task.await.unwrap_or((None, 0));
                self.reopen_agent_media(agent).await;
                InboundEnd::Talked {
                    agent,
                    quality,
                    recording_segments,
                }
            }
            CallerMedia::Overflow { end_now, task } => {
                let _ = end_now.send(true);
                match task.await {
                    Ok(report) => InboundEnd::Overflowed {
                        disposition: report
                            .agent
                            .as_ref()
                            .and_then(|a| a.1.clone())
                            .unwrap_or(report.disposition),
                        agent: report.agent.map(|a| a.0),
                        recording_segments: report.recording_segments,
                    },
                    Err(e) => {
                        tracing::error!(%call, error = %e, "the overflow task failed");
                        InboundEnd::Failed
                    }
                }
            }
            CallerMedia::Idle(_) | CallerMedia::Moving => InboundEnd::Abandoned,
        };
        self.desk.call_ended(call);
        let record = inbound_record::record_of(&line.facts, &end);
        inbound_record::commit(&self.desk, record).await;
        if hang_up {
            self.roles.remove(&line.leg);
            let _ = self.ua.hang_up(line.leg);
        }
    }

    /// Refuses an inbound call with `status`; its record says so.
    async fn reject(&mut self, leg: LegId, facts: &InboundFacts, status: u16, reason: &str) {
        let _ = self.ua.reject(leg, status, reason);
        let record = inbound_record::record_of(facts, &InboundEnd::Rejected(status));
        inbound_record::commit(&self.desk, record).await;
    }

    /// After a bridge consumed the agent's media leg, binds its port again.
    async fn reopen_agent_media(&mut self, agent: AgentId) {
        let Some(phone) = self.phones.get_mut(&agent) else {
            return;
        };
        phone.bridged_to = None;
        let Some(audio) = phone.audio.clone() else {
            return;
        };
        let rtcp = SocketAddr::new(phone.local.ip(), phone.local.port() + 1);
        let reopened = async {
            let sockets = (
                UdpSocket::bind(phone.local).await?,
                UdpSocket::bind(rtcp).await?,
            );
            RtpLeg::new(sockets, &audio).map_err(std::io::Error::other)
        }
        .await;
        match reopened {
            Ok(leg) => phone.media = Some(leg),
            Err(e) => {
                let leg = phone.leg;
                self.phones.remove(&agent);
                self.roles.remove(&leg);
                let _ = self.ua.hang_up(leg);
                self.desk.phone_leg_down(
                    agent,
                    &format!("agent line: its media port could not be reopened ({e})"),
                );
            }
        }
    }
}

/// The caller's number from a From URI (`sip:+442071234567@carrier`), when it is one.
fn caller_number(from: &str) -> Option<PhoneNumber> {
    let rest = from
        .trim()
        .trim_start_matches('<')
        .trim_start_matches("sips:")
        .trim_start_matches("sip:")
        .trim_start_matches("tel:");
    let user = rest.split(['@', ';', '>']).next()?;
    PhoneNumber::parse(user, None).ok()
}

/// Registers a running bridge as a tap point for `call` (the technician's headset listens
/// through a `Listen` command); the registry holds no strong sender, so the bridge still ends
/// when its commands close.
fn tap_point(
    call: CallId,
    what: &str,
    commands: &mpsc::Sender<BridgeCommand>,
) -> crate::call_tap::TapRegistration {
    let commands = commands.downgrade();
    crate::call_tap::live().register(call, what, move |listener| {
        commands
            .upgrade()
            .is_some_and(|c| c.try_send(BridgeCommand::Listen(listener)).is_ok())
    })
}

/// Relays frames between a robot call's customer audio and the agent's leg until `Hangup`,
/// the customer's audio ends or the agent's leg fails; returns the agent leg's report.
async fn relay_audio(
    agent_leg: RtpLeg,
    audio: AgentAudio,
    mut commands: mpsc::Receiver<BridgeCommand>,
) -> Result<LegReport, MediaError> {
    let AgentAudio {
        to_customer,
        mut from_customer,
    } = audio;
    let (to_agent, to_agent_rx) = mpsc::channel::<Vec<i16>>(4);
    let (heard_tx, mut heard) = mpsc::channel::<LegAudio>(50);
    let leg = tokio::spawn(run_audio_leg(agent_leg, to_agent_rx, heard_tx));
    // A prompt played to the agent (the connect beep) is mixed over the customer's frames,
    // one per packet time (alone while the customer is quiet); the agent's frames go to the
    // customer from the first one meanwhile.
    let mut over: Option<callgate_media::prompt::Playback> = None;
    let mut held: std::collections::VecDeque<Vec<i16>> = Default::default();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    // A technician listening: each customer frame with the agent's latest, mixed.
    let (mut listener, mut agent_said) = (None, None::<Vec<i16>>);
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(BridgeCommand::Hangup) | None => break,
                Some(BridgeCommand::ReplaceAgentLeg(_)) => {
                    tracing::warn!("a transferred call's relay cannot replace its agent leg");
                }
                Some(BridgeCommand::PlayToAgent(prompt)) => {
                    over = Some(prompt.play());
                    tick.reset_immediately();
                }
                Some(BridgeCommand::Listen(l)) => listener = Some(l),
            },
            _ = tick.tick(), if over.is_some() => {
                let mut frame = held.pop_front().unwrap_or_else(|| vec![0; 160]);
                if let Some(playing) = over.as_mut() {
                    if let Some(prompt) = playing.next_frame(frame.len()) {
                        callgate_media::tone::mix_into(&mut frame, &prompt);
                    }
                    if playing.finished() {
                        over = None;
                    }
                }
                let _ = to_agent.try_send(frame);
                if over.is_none() {
                    for f in held.drain(..) {
                        let _ = to_agent.try_send(f);
                    }
                }
            }
            said = from_customer.recv() => match said {
                Some(LegAudio::Frame(f)) => {
                    if listener.is_some() {
                        let heard = crate::call_tap::mixed(Some(&f.samples), agent_said.take().as_deref(), f.samples.len());
                        crate::call_tap::offer(&mut listener, heard);
                    }
                    if over.is_some() {
                        // Held for the prompt's mix; the oldest go first if it lags.
                        held.push_back(f.samples);
                        while held.len() > 3 {
                            held.pop_front();
                        }
                    } else {
                        // A full queue drops the frame: the agent's leg plays silence for it.
                        let _ = to_agent.try_send(f.samples);
                    }
                }
                Some(LegAudio::Dtmf(_)) => {}
                None => break,
            },
            got = heard.recv() => match got {
                Some(LegAudio::Frame(f)) => {
                    if listener.is_some() {
                        agent_said = Some(f.samples.clone());
                    }
                    let _ = to_customer.try_send(f.samples);
                }
                Some(LegAudio::Dtmf(_)) => {}
                None => break,
            },
        }
    }
    drop(to_agent);
    match leg.await {
        Ok(report) => report,
        Err(e) => Err(MediaError::Socket {
            port: 0,
            source: std::io::Error::other(format!("agent leg task failed: {e}")),
        }),
    }
}

/// The hold pattern: a soft two-tone phrase and a pause, repeated.
fn hold_music() -> Prompt {
    Prompt::tones(
        &[
            (392.0, 400, 0),
            (523.3, 400, 0),
            (659.3, 600, 0),
            (0.0, 0, 1_600),
        ],
        2_000,
    )
}

/// `n` short beeps (a queue position), then a pause.
fn position_beeps(n: usize) -> Prompt {
    let mut steps = vec![(0.0, 0, 400)];
    steps.extend(std::iter::repeat_n((880.0, 150, 150), n.min(9)));
    steps.push((0.0, 0, 600));
    Prompt::tones(&steps, 6_000)
}

/// What a queued caller's tap point is called in the headset's list of calls.
pub const HOLD_TAP: &str = "queued caller on hold";

/// Plays hold music to a queued caller, with position beeps whenever a position arrives,
/// until `stop`; gives the leg back. While it plays, a technician may listen in
/// (`crate::call_tap`): the caller and what the caller hears, mixed. The caller's packets
/// are only read while someone listens.
async fn play_hold(
    call: CallId,
    mut leg: RtpLeg,
    mut positions: mpsc::UnboundedReceiver<usize>,
    mut stop: oneshot::Receiver<()>,
) -> RtpLeg {
    const FRAME: usize = 160;
    let music = hold_music();
    let mut playing = music.play();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let (listen_tx, mut listen_rx) = mpsc::unbounded_channel();
    let _tap = crate::call_tap::live().register(call, HOLD_TAP, move |l| listen_tx.send(l).is_ok());
    let mut listener: Option<crate::call_tap::CallListener> = None;
    let mut caller =
        callgate_media::jitter::JitterBuffer::new(callgate_media::jitter::JitterConfig {
            frame_samples: FRAME as u32,
            ..Default::default()
        });
    let format = leg.format();
    loop {
        tokio::select! {
            _ = &mut stop => return leg,
            Some(n) = positions.recv() => playing = position_beeps(n).play(),
            Some(l) = listen_rx.recv() => listener = Some(l),
            received = leg.recv(), if listener.is_some() => {
                if let Ok(r) = received {
                    if Some(r.packet.payload_type) != format.telephone_event_pt {
                        caller.push(r.at, &r.packet, format.codec);
                    }
                }
            }
            _ = tick.tick() => {
                let frame = match playing.next_frame(FRAME) {
                    Some(f) => f,
                    None => {
                        playing = music.play();
                        playing.next_frame(FRAME).unwrap_or_else(|| vec![0; FRAME])
                    }
                };
                if listener.is_some() {
                    let theirs = caller.pop(std::time::Instant::now());
                    let heard = crate::call_tap::mixed(
                        theirs.as_ref().map(|f| &f.samples[..]),
                        Some(&frame),
                        FRAME,
                    );
                    crate::call_tap::offer(&mut listener, heard);
                }
                if let Err(e) = leg.send_audio(&frame).await {
                    tracing::warn!(error = %e, "hold music not sent");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caller_number_comes_from_the_from_uri() {
        assert_eq!(
            caller_number("<sip:+442071234567@carrier.example>;tag=1").map(|n| n.e164()),
            Some("+442071234567".to_string())
        );
        assert_eq!(caller_number("sip:anonymous@anonymous.invalid"), None);
    }

    #[test]
    fn position_announcements_beep_once_per_place_in_line() {
        let beeps = |n| {
            let p = position_beeps(n);
            let mut pb = p.play();
            let mut samples = Vec::new();
            while let Some(f) = pb.next_frame(160) {
                samples.extend(f);
            }
            // Count rising edges of the tone envelope, 10 ms windows.
            let loud: Vec<bool> = samples
                .chunks(80)
                .map(|w| w.iter().map(|s| i64::from(*s).abs()).max().unwrap_or(0) > 1_000)
                .collect();
            loud.windows(2).filter(|w| !w[0] && w[1]).count()
        };
        assert_eq!(beeps(1), 1);
        assert_eq!(beeps(3), 3);
    }
}
