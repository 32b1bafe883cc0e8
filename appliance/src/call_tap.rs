//! Listening in on live calls from the tech port's headset: every call whose media the box
//! relays (an agent's bridge, a transferred robot call's relay, the dialer's announcement, a
//! robot script, a queued caller on hold, a voicemail) registers a tap point here while that
//! media runs, and the web UI's headset patch asks a
//! tap point for the call as heard — the far end and our side mixed, one frame per packet
//! time — through a [`CallListener`].
//!
//! Listening is one-way: nothing from the headset reaches the call. The media task only
//! copies frames it already has into the listener's queue without waiting (a frame that does
//! not fit is dropped); a listener that goes away is forgotten and the call is untouched;
//! the call's media ending drops the listener's sender, which ends the patch.
//!
//! The points live in one process-wide [`CallTaps`] ([`live`]), like the log ring: the media
//! tasks that make them are deep inside the dialer and the agents' lines, and their settings
//! are built in many places. The dialer's driver and the agents' lines also name a call by
//! its masked number for as long as it runs, so the technician can tell calls apart and match
//! them with the status page's call list.
//!
//! Must not: change a call's media, hold a full phone number, or block a media task.

use callgate_common::ids::CallId;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;
use tokio::sync::mpsc;

/// The sending half a media task holds while someone listens: mixed frames of the call.
pub type CallListener = mpsc::Sender<Vec<i16>>;

/// Frames queued towards a listener before the media task drops new ones (1 s at 20 ms).
pub const LISTEN_QUEUE: usize = 50;

/// Why a call cannot be listened to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TapError {
    /// No media of that call runs on the box (it ended, or never had media here).
    #[error("call {0} is not in progress on this box (it may have ended)")]
    NotInProgress(CallId),
    /// The call's media task is ending and took no listener.
    #[error("call {0} is ending; its audio cannot be listened to")]
    Ending(CallId),
}

/// How a media task takes a listener: `true` when it took it.
pub type Attach = Arc<dyn Fn(CallListener) -> bool + Send + Sync>;

struct TapPoint {
    serial: u64,
    what: String,
    since: Instant,
    attach: Attach,
}

#[derive(Debug, Clone)]
struct CallName {
    serial: u64,
    number: String,
}

#[derive(Default)]
struct Inner {
    serial: u64,
    points: BTreeMap<CallId, TapPoint>,
    names: BTreeMap<CallId, CallName>,
}

/// The tap points of the calls in progress.
#[derive(Clone, Default)]
pub struct CallTaps {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for CallTaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallTaps")
            .field("calls", &self.calls().len())
            .finish()
    }
}

/// A call one can listen to, as the UI lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenableCall {
    /// The call.
    pub call: CallId,
    /// What its media is (e.g. "outbound call bridged to an agent").
    pub what: String,
    /// Its number, masked, when the box knows it.
    pub number: Option<String>,
    /// Since when its media runs here.
    pub since: Instant,
}

/// Keeps a tap point (or a call's name) registered; dropping it removes it.
#[must_use = "the tap point is removed when this is dropped"]
pub struct TapRegistration {
    taps: CallTaps,
    call: CallId,
    serial: u64,
    name: bool,
}

impl std::fmt::Debug for TapRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TapRegistration({}, {})", self.call, self.serial)
    }
}

impl Drop for TapRegistration {
    fn drop(&mut self) {
        let mut inner = self.taps.lock();
        if self.name {
            remove_if(&mut inner.names, self.call, |n| n.serial == self.serial);
        } else {
            remove_if(&mut inner.points, self.call, |p| p.serial == self.serial);
        }
    }
}

fn remove_if<V>(map: &mut BTreeMap<CallId, V>, call: CallId, ours: impl Fn(&V) -> bool) {
    if map.get(&call).is_some_and(ours) {
        map.remove(&call);
    }
}

/// The box's tap points.
pub fn live() -> &'static CallTaps {
    static LIVE: OnceLock<CallTaps> = OnceLock::new();
    LIVE.get_or_init(CallTaps::default)
}

impl CallTaps {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A media task for `call` runs from now on and takes listeners through `attach`; `what`
    /// says what it is. A later registration of the same call replaces this one (the call's
    /// media moved, e.g. from the queue's hold music to an agent).
    pub fn register(
        &self,
        call: CallId,
        what: impl Into<String>,
        attach: impl Fn(CallListener) -> bool + Send + Sync + 'static,
    ) -> TapRegistration {
        let mut inner = self.lock();
        inner.serial += 1;
        let serial = inner.serial;
        inner.points.insert(
            call,
            TapPoint {
                serial,
                what: what.into(),
                since: Instant::now(),
                attach: Arc::new(attach),
            },
        );
        drop(inner);
        TapRegistration {
            taps: self.clone(),
            call,
            serial,
            name: false,
        }
    }

    /// Names `call` by its number, masked, for as long as the registration is kept.
    pub fn name(&self, call: CallId, masked_number: impl Into<String>) -> TapRegistration {
        let mut inner = self.lock();
        inner.serial += 1;
        let serial = inner.serial;
        inner.names.insert(
            call,
            CallName {
                serial,
                number: masked_number.into(),
            },
        );
        drop(inner);
        TapRegistration {
            taps: self.clone(),
            call,
            serial,
            name: true,
        }
    }

    /// The calls one can listen to now, oldest first.
    pub fn calls(&self) -> Vec<ListenableCall> {
        let inner = self.lock();
        let mut calls: Vec<ListenableCall> = inner
            .points
            .iter()
            .map(|(call, p)| {
                let name = inner.names.get(call);
                ListenableCall {
                    call: *call,
                    what: p.what.clone(),
                    number: name.map(|n| n.number.clone()),
                    since: p.since,
                }
            })
            .collect();
        calls.sort_by_key(|c| c.since);
        calls
    }

    /// Starts listening to `call`: its mixed frames come out of the receiver until the call's
    /// media ends (the receiver then yields `None`) or the receiver is dropped (listening
    /// stops, the call goes on). A call takes one listener; a new one replaces the old.
    pub fn listen(&self, call: CallId) -> Result<mpsc::Receiver<Vec<i16>>, TapError> {
        let attach = self
            .lock()
            .points
            .get(&call)
            .map(|p| p.attach.clone())
            .ok_or(TapError::NotInProgress(call))?;
        let (tx, rx) = mpsc::channel(LISTEN_QUEUE);
        if attach(tx) {
            Ok(rx)
        } else {
            Err(TapError::Ending(call))
        }
    }
}

/// The call as heard: `far` and `ours` (either may be missing: silence) added sample by
/// sample with saturation, `frame` samples long.
pub fn mixed(far: Option<&[i16]>, ours: Option<&[i16]>, frame: usize) -> Vec<i16> {
    let mut out = vec![0i16; frame];
    for side in [far, ours].into_iter().flatten() {
        callgate_media::tone::mix_into(&mut out, side);
    }
    out
}

/// Hands `frame` to `listener` without waiting; forgets the listener once it has gone (the
/// headset stopped), never blocking or failing the call. A full queue drops the frame.
pub fn offer(listener: &mut Option<CallListener>, frame: Vec<i16>) {
    if let Some(l) = listener {
        if let Err(mpsc::error::TrySendError::Closed(_)) = l.try_send(frame) {
            *listener = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_call_as_heard_is_both_sides_added_with_saturation() {
        let far = [1_000i16, -2_000, 30_000, 5];
        let ours = [10i16, 20, 10_000];
        assert_eq!(
            mixed(Some(&far), Some(&ours), 4),
            vec![1_010, -1_980, i16::MAX, 5]
        );
        assert_eq!(mixed(None, Some(&ours), 4), vec![10, 20, 10_000, 0]);
        assert_eq!(mixed(None, None, 2), vec![0, 0]);
    }

    #[tokio::test]
    async fn a_listener_gets_the_calls_frames_until_the_media_ends_and_stopping_forgets_it() {
        let taps = CallTaps::default();
        let call = CallId::new_v7();
        assert_eq!(
            taps.listen(call).unwrap_err(),
            TapError::NotInProgress(call)
        );

        // The media task: takes listeners over a channel, as a bridge takes commands.
        let (attach_tx, mut attach_rx) = mpsc::unbounded_channel::<CallListener>();
        let point = taps.register(call, "test media", move |l| attach_tx.send(l).is_ok());
        let _name = taps.name(call, "+44 207****1234");
        let listed = taps.calls();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].number.as_deref(), Some("+44 207****1234"));

        let mut heard = taps.listen(call).unwrap();
        let mut listener = attach_rx.recv().await;
        offer(&mut listener, vec![1; 160]);
        assert_eq!(heard.recv().await.unwrap(), vec![1; 160]);
        // Stopping (the receiver dropped): the media task forgets the listener at its next
        // frame and goes on.
        drop(heard);
        offer(&mut listener, vec![2; 160]);
        assert!(listener.is_none(), "a stopped listener is forgotten");

        // Listening again, then the call's media ends: the listener hears the end.
        let mut heard = taps.listen(call).unwrap();
        let listener = attach_rx.recv().await;
        drop(listener);
        drop(point);
        assert_eq!(
            heard.recv().await,
            None,
            "the call's end ends the listening"
        );
        assert!(taps.calls().is_empty());
        assert_eq!(
            taps.listen(call).unwrap_err(),
            TapError::NotInProgress(call)
        );
    }

    #[test]
    fn a_stale_registration_does_not_remove_the_calls_newer_tap_point() {
        let taps = CallTaps::default();
        let call = CallId::new_v7();
        let old = taps.register(call, "hold music", |_| true);
        let _new = taps.register(call, "bridged to an agent", |_| true);
        drop(old);
        let listed = taps.calls();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].what, "bridged to an agent");
    }
}
