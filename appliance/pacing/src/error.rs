//! The pacing core's one error type. The core refuses an input it cannot make sense of and
//! keeps its state exactly as it was before that input.

use callgate_common::ids::{AttemptId, TrunkId};

/// Why the pacer refused an input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PacingError {
    /// An attempt event named an attempt that was never reported started (or already ended).
    #[error("attempt {0} is not known to the pacer (never started, or already ended)")]
    UnknownAttempt(AttemptId),
    /// `Started` was reported twice for the same attempt.
    #[error("attempt {0} was already reported started")]
    DuplicateAttempt(AttemptId),
    /// An attempt was started on a trunk the pacer has no limits for.
    #[error("trunk {0} has no limits configured in the pacer; call set_trunk first")]
    UnknownTrunk(TrunkId),
    /// The event does not follow from the attempt's current phase (e.g. `AnsweredHuman`
    /// after `NoAnswer`).
    #[error("attempt {attempt}: event {event} is not possible in phase {phase}")]
    UnexpectedEvent {
        /// The attempt.
        attempt: AttemptId,
        /// The event that was refused.
        event: &'static str,
        /// The phase the attempt is in.
        phase: &'static str,
    },
    /// A configuration value is out of its range; names the key.
    #[error("pacing setting `{key}` is invalid: {reason}")]
    InvalidSetting {
        /// The setting's name.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}
