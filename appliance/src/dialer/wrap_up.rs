//! An agent's wrap-up after a call, as the call record sees it: [`DispositionWait`], the
//! sans-IO core deciding when the wait for the agent's disposition is over and what the
//! record says, and the set of calls whose record is still waiting in this process.
//!
//! The customer's leg and media are released at the hang-up, and the attempt result is
//! committed then (with the call record kept in the store, `dialer_wrap_ups`); the record goes
//! to the outbox when this wait is over. The wait ends when the agent saves a disposition,
//! when the agent no longer holds the call (went ready, paused, logged out), when the
//! wrap-up's end has passed (plus [`WRAP_UP_GRACE`] for the desk's own timer), or at the
//! overall limit.
//!
//! Must not: touch the desk, the store or the network (the dispatcher's driver feeds it what
//! the desk says; the dialer's driver commits the record).

use callgate_common::ids::CallId;
use callgate_common::time::UnixMillis;
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

/// How long after the wrap-up's end the wait still gives the desk to move the agent on (a
/// disposition saved at the last moment still arrives).
pub const WRAP_UP_GRACE: Duration = Duration::from_secs(1);

/// Whether the agent still holds the call, as the desk shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentHolds {
    /// The agent has moved on: ready, paused, logged out, or on another call.
    No,
    /// The agent is still in this call's wrap-up.
    Yes {
        /// The code shown as saved, if any.
        saved: Option<String>,
        /// When the wrap-up ends (`None`: no end set).
        wrap_up_until: Option<UnixMillis>,
    },
}

/// How the wait for a disposition ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WrapUpEnd {
    /// The agent saved this code.
    Saved(String),
    /// The agent moved on without saving one.
    AgentMovedOn,
    /// The wrap-up time ran out without one.
    WrapUpExpired,
    /// The overall limit passed.
    WaitLimit,
}

impl WrapUpEnd {
    /// The disposition for the call record.
    pub fn disposition(self) -> Option<String> {
        match self {
            WrapUpEnd::Saved(code) => Some(code),
            _ => None,
        }
    }

    /// A short name for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            WrapUpEnd::Saved(_) => "saved",
            WrapUpEnd::AgentMovedOn => "agent_moved_on",
            WrapUpEnd::WrapUpExpired => "wrap_up_expired",
            WrapUpEnd::WaitLimit => "wait_limit",
        }
    }
}

/// The wait for one call's disposition (see the module doc).
#[derive(Debug)]
pub struct DispositionWait {
    limit: UnixMillis,
    wrap_up_until: Option<UnixMillis>,
    end: Option<WrapUpEnd>,
}

impl DispositionWait {
    /// A wait starting at the hang-up `now`, never longer than `max`.
    pub fn new(now: UnixMillis, max: Duration) -> DispositionWait {
        DispositionWait {
            limit: now.plus_millis(max.as_millis() as i64),
            wrap_up_until: None,
            end: None,
        }
    }

    /// The desk reports the code the agent saved for the call.
    pub fn handle_saved(&mut self, code: String) {
        if self.end.is_none() {
            self.end = Some(WrapUpEnd::Saved(code));
        }
    }

    /// What the desk shows of the agent now.
    pub fn handle_agent(&mut self, now: UnixMillis, holds: AgentHolds) {
        if self.end.is_some() {
            return;
        }
        match holds {
            AgentHolds::No => self.end = Some(WrapUpEnd::AgentMovedOn),
            AgentHolds::Yes {
                saved: Some(code), ..
            } => self.end = Some(WrapUpEnd::Saved(code)),
            AgentHolds::Yes {
                saved: None,
                wrap_up_until,
            } => {
                self.wrap_up_until = wrap_up_until;
                self.handle_timeout(now);
            }
        }
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: UnixMillis) {
        if self.end.is_some() {
            return;
        }
        if now >= self.limit {
            self.end = Some(WrapUpEnd::WaitLimit);
        } else if self.wrap_up_until.is_some_and(|u| now >= Self::expiry(u)) {
            self.end = Some(WrapUpEnd::WrapUpExpired);
        }
    }

    fn expiry(until: UnixMillis) -> UnixMillis {
        until.plus_millis(WRAP_UP_GRACE.as_millis() as i64)
    }

    /// When [`DispositionWait::handle_timeout`] is due next (`None` once over).
    pub fn poll_timeout(&self) -> Option<UnixMillis> {
        if self.end.is_some() {
            return None;
        }
        Some(match self.wrap_up_until {
            Some(u) => Self::expiry(u).min(self.limit),
            None => self.limit,
        })
    }

    /// How the wait ended, once it has (it ends once; later inputs change nothing).
    pub fn poll_end(&self) -> Option<WrapUpEnd> {
        self.end.clone()
    }
}

/// Calls of this process whose record waits for a wrap-up (a dialer starting settles only
/// the records no one here is waiting for: those a previous run left).
static WAITING: Mutex<Option<HashSet<CallId>>> = Mutex::new(None);

/// Marks `call`'s record as waited for here until the returned guard drops.
pub fn waiting_for(call: CallId) -> WaitingGuard {
    WAITING
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(HashSet::new)
        .insert(call);
    WaitingGuard(call)
}

/// Whether this process waits for `call`'s wrap-up.
pub fn is_waiting(call: CallId) -> bool {
    WAITING
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .is_some_and(|s| s.contains(&call))
}

/// See [`waiting_for`].
#[derive(Debug)]
pub struct WaitingGuard(CallId);

impl Drop for WaitingGuard {
    fn drop(&mut self) {
        if let Some(s) = WAITING.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            s.remove(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HANG_UP: UnixMillis = UnixMillis(1_000_000);
    const MAX: Duration = Duration::from_secs(600);

    fn at(s: i64) -> UnixMillis {
        HANG_UP.plus_millis(s * 1_000)
    }

    fn in_wrap_up(until_s: i64) -> AgentHolds {
        AgentHolds::Yes {
            saved: None,
            wrap_up_until: Some(at(until_s)),
        }
    }

    #[test]
    fn a_disposition_saved_ten_seconds_after_the_hang_up_is_the_calls() {
        let mut wait = DispositionWait::new(HANG_UP, MAX);
        wait.handle_agent(HANG_UP, in_wrap_up(60));
        assert_eq!(wait.poll_end(), None);
        // Nothing ends the wait before the wrap-up does: not 4 s, not 5 s after the hang-up.
        assert_eq!(wait.poll_timeout(), Some(at(61)));
        for s in [4, 5, 9] {
            wait.handle_timeout(at(s));
            wait.handle_agent(at(s), in_wrap_up(60));
            assert_eq!(
                wait.poll_end(),
                None,
                "still waiting {s} s after the hang-up"
            );
        }
        wait.handle_saved("sale".into());
        assert_eq!(wait.poll_end(), Some(WrapUpEnd::Saved("sale".into())));
        assert_eq!(wait.poll_timeout(), None);
    }

    #[test]
    fn the_code_the_desk_shows_as_saved_ends_the_wait_with_it() {
        let mut wait = DispositionWait::new(HANG_UP, MAX);
        wait.handle_agent(
            at(12),
            AgentHolds::Yes {
                saved: Some("callback".into()),
                wrap_up_until: Some(at(60)),
            },
        );
        assert_eq!(
            wait.poll_end().and_then(WrapUpEnd::disposition),
            Some("callback".into())
        );
    }

    #[test]
    fn an_agent_who_moves_on_without_saving_ends_the_wait_with_no_disposition() {
        let mut wait = DispositionWait::new(HANG_UP, MAX);
        wait.handle_agent(at(1), in_wrap_up(60));
        wait.handle_agent(at(20), AgentHolds::No);
        let end = wait.poll_end().unwrap();
        assert_eq!(end, WrapUpEnd::AgentMovedOn);
        assert_eq!(end.disposition(), None);
        // A code reported after the end changes nothing.
        wait.handle_saved("late".into());
        assert_eq!(wait.poll_end(), Some(WrapUpEnd::AgentMovedOn));
    }

    #[test]
    fn the_wait_ends_when_the_wrap_up_time_is_up_and_the_grace_passed() {
        let mut wait = DispositionWait::new(HANG_UP, MAX);
        wait.handle_agent(HANG_UP, in_wrap_up(30));
        wait.handle_timeout(at(30));
        assert_eq!(wait.poll_end(), None, "the desk gets its grace");
        let due = wait.poll_timeout().unwrap();
        assert_eq!(due, at(30).plus_millis(WRAP_UP_GRACE.as_millis() as i64));
        wait.handle_timeout(due);
        assert_eq!(wait.poll_end(), Some(WrapUpEnd::WrapUpExpired));
    }

    #[test]
    fn a_wrap_up_without_an_end_is_bounded_by_the_limit() {
        let mut wait = DispositionWait::new(HANG_UP, MAX);
        wait.handle_agent(
            HANG_UP,
            AgentHolds::Yes {
                saved: None,
                wrap_up_until: None,
            },
        );
        assert_eq!(wait.poll_timeout(), Some(at(600)));
        wait.handle_timeout(at(599));
        assert_eq!(wait.poll_end(), None);
        wait.handle_timeout(at(600));
        assert_eq!(wait.poll_end(), Some(WrapUpEnd::WaitLimit));
    }

    #[test]
    fn a_call_is_waited_for_while_its_guard_lives() {
        let call = CallId::new_v7();
        assert!(!is_waiting(call));
        let guard = waiting_for(call);
        assert!(is_waiting(call));
        drop(guard);
        assert!(!is_waiting(call));
    }
}
