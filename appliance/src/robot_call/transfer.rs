//! The hook a script's `transfer` step calls: [`AgentTransfer`], which the agent desk fills.
//!
//! The robot driver keeps the customer's media leg for the whole call (it records it and
//! sees the caller hang up); a transfer hands the desk the customer's audio as frames
//! ([`AgentAudio`]) and waits for the desk's answer. With no hook installed, or when the
//! desk finds nobody, the script goes on at the step's `on_no_agent`.
//!
//! Must not: bridge or route here — the desk decides who takes the call.

use crate::dialer::placement::WrapUp;
use crate::media::LegAudio;
use callgate_common::ids::{AgentGroupId, AgentId, CallId, CampaignId};
use callgate_common::wire::LeasedContact;
use futures_util::future::BoxFuture;
use std::collections::BTreeMap;
use tokio::sync::{mpsc, watch};

/// The customer's audio while an agent has the call: frames to send to the customer (one
/// per packet time, the leg's frame size) and what the customer says (played-out frames and
/// key presses).
#[derive(Debug)]
pub struct AgentAudio {
    /// Frames for the customer; the robot plays silence when none is ready.
    pub to_customer: mpsc::Sender<Vec<i16>>,
    /// The customer's played-out frames and key presses.
    pub from_customer: mpsc::Receiver<LegAudio>,
}

/// A call a script hands to an agent group.
#[derive(Debug)]
pub struct TransferRequest {
    /// The call.
    pub call: CallId,
    /// The campaign, for an outbound call.
    pub campaign: Option<CampaignId>,
    /// The group the script names.
    pub group: AgentGroupId,
    /// The contact, for an outbound call (screen-pop).
    pub contact: Option<LeasedContact>,
    /// The script's variables at the transfer (contact fields, collected input).
    pub variables: BTreeMap<String, String>,
    /// The customer's audio, for the agent's leg.
    pub audio: AgentAudio,
    /// Turns true when the customer hung up or the call must end.
    pub end_now: watch::Receiver<bool>,
}

/// What became of a transfer.
#[derive(Debug)]
#[non_exhaustive]
pub enum TransferResult {
    /// An agent talked to the customer; the future resolves when their conversation is over.
    Talked {
        /// Who took the call.
        agent: AgentId,
        /// The agent's disposition code, if any.
        disposition: Option<String>,
    },
    /// An agent talked to the customer and their conversation is over; the agent is still
    /// wrapping up. The robot releases the customer at once; the call record waits for the
    /// disposition this resolves with.
    WrappingUp(WrapUp),
    /// Nobody in the group took the call in time; resolve promptly (the customer hears
    /// silence meanwhile) and the script goes on.
    NoAgent,
}

/// Where a script's `transfer` goes: the agent desk implements it.
pub trait AgentTransfer: Send + Sync + 'static {
    /// Offers the call to `request.group`; resolves with [`TransferResult::NoAgent`] at once
    /// when nobody takes it, or with [`TransferResult::Talked`] (disposition known) or
    /// [`TransferResult::WrappingUp`] (disposition to come) when the agent's conversation
    /// is over — never later, so the customer's leg is not held for the wrap-up.
    fn transfer(&self, request: TransferRequest) -> BoxFuture<'static, TransferResult>;
}
