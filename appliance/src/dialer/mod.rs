//! # dialer — the campaign executor (issue 7)
//!
//! Owns: the box's holdings of campaigns, contact leases, pacing grants and do-not-call
//! entries in SQLite ([`store`], tables `dialer_*`), the sans-IO [`executor`] that decides
//! which contact to dial when (dial modes, compliance gate, grant limits, expiries), the
//! tokio [`driver`] that places its attempts through the trunk router with a media leg each,
//! and the [`placement`] step that takes an answered call, routed by [`dispatch`] to the
//! agent desk, a robot placement or the [`placement::Announcement`]. A call an agent talked
//! on is released at the hang-up; its call record waits for the agent's disposition
//! ([`wrap_up`]), kept in the store (`dialer_wrap_ups`) meanwhile.
//!
//! Talks to: the SIP engine (`crate::sip::udp::UdpTrunkRouter`), media
//! (`crate::media`), recording, the uplink outbox (`crate::sync::outbox_store`) and the
//! predictive pacing core (`callgate_pacing`). The sync link applies dialer downlinks through
//! [`store::apply_downlink`] in its own transaction.
//!
//! Must not: dial a contact twice, dial after a lease or grant expired, release a call's
//! SIP or media resources before its attempt result and call record are durable (the record
//! in the outbox, or kept in `dialer_wrap_ups` while the agent wraps up), re-dial on
//! its own (retries are the coordinator's), or manage agents (the agent desk's room).

pub mod dispatch;
pub mod driver;
pub mod executor;
pub mod placement;
pub mod store;
pub mod wrap_up;

pub use executor::{
    AttemptUpdate, CampaignExecutor, CampaignRun, DialOrder, DialState, DialerStatus,
    ExecutorConfig, ExecutorOutput, HeldContact, HeldLease, Holdings,
};

use callgate_common::ids::{AgentId, AttemptId, CampaignId};

/// Why the dialer refused a request or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialerError {
    /// An attempt update named an attempt the executor did not order or that already ended.
    #[error("attempt {0} is not in flight")]
    UnknownAttempt(AttemptId),
    /// A request named a campaign the box holds no brief for.
    #[error("campaign {0} is not held by this box")]
    UnknownCampaign(CampaignId),
    /// A preview request for a campaign that does not dial in preview mode.
    #[error("campaign {0} does not dial in preview mode")]
    NotPreview(CampaignId),
    /// A preview dial by an agent who has no contact on screen.
    #[error("agent {0} has no previewed contact to dial")]
    NothingPreviewed(AgentId),
    /// The campaign is not dialling now (no grant, grant or lease expired, stopped, limits).
    #[error("campaign {0} is not dialling now")]
    CampaignNotDialling(CampaignId),
    /// The compliance gate refused the contact; the reason names the rule.
    #[error("{0}")]
    Refused(String),
    /// The contact is no longer pending in the store (it was dialled or handed back): it is
    /// never dialled again.
    #[error("contact {contact} of lease {lease} is no longer pending")]
    NotPending { lease: u64, contact: u64 },
    /// The box's database refused a read or write.
    #[error("dialer store: {0}")]
    Store(#[from] sqlx::Error),
    /// A stored holding could not be decoded.
    #[error("dialer store holds a bad {what}: {reason}")]
    Corrupt { what: &'static str, reason: String },
    /// The outbox refused a message (quota) or failed.
    #[error(transparent)]
    Outbox(#[from] crate::sync::SyncError),
    /// The SIP engine stopped or could not start.
    #[error(transparent)]
    Sip(#[from] crate::sip::udp::DriverError),
    /// Media could not be set up for a call.
    #[error(transparent)]
    Media(#[from] crate::media::MediaError),
    /// The dialer's task has stopped; requests to it cannot be served.
    #[error("the dialer has stopped")]
    Stopped,
    /// A prompt file could not be read or decoded.
    #[error("prompt {path}: {reason}")]
    Prompt { path: String, reason: String },
    /// An attempt's mark on its contact could not be undone: the contact is not being
    /// dialled by that attempt any more.
    #[error("contact {contact} of lease {lease} is not being dialled by that attempt")]
    NotDialling { lease: u64, contact: u64 },
}
