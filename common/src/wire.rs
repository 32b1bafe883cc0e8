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

use crate::ids::{
    AgentId, ApplianceId, AttemptId, CallId, CampaignId, ContactId, LeaseId, TrunkId,
};
use crate::phone::PhoneNumber;
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
}

impl Uplink {
    /// Whether this message may be replaced by a newer one of the same kind while queued.
    pub fn is_coalescible(&self) -> bool {
        matches!(self, Uplink::Telemetry(_))
    }
}

/// Everything the coordinator sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Downlink {
    /// Cumulative acknowledgement of uplink messages.
    Ack { up_to: u64 },
    /// A renewed certificate (PEM) for the key in the box's last
    /// [`Uplink::CertificateRenewal`].
    Certificate { pem: String },
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
    fn only_telemetry_coalesces() {
        assert!(!Uplink::CallRecord(sample_record()).is_coalescible());
        assert!(!Uplink::Ack { up_to: 1 }.is_coalescible());
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
