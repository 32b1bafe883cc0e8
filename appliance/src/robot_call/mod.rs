//! # robot_call — robot scripts and answering-machine detection in the running call path
//!
//! Owns the daemon side of `callgate_robot`: running a campaign's robot script on an
//! answered call's media leg, screening answers for machines, and robot or voicemail
//! overflow for inbound queues.
//!
//! Rooms:
//! - [`session`]: [`session::RobotSession`], the driver's pure logic (sans-IO, paced by
//!   frames, tested in virtual time): prompts and speech frame by frame, barge-in, timers,
//!   transfers;
//! - [`driver`]: [`driver::run_robot_call`], the tokio driver over one `RtpLeg` (TTS on
//!   blocking threads, DTMF in, recording, the transfer hook, caller hang-up);
//! - [`speech`]: [`speech::SpeechCache`], TTS per text and voice, synthesised once;
//! - [`transfer`]: [`transfer::AgentTransfer`], the hook the agent desk fills;
//! - [`placement`]: [`placement::RobotPlacement`], the dialer's `AnsweredCallPlacement` for
//!   robot campaigns (scripts per campaign from `CampaignBrief.robot_script`);
//! - [`screen`]: [`screen::MachineScreen`], answering-machine detection in front of any
//!   placement;
//! - [`overflow`]: [`overflow::OverflowTarget`], what an overflowing inbound queue hands its
//!   caller to (a robot script or voicemail).
//!
//! Talks to: the dialer's placement types (`crate::dialer::placement`), the media legs
//! (`crate::media`), recording, and the agents' lines (only through `OverflowTarget`).
//! Must not: send SIP (the dialer or the lines hang up), decide routing (the desk does), or
//! touch campaign, lease or grant data.

pub mod driver;
pub mod overflow;
pub mod placement;
pub mod screen;
pub mod session;
pub mod speech;
pub mod transfer;

pub use overflow::{
    InboundOverflow, OverflowCall, OverflowReport, OverflowTarget, ScriptOverflow, Voicemail,
};
pub use placement::{RobotPlacement, ScriptState, ScriptStatus};
pub use screen::{EndMachineCalls, MachineAnswer, MachineScreen, ScreenSettings, ScreenedAnswer};
pub use speech::SpeechCache;
pub use transfer::{AgentAudio, AgentTransfer, TransferRequest, TransferResult};

use callgate_common::ids::CampaignId;

/// Why the robot side refused something.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RobotCallError {
    /// A campaign's robot script failed validation; its calls get the announcement instead.
    /// The script error names the step and field.
    #[error("campaign {campaign}: robot script refused: {source}")]
    Script {
        campaign: CampaignId,
        #[source]
        source: callgate_robot::ScriptError,
    },
    /// A voicemail greeting or robot prompt file could not be read or decoded.
    #[error("prompt {path}: {reason}")]
    Prompt { path: String, reason: String },
    /// Media failed on the call's leg.
    #[error(transparent)]
    Media(#[from] crate::media::MediaError),
}
