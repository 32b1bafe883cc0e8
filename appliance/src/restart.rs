//! A request to restart the daemon in place, after something that changes what it starts
//! with (an enrollment from the web UI, a factory reset). The server stops everything
//! cleanly, then `main` replaces the process with a fresh copy of itself (same program,
//! same arguments, same PID), which then starts with the new identity.
//!
//! Must not: restart anything itself; it only carries the request and its reason.

use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Shared by whoever may ask for a restart and the server, which waits for it.
#[derive(Debug, Clone, Default)]
pub struct RestartSwitch {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    notify: Notify,
    reason: Mutex<Option<String>>,
}

impl RestartSwitch {
    /// A switch nobody has pulled.
    pub fn new() -> RestartSwitch {
        RestartSwitch::default()
    }

    /// Asks for a restart because of `reason`; the first reason is kept.
    pub fn request(&self, reason: &str) {
        let mut r = self.inner.reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some(reason.to_string());
        }
        drop(r);
        self.inner.notify.notify_one();
    }

    /// Waits until a restart is requested and gives its reason.
    pub async fn requested(&self) -> String {
        loop {
            if let Some(reason) = self.reason() {
                return reason;
            }
            self.inner.notify.notified().await;
        }
    }

    /// The reason, when a restart has been requested.
    pub fn reason(&self) -> Option<String> {
        self.inner
            .reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_made_before_anyone_waits_is_not_lost_and_keeps_the_first_reason() {
        let switch = RestartSwitch::new();
        assert_eq!(switch.reason(), None);
        switch.request("enrolled");
        switch.request("factory reset");
        let waiter = switch.clone();
        let reason = tokio::time::timeout(std::time::Duration::from_secs(5), waiter.requested())
            .await
            .expect("the request was remembered");
        assert_eq!(reason, "enrolled");
    }
}
