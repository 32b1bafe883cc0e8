//! The user agent's live call legs, kept so that the work per message and per timer does
//! not grow with the number of calls up: legs are found by Call-ID, and the clock is served
//! from a timeline of each leg's next deadline (ring and CANCEL give-up, 2xx and reliable
//! provisional retransmission, session timer, glare retry) instead of visiting every leg.
//!
//! Every change to a leg goes through [`Legs::get_mut`] or [`Legs::insert`], which mark it
//! touched; [`Legs::settle`] moves touched legs to their new place on the timeline. Until
//! then [`Legs::next_deadline`] also looks at the touched legs themselves, so a deadline is
//! never missed between a change and the next settle.

use super::{Leg, LegId};
use crate::id_map::IdMap;
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

#[derive(Debug, Default)]
pub(super) struct Legs {
    map: IdMap<LegId, Leg>,
    /// The legs of each Call-ID (one, or a few when a call forked or looped back).
    by_call_id: HashMap<String, Vec<LegId>>,
    /// Legs changed since the last [`Legs::settle`] (repeats allowed).
    touched: Vec<LegId>,
    /// Each settled leg's next deadline, earliest first (the second field keeps equal
    /// instants apart).
    timeline: BTreeMap<(Instant, u64), LegId>,
    /// Where each leg sits on `timeline`.
    scheduled: IdMap<LegId, (Instant, u64)>,
    next_slot: u64,
}

fn call_id_of(leg: &Leg) -> Option<&str> {
    leg.invite.headers.call_id().map(String::as_str)
}

impl Legs {
    pub(super) fn get(&self, id: &LegId) -> Option<&Leg> {
        self.map.get(id)
    }

    /// The leg to change; it is marked touched.
    pub(super) fn get_mut(&mut self, id: &LegId) -> Option<&mut Leg> {
        let leg = self.map.get_mut(id)?;
        self.touched.push(*id);
        Some(leg)
    }

    pub(super) fn insert(&mut self, id: LegId, leg: Leg) {
        if let Some(call_id) = call_id_of(&leg) {
            self.by_call_id
                .entry(call_id.to_owned())
                .or_default()
                .push(id);
        }
        if let Some(old) = self.map.insert(id, leg) {
            self.forget_call_id(id, &old);
        }
        self.touched.push(id);
    }

    pub(super) fn remove(&mut self, id: &LegId) -> Option<Leg> {
        let leg = self.map.remove(id)?;
        self.forget_call_id(*id, &leg);
        if let Some(slot) = self.scheduled.remove(id) {
            self.timeline.remove(&slot);
        }
        Some(leg)
    }

    fn forget_call_id(&mut self, id: LegId, leg: &Leg) {
        let Some(call_id) = call_id_of(leg) else {
            return;
        };
        if let Some(ids) = self.by_call_id.get_mut(call_id) {
            ids.retain(|l| *l != id);
            if ids.is_empty() {
                self.by_call_id.remove(call_id);
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&LegId, &Leg)> {
        self.map.iter()
    }

    /// The legs whose INVITE carried `call_id` (in-dialog requests and responses share it).
    pub(super) fn with_call_id(&self, call_id: Option<&String>) -> Vec<LegId> {
        call_id
            .and_then(|c| self.by_call_id.get(c.as_str()))
            .cloned()
            .unwrap_or_default()
    }

    /// Moves every touched leg to its current deadline on the timeline.
    pub(super) fn settle(&mut self) {
        for id in std::mem::take(&mut self.touched) {
            let deadline = self.map.get(&id).and_then(Leg::deadline);
            let current = self.scheduled.get(&id).copied();
            if current.map(|(at, _)| at) == deadline {
                continue;
            }
            if let Some(slot) = current {
                self.timeline.remove(&slot);
                self.scheduled.remove(&id);
            }
            if let Some(at) = deadline {
                let slot = (at, self.next_slot);
                self.next_slot += 1;
                self.timeline.insert(slot, id);
                self.scheduled.insert(id, slot);
            }
        }
    }

    /// The earliest deadline of any leg (possibly earlier than the truth for a leg changed
    /// since the last settle: that only costs a timer call that finds nothing due).
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let unsettled = self
            .touched
            .iter()
            .filter_map(|id| self.map.get(id).and_then(Leg::deadline));
        self.timeline
            .keys()
            .next()
            .map(|(at, _)| *at)
            .into_iter()
            .chain(unsettled)
            .min()
    }

    /// The legs with a deadline at or before `now`.
    pub(super) fn due(&mut self, now: Instant) -> Vec<LegId> {
        self.settle();
        self.timeline
            .range(..=(now, u64::MAX))
            .map(|(_, id)| *id)
            .collect()
    }

    /// Whether the timeline and the Call-ID index agree with the legs themselves (for
    /// tests: every leg's deadline, found by visiting them all).
    #[cfg(test)]
    pub(super) fn consistent(&mut self) -> bool {
        self.settle();
        let deadlines_agree = self
            .map
            .iter()
            .all(|(id, leg)| self.scheduled.get(id).map(|(at, _)| *at) == leg.deadline())
            && self.timeline.len() == self.scheduled.len()
            && self.scheduled.keys().all(|id| self.map.contains_key(id));
        let index_agrees = self.map.iter().all(|(id, leg)| {
            call_id_of(leg).is_none_or(|c| self.by_call_id.get(c).is_some_and(|v| v.contains(id)))
        }) && self.by_call_id.values().map(Vec::len).sum::<usize>()
            == self
                .map
                .values()
                .filter(|l| call_id_of(l).is_some())
                .count();
        deadlines_agree && index_agrees
    }
}
