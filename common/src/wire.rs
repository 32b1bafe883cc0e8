//! The wire protocol between appliance and coordinator: postcard-encoded envelopes.
//!
//! Every MQTT payload is one [`Envelope`]: protocol version, appliance id, a per-direction
//! sequence number, the sender's clock, and a body — [`Uplink`] on `.../up`, [`Downlink`] on
//! `.../down`. The version is the first field on the wire and is checked before anything
//! else is decoded: a version this build does not know is [`WireError::UnsupportedVersion`],
//! never a guess.
//!
//! Evolving the contract: new message kinds are appended at the **end** of an enum (postcard
//! numbers variants by position); an older peer that receives one gets
//! [`WireError::Malformed`] and logs it. Changing an existing variant's fields bumps
//! [`PROTOCOL_VERSION`].
//!
//! Sequence numbers start at 1 in each direction and never repeat; acks are cumulative
//! (`Ack { up_to: n }` covers every sequence number `<= n`).

use crate::compliance::{CallingWindow, ComplianceProfile, DncEntry};
use crate::ids::{
    AgentGroupId, AgentId, ApplianceId, AttemptId, CallId, CampaignId, ContactId, LeaseId, TrunkId,
};
use crate::phone::PhoneNumber;
use crate::routing::RoutingPolicy;
use crate::time::UnixMillis;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// Payloads larger than this are refused before decoding (MQTT allows far more; nothing we
/// send comes close).
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The payload was empty.
    #[error("empty payload")]
    Empty,
    /// Over [`MAX_PAYLOAD_BYTES`].
    #[error("payload of {0} bytes is over the {MAX_PAYLOAD_BYTES}-byte limit")]
    TooLarge(usize),
    /// The sender speaks a protocol version this build does not know.
    #[error("unsupported protocol version {got} (this build speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion { got: u16 },
    /// The bytes are not a valid envelope of the expected direction.
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// A valid envelope followed by extra bytes.
    #[error("{0} unexpected bytes after the envelope")]
    TrailingBytes(usize),
}

/// One message on the wire. `B` is [`Uplink`] or [`Downlink`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<B> {
    /// Always [`PROTOCOL_VERSION`] when built by this crate.
    pub version: u16,
    /// The appliance the message is from (uplink) or for (downlink).
    pub appliance: ApplianceId,
    /// Per-direction sequence number, from 1. `0` is reserved for messages that are not
    /// stored in an outbox (acks and presence), which are never acknowledged themselves.
    pub seq: u64,
    /// The sender's clock when it built the message; used for the clock-skew check.
    pub sent_at: UnixMillis,
    /// The message.
    pub body: B,
}

/// Appliance → coordinator envelope.
pub type UplinkEnvelope = Envelope<Uplink>;
/// Coordinator → appliance envelope.
pub type DownlinkEnvelope = Envelope<Downlink>;

impl<B: Serialize + DeserializeOwned> Envelope<B> {
    /// A new envelope at the current protocol version.
    pub fn new(appliance: ApplianceId, seq: u64, sent_at: UnixMillis, body: B) -> Self {
        Envelope {
            version: PROTOCOL_VERSION,
            appliance,
            seq,
            sent_at,
            body,
        }
    }

    /// Encodes to postcard bytes.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing owned, finite data to a Vec cannot fail.
        postcard::to_stdvec(self).expect("postcard encoding to a Vec is infallible")
    }

    /// Decodes one envelope; never panics, whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.is_empty() {
            return Err(WireError::Empty);
        }
        if bytes.len() > MAX_PAYLOAD_BYTES {
            return Err(WireError::TooLarge(bytes.len()));
        }
        let (version, _) = postcard::take_from_bytes::<u16>(bytes)
            .map_err(|e| WireError::Malformed(format!("version: {e}")))?;
        if version != PROTOCOL_VERSION {
            return Err(WireError::UnsupportedVersion { got: version });
        }
        let (envelope, rest) = postcard::take_from_bytes::<Self>(bytes)
            .map_err(|e| WireError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(WireError::TrailingBytes(rest.len()));
        }
        Ok(envelope)
    }
}

/// Everything an appliance sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Uplink {
    /// First message after every (re)connection.
    Hello(Hello),
    /// Periodic health figures; coalesced (latest wins) while the link is down.
    Telemetry(Telemetry),
    /// Cumulative acknowledgement of downlink messages.
    Ack { up_to: u64 },
    /// A finished call, durable on the appliance before this is sent.
    CallRecord(CallRecord),
    /// The outcome of one dial attempt to a leased contact.
    AttemptResult(AttemptResult),
    /// The box asks for a new certificate before its current one expires: a PEM CSR for a
    /// key pair it generated (the private key stays on the box). The broker vouches for
    /// who is asking. Answered with [`Downlink::Certificate`].
    CertificateRenewal { csr: String },
    /// An agent's state change.
    AgentEvent(AgentEvent),
    /// Contacts of a lease handed back undialled (campaign stopped on the box, grant
    /// expired, or the box cannot use them); the coordinator may lease them elsewhere.
    LeaseReturn {
        lease: LeaseId,
        contacts: Vec<ContactId>,
        reason: String,
    },
    /// Calls up right now per campaign (campaigns with none are left out), sent with a
    /// telemetry report whenever they changed; coalesced like telemetry (latest wins). A
    /// separate kind rather than a [`Telemetry`] field so that coordinators keep reading
    /// the telemetry of boxes that do not send it.
    CampaignCalls(Vec<CampaignCalls>),
}

/// One campaign's calls up on the sending box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignCalls {
    /// The campaign.
    pub campaign: CampaignId,
    /// Its attempts in flight (dialling, ringing or talking).
    pub calls: u32,
}

impl Uplink {
    /// Whether this message may be replaced by a newer one of the same kind while queued.
    pub fn is_coalescible(&self) -> bool {
        matches!(self, Uplink::Telemetry(_) | Uplink::CampaignCalls(_))
    }
}

/// Everything the coordinator sends.
// Decoded one message at a time and matched at once; boxing the larger variants would
// only add allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Downlink {
    /// Cumulative acknowledgement of uplink messages.
    Ack { up_to: u64 },
    /// A renewed certificate (PEM) for the key in the box's last
    /// [`Uplink::CertificateRenewal`].
    Certificate { pem: String },
    /// A campaign this appliance dials, as the appliance needs it; sent when the appliance
    /// is given a share of the campaign and again after every change (newest `version` wins).
    Campaign(CampaignBrief),
    /// Contacts leased to this appliance for one campaign until the lease expires.
    ContactLease(ContactLease),
    /// The coordinator takes a lease back early (campaign paused or stopped, share removed):
    /// none of its contacts may be dialled from now on.
    LeaseRevoked { lease: LeaseId, reason: String },
    /// What the appliance may dial for a campaign until the grant expires; replaces the
    /// campaign's previous grant.
    PacingGrant(PacingGrant),
    /// Do-not-call entries for numbers the appliance holds in its leases.
    DncDelta(DncDelta),
    /// The routing policy in force; a higher `version` replaces a lower one.
    RoutingPolicy { version: u64, policy: RoutingPolicy },
    /// The agents who may log in on this appliance: a full replacement of the roster.
    AgentRoster(AgentRoster),
}

/// A campaign's settings as the appliance needs them to dial it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignBrief {
    /// The campaign.
    pub campaign: CampaignId,
    /// Changes with every edit; a brief with a lower version than the stored one is ignored.
    pub version: u64,
    /// Its display name.
    pub name: String,
    /// How it dials.
    pub dial_mode: DialMode,
    /// Whether the coordinator has it running; a paused or stopped campaign is not dialled
    /// even while leases and grants remain.
    pub running: bool,
    /// The jurisdiction's rules (window, caps, abandon budget, lockout, consent).
    pub profile: ComplianceProfile,
    /// The campaign's own calling window, checked on top of the profile's.
    pub window: CallingWindow,
    /// Caller id presented on outbound calls (E.164).
    pub caller_id: String,
    /// The agent script with `{{field}}` variables.
    pub script: String,
    /// Disposition codes agents choose from.
    pub disposition_codes: Vec<String>,
    /// Seconds of wrap-up after each call before the agent is ready again.
    pub wrap_up_seconds: u32,
    /// Whether calls open with the recording-consent announcement.
    pub recording_consent_announcement: bool,
    /// For agentless campaigns: the robot script answered calls run.
    pub robot_script: Option<String>,
}

/// How a campaign dials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DialMode {
    /// An agent sees the contact first and starts the call.
    Preview,
    /// One call per ready agent.
    Progressive,
    /// Dials ahead of free agents (overdial); may abandon within the budget.
    Predictive,
    /// Robot scripts only, no agents.
    Agentless,
}

/// One contact in a lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeasedContact {
    /// The contact.
    pub contact: ContactId,
    /// The number to dial.
    pub number: PhoneNumber,
    /// The contact's zone(s): one explicit zone, or every zone of its country.
    pub time_zones: Vec<String>,
    /// Attempts made so far, across all boxes.
    pub attempts: u32,
    /// Earlier attempts to this number inside the profile's cap windows (any campaign).
    pub recent_attempts: Vec<UnixMillis>,
    /// The contact's do-not-call entries known when leased (normally none: the coordinator
    /// does not lease forbidden contacts, but time-limited ones may start later).
    pub dnc: Vec<DncEntry>,
    /// Custom fields as `(name, value)`, for scripts, screen-pop and routing.
    pub fields: Vec<(String, String)>,
    /// Tags, for routing.
    pub tags: Vec<String>,
    /// The contact's last outcome or disposition, for routing.
    pub last_outcome: Option<String>,
    /// The agent who last spoke to the contact, for last-agent routing.
    pub last_agent: Option<AgentId>,
}

/// A batch of contacts held by this appliance for one campaign until `expires_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactLease {
    /// The lease.
    pub lease: LeaseId,
    /// The campaign.
    pub campaign: CampaignId,
    /// When the coordinator issued it.
    pub issued_at: UnixMillis,
    /// After this instant none of its contacts may be dialled.
    pub expires_at: UnixMillis,
    /// The contacts, in the order the coordinator wants them dialled.
    pub contacts: Vec<LeasedContact>,
}

/// What an appliance may dial for one campaign until `expires_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacingGrant {
    /// The campaign.
    pub campaign: CampaignId,
    /// Attempts in flight at most.
    pub max_concurrent: u32,
    /// Attempts started per minute at most.
    pub max_attempts_per_minute: u32,
    /// Abandoned calls this appliance may still cause (predictive only).
    pub abandon_budget: u64,
    /// After this instant the campaign stops on this box until a new grant arrives.
    pub expires_at: UnixMillis,
}

/// Do-not-call changes for numbers the appliance holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DncDelta {
    /// Entries added, per number.
    pub added: Vec<(PhoneNumber, DncEntry)>,
    /// Numbers whose entries were all removed.
    pub cleared: Vec<PhoneNumber>,
}

/// The agents who may log in on an appliance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRoster {
    /// Changes with every edit; a roster with a lower version than the stored one is
    /// ignored.
    pub version: u64,
    /// The agent groups.
    pub groups: Vec<AgentGroupBrief>,
    /// The agents (enabled ones only).
    pub agents: Vec<AgentBrief>,
}

/// An agent group as the appliance needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentGroupBrief {
    /// The group.
    pub group: AgentGroupId,
    /// Its name.
    pub name: String,
}

/// An agent as the appliance needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentBrief {
    /// The agent.
    pub agent: AgentId,
    /// Display name.
    pub name: String,
    /// Login for the agent page.
    pub login: String,
    /// Argon2 PHC string of the agent-page password (never the password).
    pub password_phc: String,
    /// The SIP username of the agent's phone; the phone registers with the appliance's
    /// registrar under the credentials the box's `[sip]` phone list holds for it.
    pub sip_username: String,
    /// Skills, for routing.
    pub skills: Vec<String>,
    /// Groups the agent belongs to.
    pub groups: Vec<AgentGroupId>,
}

/// An agent's state, as agent events report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentState {
    /// Logged in and free for a call.
    Ready,
    /// Picked for a call being connected.
    Reserved,
    /// On a call.
    Talking,
    /// After a call, until the campaign's wrap-up time has passed or a disposition is set.
    WrapUp,
    /// Not taking calls, with the reason the agent gave.
    Paused { reason: String },
    /// Not logged in.
    LoggedOut,
}

/// One change of an agent's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentEvent {
    /// The agent.
    pub agent: AgentId,
    /// The state entered.
    pub state: AgentState,
    /// When.
    pub at: UnixMillis,
    /// The call the state belongs to (reserved, talking, wrap-up).
    pub call: Option<CallId>,
    /// The campaign the call belongs to.
    pub campaign: Option<CampaignId>,
}

/// Sent by the appliance on every (re)connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Firmware version string.
    pub firmware: String,
    /// When the daemon started.
    pub started_at: UnixMillis,
    /// The highest downlink sequence number the appliance has applied.
    pub downlink_applied: u64,
}

/// The appliance's health figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Telemetry {
    /// Calls up right now.
    pub active_calls: u32,
    /// Agents logged in and ready.
    pub agents_ready: u32,
    /// One entry per configured trunk.
    pub trunks: Vec<TrunkHealth>,
    /// Data-partition use, percent.
    pub disk_used_percent: u8,
    /// Board temperature in tenths of a degree Celsius, when the board has a sensor.
    pub temperature_decicelsius: Option<i16>,
    /// Messages waiting in the appliance's outbox.
    pub outbox_depth: u64,
}

/// One trunk's state as the appliance's probes see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrunkHealth {
    /// The trunk's configured name.
    pub trunk: TrunkId,
    /// Whether OPTIONS probing currently marks it up.
    pub up: bool,
    /// Calls on it now.
    pub active_calls: u32,
    /// Answer-seizure ratio over the recent window, in parts per thousand.
    pub asr_permille: Option<u16>,
    /// Mean post-dial delay over the recent window.
    pub pdd_ms: Option<u32>,
}

/// How one attempt or call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CallOutcome {
    /// Answered by a person.
    AnsweredHuman,
    /// Answered by an answering machine or voicemail.
    AnsweredMachine,
    /// Busy (486/600).
    Busy,
    /// Rang out with no answer.
    NoAnswer,
    /// Refused by the far end (403/603 and similar).
    Rejected,
    /// Could not be placed (no trunk, network or carrier failure).
    Failed,
    /// Answered by a person with no agent free in time: safe-harbour message played.
    Abandoned,
}

/// Which way a call went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    /// Dialled by the appliance.
    Outbound,
    /// Arrived from a carrier or a phone.
    Inbound,
}

/// Per-leg media quality, from RTCP.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CallQuality {
    /// Estimated MOS × 100 (e.g. 410 for 4.10).
    pub mos_x100: u16,
    /// Packets lost, parts per million.
    pub loss_ppm: u32,
    /// Interarrival jitter, microseconds.
    pub jitter_us: u32,
    /// Round-trip time, microseconds, when RTCP measured it.
    pub rtt_us: Option<u32>,
}

/// A finished call, as stored on the appliance and in the coordinator's archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// The call.
    pub call: CallId,
    /// The attempt it came from, for outbound campaign calls.
    pub attempt: Option<AttemptId>,
    /// The campaign, when there is one.
    pub campaign: Option<CampaignId>,
    /// The contact, when there is one.
    pub contact: Option<ContactId>,
    /// Outbound or inbound.
    pub direction: Direction,
    /// The carrier trunk the customer leg used.
    pub trunk: Option<TrunkId>,
    /// The customer's number, when it was a valid E.164 number.
    pub remote: Option<PhoneNumber>,
    /// The agent who talked, if any.
    pub agent: Option<AgentId>,
    /// When the first leg was started or arrived.
    pub started_at: UnixMillis,
    /// When the customer leg was answered.
    pub answered_at: Option<UnixMillis>,
    /// When the last leg ended.
    pub ended_at: UnixMillis,
    /// How it ended.
    pub outcome: CallOutcome,
    /// The final SIP status of the customer leg, when it failed.
    pub sip_status: Option<u16>,
    /// The agent's disposition code.
    pub disposition: Option<String>,
    /// Recording segments written (0 when not recorded).
    pub recording_segments: u32,
    /// Customer-leg quality.
    pub quality: Option<CallQuality>,
}

/// The result of one dial attempt to a leased contact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptResult {
    /// The attempt.
    pub attempt: AttemptId,
    /// The call it became, if a call was placed.
    pub call: Option<CallId>,
    /// The campaign.
    pub campaign: CampaignId,
    /// The contact.
    pub contact: ContactId,
    /// The lease the contact was held under.
    pub lease: LeaseId,
    /// The trunk it went out on, if any.
    pub trunk: Option<TrunkId>,
    /// When dialling started.
    pub started_at: UnixMillis,
    /// When the attempt ended.
    pub ended_at: UnixMillis,
    /// How it ended.
    pub outcome: CallOutcome,
    /// Final SIP status, when the carrier gave one.
    pub sip_status: Option<u16>,
    /// INVITE to first ringing/progress, when there was one.
    pub post_dial_delay_ms: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn app() -> ApplianceId {
        ApplianceId::new("branch-1").unwrap()
    }

    fn sample_record() -> CallRecord {
        CallRecord {
            call: CallId::new_v7(),
            attempt: Some(AttemptId::new_v7()),
            campaign: Some(CampaignId(3)),
            contact: Some(ContactId(99)),
            direction: Direction::Outbound,
            trunk: Some(TrunkId::new("carrier-a").unwrap()),
            remote: Some(PhoneNumber::parse("+442079460958", None).unwrap()),
            agent: Some(AgentId(5)),
            started_at: UnixMillis(1_700_000_000_000),
            answered_at: Some(UnixMillis(1_700_000_004_000)),
            ended_at: UnixMillis(1_700_000_064_000),
            outcome: CallOutcome::AnsweredHuman,
            sip_status: None,
            disposition: Some("sale".into()),
            recording_segments: 2,
            quality: Some(CallQuality {
                mos_x100: 412,
                loss_ppm: 150,
                jitter_us: 4_000,
                rtt_us: Some(38_000),
            }),
        }
    }

    #[test]
    fn every_uplink_kind_round_trips() {
        let bodies = vec![
            Uplink::Hello(Hello {
                firmware: "1.2.3".into(),
                started_at: UnixMillis(1),
                downlink_applied: 7,
            }),
            Uplink::Telemetry(Telemetry {
                active_calls: 3,
                agents_ready: 2,
                trunks: vec![TrunkHealth {
                    trunk: TrunkId::new("carrier-a").unwrap(),
                    up: true,
                    active_calls: 3,
                    asr_permille: Some(420),
                    pdd_ms: Some(2_100),
                }],
                disk_used_percent: 41,
                temperature_decicelsius: Some(455),
                outbox_depth: 0,
            }),
            Uplink::Ack { up_to: 12 },
            Uplink::CallRecord(sample_record()),
            Uplink::AttemptResult(AttemptResult {
                attempt: AttemptId::new_v7(),
                call: Some(CallId::new_v7()),
                campaign: CampaignId(3),
                contact: ContactId(99),
                lease: LeaseId(8),
                trunk: None,
                started_at: UnixMillis(10),
                ended_at: UnixMillis(20),
                outcome: CallOutcome::Busy,
                sip_status: Some(486),
                post_dial_delay_ms: Some(900),
            }),
        ];
        for (i, body) in bodies.into_iter().enumerate() {
            let env = UplinkEnvelope::new(app(), i as u64 + 1, UnixMillis(5), body);
            assert_eq!(UplinkEnvelope::decode(&env.encode()).unwrap(), env);
        }
        let down = DownlinkEnvelope::new(app(), 0, UnixMillis(5), Downlink::Ack { up_to: 4 });
        assert_eq!(DownlinkEnvelope::decode(&down.encode()).unwrap(), down);
    }

    #[test]
    fn every_downlink_kind_round_trips() {
        let number = PhoneNumber::parse("+14155550123", None).unwrap();
        let dnc = DncEntry {
            scope: crate::compliance::DncScope::Campaign(CampaignId(3)),
            expires_at: Some(UnixMillis(99)),
        };
        let bodies = vec![
            Downlink::Ack { up_to: 4 },
            Downlink::Campaign(CampaignBrief {
                campaign: CampaignId(3),
                version: 2,
                name: "renewals".into(),
                dial_mode: DialMode::Predictive,
                running: true,
                profile: ComplianceProfile::uk(),
                window: CallingWindow::us_default(),
                caller_id: "+442079460000".into(),
                script: "Hello {{first_name}}".into(),
                disposition_codes: vec!["sale".into(), "callback".into()],
                wrap_up_seconds: 15,
                recording_consent_announcement: true,
                robot_script: None,
            }),
            Downlink::ContactLease(ContactLease {
                lease: LeaseId(8),
                campaign: CampaignId(3),
                issued_at: UnixMillis(1),
                expires_at: UnixMillis(2),
                contacts: vec![LeasedContact {
                    contact: ContactId(99),
                    number: number.clone(),
                    time_zones: vec!["America/Los_Angeles".into()],
                    attempts: 1,
                    recent_attempts: vec![UnixMillis(0)],
                    dnc: vec![dnc],
                    fields: vec![("tier".into(), "gold".into())],
                    tags: vec!["vip".into()],
                    last_outcome: Some("busy".into()),
                    last_agent: Some(AgentId(5)),
                }],
            }),
            Downlink::LeaseRevoked {
                lease: LeaseId(8),
                reason: "campaign paused".into(),
            },
            Downlink::PacingGrant(PacingGrant {
                campaign: CampaignId(3),
                max_concurrent: 30,
                max_attempts_per_minute: 120,
                abandon_budget: 4,
                expires_at: UnixMillis(3),
            }),
            Downlink::DncDelta(DncDelta {
                added: vec![(number.clone(), dnc)],
                cleared: vec![number],
            }),
            Downlink::RoutingPolicy {
                version: 7,
                policy: RoutingPolicy {
                    rules: vec![crate::routing::RoutingRule {
                        name: "vip".into(),
                        when: crate::routing::Condition::Tag("vip".into()),
                        then: crate::routing::RouteAction::AgentGroup(2),
                    }],
                },
            },
            Downlink::AgentRoster(AgentRoster {
                version: 4,
                groups: vec![AgentGroupBrief {
                    group: AgentGroupId(2),
                    name: "seniors".into(),
                }],
                agents: vec![AgentBrief {
                    agent: AgentId(5),
                    name: "Ada".into(),
                    login: "ada".into(),
                    password_phc: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
                    sip_username: "1001".into(),
                    skills: vec!["spanish".into()],
                    groups: vec![AgentGroupId(2)],
                }],
            }),
        ];
        for (i, body) in bodies.into_iter().enumerate() {
            let env = DownlinkEnvelope::new(app(), i as u64 + 1, UnixMillis(5), body);
            assert_eq!(DownlinkEnvelope::decode(&env.encode()).unwrap(), env);
        }
        let events = vec![
            Uplink::AgentEvent(AgentEvent {
                agent: AgentId(5),
                state: AgentState::Paused {
                    reason: "lunch".into(),
                },
                at: UnixMillis(9),
                call: None,
                campaign: None,
            }),
            Uplink::LeaseReturn {
                lease: LeaseId(8),
                contacts: vec![ContactId(99)],
                reason: "grant expired".into(),
            },
        ];
        for body in events {
            let env = UplinkEnvelope::new(app(), 1, UnixMillis(5), body);
            assert_eq!(UplinkEnvelope::decode(&env.encode()).unwrap(), env);
        }
    }

    #[test]
    fn unknown_version_is_a_typed_error_not_a_guess() {
        let mut env = UplinkEnvelope::new(app(), 1, UnixMillis(0), Uplink::Ack { up_to: 1 });
        env.version = PROTOCOL_VERSION + 1;
        assert_eq!(
            UplinkEnvelope::decode(&env.encode()),
            Err(WireError::UnsupportedVersion {
                got: PROTOCOL_VERSION + 1
            })
        );
    }

    #[test]
    fn truncation_trailing_bytes_and_empty_payloads_are_refused() {
        let env = UplinkEnvelope::new(app(), 9, UnixMillis(0), Uplink::CallRecord(sample_record()));
        let bytes = env.encode();
        for cut in 1..bytes.len() {
            assert!(
                UplinkEnvelope::decode(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            UplinkEnvelope::decode(&longer),
            Err(WireError::TrailingBytes(1))
        );
        assert_eq!(UplinkEnvelope::decode(&[]), Err(WireError::Empty));
        let huge = vec![1u8; MAX_PAYLOAD_BYTES + 1];
        assert_eq!(
            UplinkEnvelope::decode(&huge),
            Err(WireError::TooLarge(MAX_PAYLOAD_BYTES + 1))
        );
    }

    #[test]
    fn an_envelope_for_the_other_direction_is_not_mistaken() {
        // Downlink has fewer kinds; a CallRecord uplink cannot decode as a downlink.
        let env = UplinkEnvelope::new(app(), 1, UnixMillis(0), Uplink::CallRecord(sample_record()));
        assert!(DownlinkEnvelope::decode(&env.encode()).is_err());
    }

    #[test]
    fn only_telemetry_and_campaign_calls_coalesce() {
        assert!(!Uplink::CallRecord(sample_record()).is_coalescible());
        assert!(!Uplink::Ack { up_to: 1 }.is_coalescible());
        assert!(Uplink::CampaignCalls(Vec::new()).is_coalescible());
    }

    #[test]
    fn campaign_calls_round_trip_and_keep_every_earlier_kind_at_its_position() {
        let body = Uplink::CampaignCalls(vec![CampaignCalls {
            campaign: CampaignId(7),
            calls: 3,
        }]);
        let env = UplinkEnvelope::new(app(), 9, UnixMillis(5), body.clone());
        assert_eq!(UplinkEnvelope::decode(&env.encode()).unwrap().body, body);
        // Appended last: postcard numbers variants by position, so the kinds older
        // coordinators know keep their numbers (LeaseReturn is 7, this one 8).
        let tag = |b: &Uplink| postcard::to_allocvec(b).unwrap()[0];
        assert_eq!(tag(&body), 8);
        let back = Uplink::LeaseReturn {
            lease: LeaseId(1),
            contacts: Vec::new(),
            reason: String::new(),
        };
        assert_eq!(tag(&back), 7);
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = UplinkEnvelope::decode(&bytes);
            let _ = DownlinkEnvelope::decode(&bytes);
        }

        #[test]
        fn decoding_mutated_envelopes_never_panics(flip in 0usize..400, byte in any::<u8>()) {
            let env = UplinkEnvelope::new(app(), 1, UnixMillis(0), Uplink::CallRecord(sample_record()));
            let mut bytes = env.encode();
            let i = flip % bytes.len();
            bytes[i] = byte;
            let _ = UplinkEnvelope::decode(&bytes);
        }
    }
}
