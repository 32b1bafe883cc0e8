//! The link's state as the rest of the box sees it: whether the coordinator is reachable,
//! since when, and why not. The link driver ([`super::link`]) publishes it on a
//! [`tokio::sync::watch`] channel; the status page and telemetry read it.
//!
//! Must not: decide anything about delivery (that is the outbox core's), or hold more than
//! the latest state.

use callgate_common::time::UnixMillis;
use std::sync::Arc;
use tokio::sync::watch;

/// Where the link stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// The box has no identity yet: nothing to connect with.
    NotEnrolled,
    /// Enrolled, started, not connected yet.
    Connecting { since: UnixMillis },
    /// Connected to the broker.
    Online { since: UnixMillis },
    /// Was connected (or tried), lost it; `reason` is the transport's last error.
    Offline { since: UnixMillis, reason: String },
}

/// The latest link state and the figures that go with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStatus {
    /// Where the link stands.
    pub state: LinkState,
    /// When the last message from the coordinator arrived.
    pub last_downlink: Option<UnixMillis>,
}

impl LinkStatus {
    /// The state of a box that is not enrolled.
    pub fn not_enrolled() -> LinkStatus {
        LinkStatus {
            state: LinkState::NotEnrolled,
            last_downlink: None,
        }
    }
}

/// The sending side, shared by the link's restarts.
#[derive(Debug, Clone)]
pub struct LinkStatusCell(Arc<watch::Sender<LinkStatus>>);

impl LinkStatusCell {
    /// A cell starting at `initial`.
    pub fn new(initial: LinkStatus) -> LinkStatusCell {
        LinkStatusCell(Arc::new(watch::channel(initial).0))
    }

    /// A receiver for readers.
    pub fn subscribe(&self) -> watch::Receiver<LinkStatus> {
        self.0.subscribe()
    }

    /// The current status.
    pub fn current(&self) -> LinkStatus {
        self.0.borrow().clone()
    }

    /// The broker accepted the connection at `now`.
    pub fn online(&self, now: UnixMillis) {
        self.0.send_modify(|s| {
            if !matches!(s.state, LinkState::Online { .. }) {
                s.state = LinkState::Online { since: now };
            }
        });
    }

    /// The connection failed or dropped at `now`. Repeated failures keep the first
    /// instant, so "offline since" means since the link was last up.
    pub fn offline(&self, now: UnixMillis, reason: &str) {
        self.0.send_modify(|s| match &mut s.state {
            LinkState::Offline { reason: r, .. } => *r = reason.to_string(),
            LinkState::Connecting { since } => {
                s.state = LinkState::Offline {
                    since: *since,
                    reason: reason.to_string(),
                }
            }
            _ => {
                s.state = LinkState::Offline {
                    since: now,
                    reason: reason.to_string(),
                }
            }
        });
    }

    /// The link is starting at `now` (first start, or after a restart).
    pub fn connecting(&self, now: UnixMillis) {
        self.0.send_modify(|s| {
            if matches!(s.state, LinkState::NotEnrolled) {
                s.state = LinkState::Connecting { since: now };
            }
        });
    }

    /// A downlink message arrived at `now`.
    pub fn downlink(&self, now: UnixMillis) {
        self.0.send_modify(|s| s.last_downlink = Some(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_since_is_when_the_link_was_last_up_not_the_latest_retry() {
        let cell = LinkStatusCell::new(LinkStatus::not_enrolled());
        cell.connecting(UnixMillis(10));
        assert_eq!(
            cell.current().state,
            LinkState::Connecting {
                since: UnixMillis(10)
            }
        );
        cell.offline(UnixMillis(20), "connection refused");
        cell.offline(UnixMillis(30), "timed out");
        assert_eq!(
            cell.current().state,
            LinkState::Offline {
                since: UnixMillis(10),
                reason: "timed out".into()
            },
            "never up: offline since the start, with the latest reason"
        );
        cell.online(UnixMillis(40));
        cell.online(UnixMillis(45));
        assert_eq!(
            cell.current().state,
            LinkState::Online {
                since: UnixMillis(40)
            }
        );
        cell.offline(UnixMillis(50), "broker went away");
        cell.offline(UnixMillis(60), "connection refused");
        assert_eq!(
            cell.current().state,
            LinkState::Offline {
                since: UnixMillis(50),
                reason: "connection refused".into()
            }
        );
    }

    #[test]
    fn a_downlink_is_remembered_and_readers_see_changes() {
        let cell = LinkStatusCell::new(LinkStatus::not_enrolled());
        let mut rx = cell.subscribe();
        cell.downlink(UnixMillis(7));
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().last_downlink, Some(UnixMillis(7)));
    }
}
