//! The call records of inbound calls the agents' lines answer or refuse: one
//! `CallRecord` (direction inbound, no attempt, contact or campaign) per call, durable in
//! the outbox before the lines release the call's SIP leg.
//!
//! - A call an agent talked on: `AnsweredHuman` with the agent, the caller leg's quality
//!   and the disposition. While the agent wraps up, the record is kept in `dialer_wrap_ups`
//!   (as the dialer keeps its own) and goes out when the agent saves a code or the wrap-up
//!   ends ([`AgentDeskService::disposition_after`]), never twice. When the box stops first,
//!   the record stays kept: at the next start the desk puts the agent back into the wrap-up
//!   at login, and the dialer sends the record with the code saved then or when the wrap-up
//!   has ended (`dialer::store::settle_wrap_ups`, `complete_wrap_up`).
//! - A caller who hung up while queued, or was hung up on at overflow: `Abandoned`.
//! - Overflowed to a robot script or voicemail: `AnsweredHuman` with the script's
//!   disposition (or `voicemail`) and the recording segments.
//! - Refused (held for a full disk, no route to an agent group, unusable offer):
//!   `Rejected` with the SIP status sent.
//!
//! Must not: touch SIP or media (the lines do), or decide the call's outcome beyond what
//! the lines tell it.

use super::service::{AgentDeskService, SharedOutbox};
use crate::dialer::driver::retry_while_busy;
use crate::dialer::store::KeptRecord;
use crate::dialer::wrap_up::AgentHolds;
use callgate_common::ids::{AgentId, CallId, TrunkId};
use callgate_common::phone::PhoneNumber;
use callgate_common::time::UnixMillis;
use callgate_common::wire::{CallOutcome, CallQuality, CallRecord, Direction, Uplink};

/// What an inbound call's record needs, gathered while the call runs.
#[derive(Debug, Clone)]
pub struct InboundFacts {
    /// The call.
    pub call: CallId,
    /// When the INVITE arrived.
    pub started_at: UnixMillis,
    /// When the lines answered it (`None`: refused).
    pub answered_at: Option<UnixMillis>,
    /// The caller's number, when the From URI carried an E.164 one.
    pub remote: Option<PhoneNumber>,
    /// The trunk the INVITE came in on (by its source address).
    pub trunk: Option<TrunkId>,
}

/// How an inbound call ended, as the lines saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum InboundEnd {
    /// An agent talked with the caller.
    Talked {
        /// The agent.
        agent: AgentId,
        /// The caller leg's quality, when the bridge reported it.
        quality: Option<CallQuality>,
        /// Recording segments sealed (0: not recorded).
        recording_segments: u32,
    },
    /// A robot script or voicemail took the caller at overflow.
    Overflowed {
        /// The script's disposition, or `voicemail` (the agent's code, when a transfer's
        /// agent saved one during the conversation).
        disposition: String,
        /// The agent a script's `transfer` reached.
        agent: Option<AgentId>,
        /// Recording segments sealed.
        recording_segments: u32,
    },
    /// No agent took the call: the caller hung up while queued, or was hung up on.
    Abandoned,
    /// Refused with this SIP status.
    Rejected(u16),
    /// Answered, then lost before anyone took it (the desk refused it, or answering failed).
    Failed,
}

/// The record of an inbound call ending now.
pub fn record_of(facts: &InboundFacts, end: &InboundEnd) -> CallRecord {
    let (outcome, agent, quality, disposition, segments, sip_status) = match end {
        InboundEnd::Talked {
            agent,
            quality,
            recording_segments,
        } => (
            CallOutcome::AnsweredHuman,
            Some(*agent),
            *quality,
            None,
            *recording_segments,
            None,
        ),
        InboundEnd::Overflowed {
            disposition,
            agent,
            recording_segments,
        } => (
            CallOutcome::AnsweredHuman,
            *agent,
            None,
            Some(disposition.clone()),
            *recording_segments,
            None,
        ),
        InboundEnd::Abandoned => (CallOutcome::Abandoned, None, None, None, 0, None),
        InboundEnd::Rejected(status) => (CallOutcome::Rejected, None, None, None, 0, Some(*status)),
        InboundEnd::Failed => (CallOutcome::Failed, None, None, None, 0, None),
    };
    CallRecord {
        call: facts.call,
        attempt: None,
        campaign: None,
        contact: None,
        direction: Direction::Inbound,
        trunk: facts.trunk.clone(),
        remote: facts.remote.clone(),
        agent,
        started_at: facts.started_at,
        answered_at: facts.answered_at,
        ended_at: UnixMillis::now(),
        outcome,
        sip_status,
        disposition,
        recording_segments: segments,
        quality,
    }
}

/// Commits `record` (see the module doc): at once, or — while its agent wraps up the call —
/// kept in the store and sent with the disposition later. Returns once the record is
/// durable (in the outbox or kept). Without an outbox (no `[sip]` sync side) it is only
/// logged.
pub async fn commit(desk: &AgentDeskService, mut record: CallRecord) {
    let Some(shared) = desk.outbox() else {
        tracing::info!(call = %record.call, outcome = ?record.outcome, "inbound call record not kept: the box has no outbox");
        return;
    };
    let call = record.call;
    // The agent's code wins over a script's disposition (a transfer's `transferred`), which
    // stands when the agent saves none.
    if let Some(agent) = record.agent {
        if let Some(code) = desk.take_disposition(call) {
            record.disposition = Some(code);
        } else {
            if let AgentHolds::Yes { wrap_up_until, .. } = desk.holds(agent, call) {
                let kept = KeptRecord {
                    record,
                    wrap_up_until,
                };
                match keep_in_wrap_up(desk, shared.clone(), agent, kept).await {
                    Ok(()) => return,
                    Err((e, kept)) => {
                        tracing::error!(%call, error = %e, "cannot keep the inbound call record for the wrap-up; sending it without the disposition");
                        record = kept;
                    }
                }
            }
        }
    }
    send(&shared, record).await;
}

/// Keeps the record in `dialer_wrap_ups` (durable) and leaves a task to send it with the
/// disposition the agent saves; on a store error the record comes back.
async fn keep_in_wrap_up(
    desk: &AgentDeskService,
    shared: SharedOutbox,
    agent: AgentId,
    kept: KeptRecord,
) -> Result<(), (crate::dialer::DialerError, CallRecord)> {
    let call = kept.record.call;
    let waiting = crate::dialer::wrap_up::waiting_for(call);
    if let Err(e) = retry_while_busy("an inbound call record", || {
        crate::dialer::store::keep_for_wrap_up(desk.pool(), &kept)
    })
    .await
    {
        return Err((e, kept.record));
    }
    let wait = desk.disposition_after(call, agent);
    let mut record = kept.record;
    let pool = desk.pool().clone();
    let desk = desk.clone();
    tokio::spawn(async move {
        let _waiting = waiting;
        let saved = tokio::select! {
            saved = wait => saved,
            () = desk.stopped() => {
                // Kept: the next start completes it (the agent may resume the wrap-up).
                tracing::info!(%call, "the box stops during the agent's wrap-up; the record stays kept");
                return;
            }
        };
        let saved = match saved {
            Some(code) => Some(code),
            // Saved through another desk meanwhile (the wrap-up resumed after a restart)?
            None => crate::dialer::store::saved_disposition(&pool, call)
                .await
                .ok()
                .flatten(),
        };
        if saved.is_some() {
            record.disposition = saved;
        }
        tracing::info!(%call, %agent, disposition = ?record.disposition, "the agent's wrap-up is over; the inbound call record goes out");
        let outbox = shared.read().await.clone();
        let sent = retry_while_busy("an inbound call record after wrap-up", || async {
            crate::dialer::store::record_wrapped_up(&outbox, &record)
                .await
                .map(|_| ())
        })
        .await;
        if let Err(e) = sent {
            tracing::error!(%call, error = %e, "cannot send the inbound call record after wrap-up; the next start sends it");
        }
    });
    Ok(())
}

/// Puts `record` in the outbox now.
async fn send(shared: &SharedOutbox, record: CallRecord) {
    let call = record.call;
    let outbox = shared.read().await.clone();
    let sent = retry_while_busy("an inbound call record", || async {
        outbox
            .send(&Uplink::CallRecord(record.clone()))
            .await
            .map(|_| ())
            .map_err(crate::dialer::DialerError::from)
    })
    .await;
    match sent {
        Ok(()) => {
            tracing::debug!(%call, outcome = ?record.outcome, "inbound call record in the outbox")
        }
        Err(e) => {
            tracing::error!(%call, error = %e, "cannot put the inbound call record in the outbox")
        }
    }
}
