//! The calls the trunk router carries right now, one line each (masked number, trunk,
//! direction, phase, since when), for the status page. Pure state fed by what passes through
//! the router's driver: the dial commands it takes and the events it gives out; time is
//! passed in. The agents' SIP side keeps one too, of the inbound calls it is offered (its
//! user agent's `Incoming`/`Answered`/`Failed`/`Ended` events; its calls to the agents'
//! own phones are not listed). Numbers are kept masked only ([`PhoneNumber::masked`]): the view never holds a
//! full number.
//!
//! Must not: act on calls or hold anything but what the status page shows.

use callgate_common::phone::PhoneNumber;
use callgate_sip::agent::{AgentEvent, LegId};
use callgate_sip::trunk::router::{AttemptId, DialEvent};
use std::collections::BTreeMap;
use std::time::Instant;

/// Which way a call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallDirection {
    /// Placed by the box (the dialer, a robot call) to a carrier.
    Outbound,
    /// A caller offered to the agents' SIP side (an agent group's call).
    Inbound,
}

/// How far a call has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallPhase {
    /// Sent, no answer or ringing yet.
    Trying,
    /// Ringing or early media.
    Ringing,
    /// Answered.
    Up,
}

/// One call in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveCall {
    /// The router's attempt (`None` for an inbound call on the agents' side).
    pub attempt: Option<AttemptId>,
    /// The number, masked (`+44 207****1234`): the called number of an outbound call, the
    /// caller's of an inbound one.
    pub number: String,
    /// The trunk carrying it, once one answered the INVITE with more than 100 Trying.
    pub trunk: Option<String>,
    /// Which way it goes.
    pub direction: CallDirection,
    /// How far it has got.
    pub phase: CallPhase,
    /// When it was placed.
    pub started: Instant,
    /// When it was answered.
    pub answered: Option<Instant>,
}

/// What a listed call is known by: the router's attempt or the agents' side's leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum CallKey {
    Attempt(u64),
    Leg(u64),
}

/// The calls in progress, in the order they started.
#[derive(Debug, Default)]
pub struct LiveCalls {
    calls: BTreeMap<CallKey, LiveCall>,
    changed: bool,
}

/// The caller's user part of a From URI (`<sip:+442071234567@carrier>;tag=1`).
fn caller_of(from: &str) -> &str {
    let rest = from.trim();
    let rest = match rest.find('<') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    let rest = ["sips:", "sip:", "tel:"]
        .iter()
        .find_map(|s| rest.strip_prefix(s))
        .unwrap_or(rest);
    rest.split(['@', ';', '>']).next().unwrap_or("")
}

/// A number as the status page may show it: masked when it parses as a phone number,
/// otherwise all but its first three and last two characters starred.
pub fn masked_number(number: &str) -> String {
    if let Ok(n) = PhoneNumber::parse(number, None) {
        return n.masked();
    }
    let chars: Vec<char> = number.chars().collect();
    if chars.len() <= 5 {
        return "*".repeat(chars.len());
    }
    let (head, rest) = chars.split_at(3);
    let (middle, tail) = rest.split_at(rest.len() - 2);
    format!(
        "{}{}{}",
        head.iter().collect::<String>(),
        "*".repeat(middle.len()),
        tail.iter().collect::<String>()
    )
}

impl LiveCalls {
    /// The router took a dial command for `number` and made it `attempt`.
    pub fn dialled(&mut self, now: Instant, attempt: AttemptId, number: &str) {
        self.calls.insert(
            CallKey::Attempt(attempt.0),
            LiveCall {
                attempt: Some(attempt),
                number: masked_number(number),
                trunk: None,
                direction: CallDirection::Outbound,
                phase: CallPhase::Trying,
                started: now,
                answered: None,
            },
        );
        self.changed = true;
    }

    /// An event the router gave out; events about attempts not dialled here are ignored.
    pub fn on_event(&mut self, now: Instant, event: &DialEvent) {
        match event {
            DialEvent::Progress { attempt, trunk, .. } => {
                if let Some(c) = self.calls.get_mut(&CallKey::Attempt(attempt.0)) {
                    if c.phase == CallPhase::Trying || c.trunk.as_deref() != Some(trunk) {
                        c.phase = CallPhase::Ringing;
                        c.trunk = Some(trunk.clone());
                        self.changed = true;
                    }
                }
            }
            DialEvent::Answered { attempt, trunk, .. } => {
                if let Some(c) = self.calls.get_mut(&CallKey::Attempt(attempt.0)) {
                    c.phase = CallPhase::Up;
                    c.trunk = Some(trunk.clone());
                    c.answered = Some(now);
                    self.changed = true;
                }
            }
            DialEvent::Failed { attempt, .. } | DialEvent::Ended { attempt, .. } => {
                self.changed |= self.calls.remove(&CallKey::Attempt(attempt.0)).is_some();
            }
            _ => {}
        }
    }

    /// An event of the agents' SIP side: an inbound call is listed from its INVITE
    /// (ringing) to its end, up once answered; events about other legs (the agents' own
    /// phones) are ignored.
    pub fn on_agent_event(&mut self, now: Instant, event: &AgentEvent) {
        match event {
            AgentEvent::Incoming {
                leg, from, trunk, ..
            } => {
                self.calls.insert(
                    CallKey::Leg(leg.0),
                    LiveCall {
                        attempt: None,
                        number: masked_number(caller_of(from)),
                        trunk: trunk.clone(),
                        direction: CallDirection::Inbound,
                        phase: CallPhase::Ringing,
                        started: now,
                        answered: None,
                    },
                );
                self.changed = true;
            }
            AgentEvent::Answered { leg, .. } => {
                if let Some(c) = self.calls.get_mut(&CallKey::Leg(leg.0)) {
                    c.phase = CallPhase::Up;
                    c.answered = Some(now);
                    self.changed = true;
                }
            }
            AgentEvent::Failed { leg, .. } | AgentEvent::Ended { leg, .. } => {
                self.inbound_gone(*leg);
            }
            _ => {}
        }
    }

    /// The box refused an inbound call (`leg`) on the agents' side.
    pub fn inbound_gone(&mut self, leg: LegId) {
        self.changed |= self.calls.remove(&CallKey::Leg(leg.0)).is_some();
    }

    /// The calls in progress, oldest first.
    pub fn list(&self) -> Vec<LiveCall> {
        let mut calls: Vec<LiveCall> = self.calls.values().cloned().collect();
        calls.sort_by_key(|c| c.started);
        calls
    }

    /// Whether the list changed since the last call (and resets the mark).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_call_is_listed_masked_from_dial_to_answer_and_gone_when_it_ends() {
        let mut calls = LiveCalls::default();
        let t0 = Instant::now();
        let a = AttemptId(7);
        calls.dialled(t0, a, "+442071234567");
        assert!(calls.take_changed());
        let list = calls.list();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].phase, CallPhase::Trying);
        assert_eq!(list[0].trunk, None);
        assert!(!list[0].number.contains("2071234567"), "{}", list[0].number);
        assert_eq!(
            list[0].number,
            PhoneNumber::parse("+442071234567", None).unwrap().masked()
        );
        calls.on_event(
            t0 + Duration::from_millis(200),
            &DialEvent::Progress {
                attempt: a,
                trunk: "carrier".into(),
                status: 180,
                body: Vec::new(),
            },
        );
        assert!(calls.take_changed());
        assert_eq!(calls.list()[0].phase, CallPhase::Ringing);
        assert_eq!(calls.list()[0].trunk.as_deref(), Some("carrier"));
        let up = t0 + Duration::from_secs(2);
        calls.on_event(
            up,
            &DialEvent::Answered {
                attempt: a,
                trunk: "carrier".into(),
                body: Vec::new(),
            },
        );
        assert_eq!(calls.list()[0].phase, CallPhase::Up);
        assert_eq!(calls.list()[0].answered, Some(up));
        assert_eq!(calls.list()[0].started, t0);
        // Events about other attempts change nothing.
        calls.take_changed();
        calls.on_event(
            up,
            &DialEvent::Ended {
                attempt: AttemptId(8),
                by_peer: true,
            },
        );
        assert!(!calls.take_changed());
        calls.on_event(
            up,
            &DialEvent::Ended {
                attempt: a,
                by_peer: true,
            },
        );
        assert!(calls.take_changed());
        assert!(calls.list().is_empty());
    }

    #[test]
    fn an_inbound_call_is_listed_by_its_callers_masked_number_until_it_ends() {
        let mut calls = LiveCalls::default();
        let t0 = Instant::now();
        let incoming = |leg: u64, from: &str| AgentEvent::Incoming {
            leg: LegId(leg),
            from: from.into(),
            number: "4930777".into(),
            trunk: Some("carrier".into()),
            target: callgate_sip::inbound::RouteTarget::AgentGroup("support".into()),
            body: Vec::new(),
        };
        calls.on_agent_event(t0, &incoming(3, "<sip:+442071234567@carrier>;tag=x"));
        assert!(calls.take_changed());
        let list = calls.list();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].direction, CallDirection::Inbound);
        assert_eq!(list[0].trunk.as_deref(), Some("carrier"));
        assert_eq!(list[0].phase, CallPhase::Ringing);
        assert_eq!(
            list[0].number,
            PhoneNumber::parse("+442071234567", None).unwrap().masked()
        );
        // The agents' own phone answering its nailed-up leg is not a listed call.
        calls.on_agent_event(
            t0,
            &AgentEvent::Answered {
                leg: LegId(1),
                body: Vec::new(),
            },
        );
        assert!(!calls.take_changed());
        let up = t0 + Duration::from_secs(1);
        calls.on_agent_event(
            up,
            &AgentEvent::Answered {
                leg: LegId(3),
                body: Vec::new(),
            },
        );
        assert_eq!(calls.list()[0].phase, CallPhase::Up);
        assert_eq!(calls.list()[0].answered, Some(up));
        // Beside an outbound call, in the order they started.
        calls.dialled(up, AttemptId(3), "+442079460000");
        let list = calls.list();
        assert_eq!(
            list.len(),
            2,
            "the same number as a leg and an attempt: two calls"
        );
        assert_eq!(list[0].direction, CallDirection::Inbound);
        assert_eq!(list[1].direction, CallDirection::Outbound);
        calls.on_agent_event(
            up,
            &AgentEvent::Ended {
                leg: LegId(3),
                by_peer: true,
            },
        );
        assert_eq!(calls.list().len(), 1);
        assert_eq!(calls.list()[0].direction, CallDirection::Outbound);
        // A refused one leaves too; odd callers are starred.
        calls.on_agent_event(t0, &incoming(4, "sip:anonymous@anonymous.invalid"));
        assert_eq!(calls.list()[0].number, "ano****us");
        calls.inbound_gone(LegId(4));
        assert_eq!(calls.list().len(), 1);
    }

    #[test]
    fn a_failed_attempt_leaves_the_list_and_odd_numbers_are_still_masked() {
        let mut calls = LiveCalls::default();
        let t0 = Instant::now();
        calls.dialled(t0, AttemptId(1), "4930123456");
        assert_eq!(calls.list()[0].number, "493*****56");
        calls.on_event(
            t0,
            &DialEvent::Failed {
                attempt: AttemptId(1),
                status: 486,
                reason: "Busy Here".into(),
                tried: vec!["carrier".into()],
            },
        );
        assert!(calls.list().is_empty());
        assert_eq!(masked_number("12345"), "*****");
    }
}
