//! The sync outbox and inbox: sans-IO cores shared by both halves (DESIGN.md principle 3).
//!
//! Owns the *decisions* of reliable, ordered, exactly-once delivery over MQTT: which stored
//! message goes next, which sequence number it gets, what a cumulative ack releases, when to
//! go back and resend, when telemetry is coalesced, when the disk quota alarm rises. It owns
//! no storage, no socket and no clock: the caller persists what the core decides (the
//! appliance in SQLite, the coordinator in its database), publishes what it hands out, and
//! passes `now` in. Nothing here imports tokio.
//!
//! ## How a message travels
//! 1. [`Outbox::enqueue`] admits a message of a [`Class`] and gives it an [`EntryId`]; the
//!    caller stores the body under that id (and deletes the entry it replaced, for
//!    telemetry) in one transaction. Over the quota it is refused, never silently dropped.
//! 2. [`Outbox::poll_transmit`] hands out the next message to publish. A message gets its
//!    sequence number only when it is first handed out — records before telemetry, oldest
//!    first — so the send order *is* the sequence order and the receiver can insist on
//!    `seq == high_water + 1`. The caller persists the number before publishing.
//! 3. [`Outbox::handle_ack`] with a cumulative `up_to` releases every message `<= up_to`.
//! 4. On reconnect ([`Outbox::handle_connected`]) and when acks stop progressing for
//!    [`OutboxConfig::resend_after`] ([`Outbox::handle_timeout`]), everything unacknowledged
//!    is sent again from the oldest (go-back-N). Each such resend doubles the wait before
//!    the next (up to [`RESEND_BACKOFF_MAX`] times `resend_after`), so a receiver that is
//!    merely slow — a thousand boxes' backlog, acks trickling in — is not buried under
//!    copies of what it already has queued; the wait returns to `resend_after` only when
//!    everything outstanding is acknowledged, or on a reconnect. The MQTT client's own in-flight queue is
//!    never trusted: rumqttc drops it when the broker answers `session_present=0`.
//!
//! The receiving side keeps one [`Inbox`] per peer: [`Inbox::classify`] says whether an
//! envelope is the next one to apply, a replay, or ahead of a gap; the caller applies it and
//! records the new high-water mark in one database transaction, then calls
//! [`Inbox::applied`]; [`Inbox::poll_ack`] says when to send a cumulative ack.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Identifies one stored message inside one outbox (the row id where the caller stores it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId(pub u64);

/// How urgent a message is. Lower classes are always sent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// Call records, attempt results, compliance events, and all downlink: never coalesced.
    Record = 0,
    /// Telemetry: sent after records; coalesced (latest wins) while queued.
    Telemetry = 1,
}

impl Class {
    /// The class as stored in a database column.
    pub fn as_i64(self) -> i64 {
        self as i64
    }

    /// The class a stored column names; `None` for an unknown value.
    pub fn from_i64(v: i64) -> Option<Class> {
        match v {
            0 => Some(Class::Record),
            1 => Some(Class::Telemetry),
            _ => None,
        }
    }
}

/// Why the outbox refused something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// Accepting the message would take the outbox over its disk quota; the caller keeps
    /// the message where it was (nothing accepted is lost) and the alarm is already up.
    #[error("outbox full: {used} of {quota} bytes used, a {size}-byte message does not fit")]
    QuotaExceeded { used: u64, quota: u64, size: u64 },
    /// The peer acknowledged a sequence number that was never sent.
    #[error("ack up to {up_to} is beyond the last sequence number handed out ({last_sent})")]
    AckBeyondSent { up_to: u64, last_sent: u64 },
    /// A stored entry could not be restored (duplicate id or sequence number).
    #[error("stored outbox entry {0:?} conflicts with another")]
    CorruptStore(EntryId),
}

/// The longest wait between resends without ack progress, as a multiple of
/// [`OutboxConfig::resend_after`].
pub const RESEND_BACKOFF_MAX: u32 = 8;

/// Tuning for an [`Outbox`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxConfig {
    /// At most this many sequenced, unacknowledged messages at a time. Messages beyond the
    /// window keep no sequence number, so they can still be reordered by class and coalesced.
    pub window: usize,
    /// With messages unacknowledged and no ack progress for this long, resend from the
    /// oldest.
    pub resend_after: Duration,
    /// Bytes of stored bodies the outbox may hold.
    pub quota_bytes: u64,
    /// The alarm rises when use reaches this share of the quota, in percent.
    pub alarm_percent: u8,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            window: 256,
            resend_after: Duration::from_secs(10),
            quota_bytes: 512 * 1024 * 1024,
            alarm_percent: 80,
        }
    }
}

/// A message entering the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// Its class.
    pub class: Class,
    /// For [`Class::Telemetry`]: an unsent entry with the same key is replaced.
    pub coalesce_key: Option<String>,
    /// Encoded body size in bytes, counted against the quota.
    pub size: u64,
}

/// What [`Outbox::enqueue`] decided; the caller stores and deletes accordingly, in one
/// transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    /// Store the new body under this id.
    pub id: EntryId,
    /// Delete this older, never-sent entry: it has been coalesced away.
    pub replaced: Option<EntryId>,
}

/// A message restored from storage at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// Its id.
    pub id: EntryId,
    /// Its class.
    pub class: Class,
    /// Its coalescing key, if any.
    pub coalesce_key: Option<String>,
    /// Body size in bytes.
    pub size: u64,
    /// Its sequence number, when one was assigned before the restart.
    pub seq: Option<u64>,
}

/// One message to publish now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// The stored entry whose body to publish.
    pub id: EntryId,
    /// The envelope's sequence number.
    pub seq: u64,
    /// True when this is the first time the entry was handed out: the caller must persist
    /// the `id → seq` assignment before publishing.
    pub newly_sequenced: bool,
}

/// Something the outbox wants the operator to know.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutboxEvent {
    /// Use crossed [`OutboxConfig::alarm_percent`] of the quota.
    QuotaAlarmRaised { used: u64, quota: u64 },
    /// Use fell back under the alarm level.
    QuotaAlarmCleared { used: u64, quota: u64 },
}

#[derive(Debug, Clone)]
struct Pending {
    class: Class,
    coalesce_key: Option<String>,
    size: u64,
}

/// The sending side of one direction of one link. See the module doc.
#[derive(Debug)]
pub struct Outbox {
    config: OutboxConfig,
    next_entry: u64,
    next_seq: u64,
    acked: u64,
    /// Not yet sequenced, per class, oldest first.
    pending: BTreeMap<(Class, EntryId), Pending>,
    coalesce: HashMap<String, EntryId>,
    /// Sequenced and unacknowledged: seq → (entry, size).
    sequenced: BTreeMap<u64, (EntryId, u64)>,
    /// The next sequenced message to (re)send in this connection.
    cursor: u64,
    connected: bool,
    last_progress: Option<Instant>,
    /// The current wait between resends, as a multiple of `resend_after`: 1 once everything
    /// is acknowledged or after a reconnect, doubled by each resend up to
    /// [`RESEND_BACKOFF_MAX`].
    backoff: u32,
    used: u64,
    alarm: bool,
    events: VecDeque<OutboxEvent>,
}

impl Outbox {
    /// An empty outbox whose first message will get sequence number `acked + 1`.
    pub fn new(config: OutboxConfig, acked: u64) -> Outbox {
        Outbox {
            config,
            next_entry: 1,
            next_seq: acked + 1,
            acked,
            pending: BTreeMap::new(),
            coalesce: HashMap::new(),
            sequenced: BTreeMap::new(),
            cursor: acked + 1,
            connected: false,
            last_progress: None,
            backoff: 1,
            used: 0,
            alarm: false,
            events: VecDeque::new(),
        }
    }

    /// Rebuilds an outbox from storage after a restart. `acked` is the persisted cumulative
    /// ack; entries at or below it are reported back as already released (delete them).
    /// Returns the outbox and the ids to delete (acked, or coalesced away).
    pub fn restore(
        config: OutboxConfig,
        acked: u64,
        entries: impl IntoIterator<Item = StoredEntry>,
    ) -> Result<(Outbox, Vec<EntryId>), OutboxError> {
        let mut outbox = Outbox::new(config, acked);
        let mut entries: Vec<StoredEntry> = entries.into_iter().collect();
        entries.sort_by_key(|e| e.id);
        let mut delete = Vec::new();
        let mut seen = BTreeSet::new();
        for e in entries {
            if !seen.insert(e.id) {
                return Err(OutboxError::CorruptStore(e.id));
            }
            outbox.next_entry = outbox.next_entry.max(e.id.0 + 1);
            match e.seq {
                Some(seq) if seq <= acked => delete.push(e.id),
                Some(seq) => {
                    if outbox.sequenced.insert(seq, (e.id, e.size)).is_some() {
                        return Err(OutboxError::CorruptStore(e.id));
                    }
                    outbox.next_seq = outbox.next_seq.max(seq + 1);
                    outbox.used += e.size;
                }
                None => {
                    if let Some(old) = outbox.insert_pending(e.id, e.class, e.coalesce_key, e.size)
                    {
                        delete.push(old);
                    }
                }
            }
        }
        outbox.check_alarm();
        Ok((outbox, delete))
    }

    /// Admits a message. Telemetry with a coalescing key replaces the unsent one with the
    /// same key (even over the quota, since it never grows use by more than the difference).
    pub fn enqueue(&mut self, entry: NewEntry) -> Result<Enqueued, OutboxError> {
        let replaces = entry
            .coalesce_key
            .as_ref()
            .filter(|_| entry.class == Class::Telemetry)
            .and_then(|k| self.coalesce.get(k))
            .and_then(|id| self.pending.get(&(Class::Telemetry, *id)))
            .map(|p| p.size)
            .unwrap_or(0);
        let after = self.used - replaces + entry.size;
        if after > self.config.quota_bytes {
            self.check_alarm();
            return Err(OutboxError::QuotaExceeded {
                used: self.used,
                quota: self.config.quota_bytes,
                size: entry.size,
            });
        }
        let id = EntryId(self.next_entry);
        self.next_entry += 1;
        let replaced = self.insert_pending(id, entry.class, entry.coalesce_key, entry.size);
        self.check_alarm();
        Ok(Enqueued { id, replaced })
    }

    fn insert_pending(
        &mut self,
        id: EntryId,
        class: Class,
        coalesce_key: Option<String>,
        size: u64,
    ) -> Option<EntryId> {
        let mut replaced = None;
        if class == Class::Telemetry {
            if let Some(key) = &coalesce_key {
                if let Some(old) = self.coalesce.insert(key.clone(), id) {
                    if let Some(p) = self.pending.remove(&(Class::Telemetry, old)) {
                        self.used -= p.size;
                        replaced = Some(old);
                    }
                }
            }
        }
        self.used += size;
        self.pending.insert(
            (class, id),
            Pending {
                class,
                coalesce_key,
                size,
            },
        );
        replaced
    }

    /// Takes back an entry [`Outbox::enqueue`] admitted but the caller failed to store, so
    /// that the core never hands out an id with no body behind it. Only unsent entries can
    /// be taken back; returns whether one was.
    pub fn cancel(&mut self, id: EntryId) -> bool {
        let key = self.pending.keys().find(|(_, pid)| *pid == id).copied();
        match key.and_then(|k| self.pending.remove(&k)) {
            Some(p) => {
                if let Some(k) = &p.coalesce_key {
                    if self.coalesce.get(k) == Some(&id) {
                        self.coalesce.remove(k);
                    }
                }
                self.used -= p.size;
                self.check_alarm();
                true
            }
            None => false,
        }
    }

    /// The link came up (or came back). Everything unacknowledged will be sent again,
    /// oldest first, before anything new.
    pub fn handle_connected(&mut self, now: Instant) {
        self.connected = true;
        self.cursor = self.acked + 1;
        self.last_progress = Some(now);
        self.backoff = 1;
    }

    /// The link went down: nothing is handed out until [`Outbox::handle_connected`].
    pub fn handle_disconnected(&mut self) {
        self.connected = false;
    }

    /// A cumulative ack from the peer. Returns the entries it released, for deletion.
    /// An ack at or below the current one is a harmless repeat.
    pub fn handle_ack(&mut self, now: Instant, up_to: u64) -> Result<Vec<EntryId>, OutboxError> {
        let last_sent = self.next_seq - 1;
        if up_to > last_sent {
            return Err(OutboxError::AckBeyondSent { up_to, last_sent });
        }
        if up_to <= self.acked {
            return Ok(Vec::new());
        }
        let keep = self.sequenced.split_off(&(up_to + 1));
        let released = std::mem::replace(&mut self.sequenced, keep);
        self.acked = up_to;
        self.cursor = self.cursor.max(up_to + 1);
        self.last_progress = Some(now);
        if self.sequenced.is_empty() {
            self.backoff = 1;
        }
        let mut ids = Vec::with_capacity(released.len());
        for (_, (id, size)) in released {
            self.used -= size;
            ids.push(id);
        }
        self.check_alarm();
        Ok(ids)
    }

    /// Drives the resend timer: with messages outstanding and no ack progress for
    /// [`OutboxConfig::resend_after`] (doubled after each such resend, see the module doc),
    /// go back to the oldest unacknowledged message.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.connected || self.sequenced.is_empty() {
            return;
        }
        if let Some(at) = self.poll_timeout() {
            if now >= at {
                self.cursor = self.acked + 1;
                self.last_progress = Some(now);
                self.backoff = (self.backoff * 2).min(RESEND_BACKOFF_MAX);
            }
        }
    }

    /// When [`Outbox::handle_timeout`] next needs calling, if at all.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.connected || self.sequenced.is_empty() {
            return None;
        }
        self.last_progress
            .map(|t| t + self.config.resend_after * self.backoff)
    }

    /// The next message to publish, if the link is up and one is due.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if !self.connected {
            return None;
        }
        if let Some((&seq, &(id, _))) = self.sequenced.range(self.cursor..).next() {
            self.cursor = seq + 1;
            return Some(Transmit {
                id,
                seq,
                newly_sequenced: false,
            });
        }
        if self.sequenced.len() >= self.config.window {
            return None;
        }
        let (&(class, id), _) = self.pending.iter().next()?;
        let p = self.pending.remove(&(class, id))?;
        if let Some(key) = &p.coalesce_key {
            if self.coalesce.get(key) == Some(&id) {
                self.coalesce.remove(key);
            }
        }
        debug_assert_eq!(p.class, class);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.sequenced.insert(seq, (id, p.size));
        self.cursor = seq + 1;
        Some(Transmit {
            id,
            seq,
            newly_sequenced: true,
        })
    }

    /// The next operator-facing event, if any.
    pub fn poll_event(&mut self) -> Option<OutboxEvent> {
        self.events.pop_front()
    }

    fn check_alarm(&mut self) {
        let level = self.config.quota_bytes / 100 * u64::from(self.config.alarm_percent);
        let over = self.used >= level;
        if over != self.alarm {
            self.alarm = over;
            let (used, quota) = (self.used, self.config.quota_bytes);
            self.events.push_back(if over {
                OutboxEvent::QuotaAlarmRaised { used, quota }
            } else {
                OutboxEvent::QuotaAlarmCleared { used, quota }
            });
        }
    }

    /// Whether the link is up (between [`Outbox::handle_connected`] and
    /// [`Outbox::handle_disconnected`]).
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The highest sequence number the peer has acknowledged.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Messages stored: sequenced and not.
    pub fn depth(&self) -> usize {
        self.pending.len() + self.sequenced.len()
    }

    /// Bytes of stored bodies.
    pub fn used_bytes(&self) -> u64 {
        self.used
    }

    /// Whether the quota alarm is up.
    pub fn alarm_raised(&self) -> bool {
        self.alarm
    }
}

/// What to do with a received envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The next in order: apply it and record `seq` as the new high-water mark, atomically.
    Apply,
    /// Already applied (a replay): drop it, but re-acknowledge so the sender can let go.
    Duplicate,
    /// Ahead of a gap (an earlier message was lost on the way): drop it; the sender resends
    /// from the gap.
    Gap { expected: u64 },
    /// Sequence number 0 is for unsequenced messages (acks, hello): handle, never record.
    Unsequenced,
}

/// The receiving side of one direction of one link. See the module doc.
#[derive(Debug, Clone)]
pub struct Inbox {
    applied: u64,
    acked: u64,
    ack_due: Option<Instant>,
    ack_delay: Duration,
    ack_every: u64,
}

impl Inbox {
    /// An inbox whose peer's messages up to `applied` are already applied. Acks go out
    /// after `ack_delay`, or at once when `ack_every` messages are waiting for one.
    pub fn new(applied: u64, ack_delay: Duration, ack_every: u64) -> Inbox {
        Inbox {
            applied,
            acked: applied,
            ack_due: None,
            ack_delay,
            ack_every: ack_every.max(1),
        }
    }

    /// Classifies an envelope's sequence number.
    pub fn classify(&mut self, now: Instant, seq: u64) -> Verdict {
        if seq == 0 {
            Verdict::Unsequenced
        } else if seq <= self.applied {
            // Re-ack at once: the sender is resending because it missed our ack.
            self.acked = self.acked.min(seq.saturating_sub(1));
            self.ack_due = Some(now);
            Verdict::Duplicate
        } else if seq == self.applied + 1 {
            Verdict::Apply
        } else {
            Verdict::Gap {
                expected: self.applied + 1,
            }
        }
    }

    /// The caller committed `seq` (returned [`Verdict::Apply`]).
    pub fn applied(&mut self, now: Instant, seq: u64) {
        debug_assert_eq!(seq, self.applied + 1);
        self.applied = seq;
        if self.applied - self.acked >= self.ack_every {
            self.ack_due = Some(now);
        } else if self.ack_due.is_none() {
            self.ack_due = Some(now + self.ack_delay);
        }
    }

    /// The high-water mark when the peer (re)connects, so the next ack repeats it.
    pub fn peer_reconnected(&mut self, now: Instant) {
        self.acked = 0;
        self.ack_due = Some(now);
    }

    /// When an ack is next due, if one is.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.ack_due
    }

    /// A cumulative ack to send now, if one is due.
    pub fn poll_ack(&mut self, now: Instant) -> Option<u64> {
        match self.ack_due {
            Some(at) if now >= at && self.applied > 0 => {
                self.ack_due = None;
                self.acked = self.applied;
                Some(self.applied)
            }
            Some(at) if now >= at => {
                self.ack_due = None;
                None
            }
            _ => None,
        }
    }

    /// The highest sequence number applied.
    pub fn high_water(&self) -> u64 {
        self.applied
    }
}

/// The clock check: how far the peer's clock (`sent_at` in its envelope) is from ours, and
/// whether that is over the alarm threshold. Leases and grants depend on time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockSkew {
    /// `peer - local` in milliseconds (positive: the peer is ahead). Includes the transit
    /// time, so thresholds should be seconds, not milliseconds.
    pub skew_ms: i64,
    /// Whether `|skew_ms|` is over the threshold.
    pub alarm: bool,
}

impl ClockSkew {
    /// Compares a peer's timestamp with the local clock.
    pub fn measure(
        peer: crate::time::UnixMillis,
        local: crate::time::UnixMillis,
        threshold: Duration,
    ) -> ClockSkew {
        let skew_ms = peer.millis_since(local);
        let limit = i64::try_from(threshold.as_millis()).unwrap_or(i64::MAX);
        ClockSkew {
            skew_ms,
            alarm: skew_ms.unsigned_abs() > limit.unsigned_abs(),
        }
    }
}

#[cfg(test)]
mod tests;
