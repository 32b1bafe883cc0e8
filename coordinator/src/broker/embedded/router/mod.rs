//! The embedded broker's routing core, sans-IO: MQTT 3.1.1 sessions, subscriptions (with
//! `+`/`#` wildcards and `$share/{group}/` groups), QoS 0 and 1 with per-session in-flight
//! windows and redelivery after reconnect, retained messages, last wills, and the ACL.
//!
//! The driver feeds it decoded packets per connection ([`Router::handle_connect`],
//! [`Router::handle_packet`], [`Router::handle_closed`]) and writes out what
//! [`Router::poll_output`] returns. No sockets, no clock, no tokio.
//!
//! Sessions live in memory: a persistent session survives its client's reconnects, not a
//! broker restart (the appliances' outboxes resend anything unacknowledged anyway). QoS 2
//! is not offered: a subscription asking for it is granted QoS 1, a QoS 2 publish closes
//! the connection.

use super::acl::{unshare, Acl};
use bytes::Bytes;
use rumqttc::{
    matches, valid_filter, valid_topic, ConnAck, Connect, ConnectReturnCode, LastWill, Packet,
    PubAck, Publish, QoS, SubAck, Subscribe, SubscribeReasonCode, UnsubAck,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// One network connection, numbered by the driver.
pub type ConnId = u64;

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Write this packet to the connection.
    Send(ConnId, Packet),
    /// Close the connection (after writing what was queued for it).
    Close(ConnId),
}

#[derive(Debug, Clone, PartialEq)]
struct Message {
    topic: String,
    payload: Bytes,
    qos: QoS,
    retain: bool,
}

#[derive(Debug, Clone)]
struct Subscription {
    path: String,
    share: Option<String>,
    filter: String,
    qos: QoS,
}

#[derive(Debug)]
struct Session {
    identity: String,
    conn: Option<ConnId>,
    clean: bool,
    subs: Vec<Subscription>,
    inflight: BTreeMap<u16, Message>,
    queue: VecDeque<Message>,
    next_pkid: u16,
    will: Option<LastWill>,
}

/// Counters for the operator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Publishes refused by the ACL (dropped, acknowledged as MQTT 3.1.1 requires).
    pub denied_publishes: u64,
    /// Connections refused (unknown or revoked subject).
    pub refused_connections: u64,
    /// Queued messages dropped because a session's queue was full.
    pub dropped_queued: u64,
}

/// The routing core. See the module doc.
#[derive(Debug)]
pub struct Router {
    acl: Acl,
    sessions: HashMap<String, Session>,
    /// Session keys by the filters their subscriptions use (any `$share/` prefix taken
    /// off), so that a publish visits only the sessions with a filter that can match it —
    /// its exact topic or one of the few wildcard filters — not all of a thousand boxes.
    by_filter: HashMap<String, BTreeSet<String>>,
    /// The keys of `by_filter` with a `+` or `#`.
    wild_filters: BTreeSet<String>,
    conns: HashMap<ConnId, String>,
    retained: BTreeMap<String, Message>,
    share_cursor: HashMap<String, usize>,
    out: VecDeque<Output>,
    max_inflight: usize,
    max_queue: usize,
    stats: RouterStats,
}

fn min_qos(a: QoS, b: QoS) -> QoS {
    if a == QoS::AtMostOnce || b == QoS::AtMostOnce {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

impl Router {
    /// A router enforcing `acl`, with at most `max_inflight` unacknowledged QoS 1 messages
    /// per session and `max_queue` waiting behind them.
    pub fn new(acl: Acl, max_inflight: usize, max_queue: usize) -> Router {
        Router {
            acl,
            sessions: HashMap::new(),
            by_filter: HashMap::new(),
            wild_filters: BTreeSet::new(),
            conns: HashMap::new(),
            retained: BTreeMap::new(),
            share_cursor: HashMap::new(),
            out: VecDeque::new(),
            max_inflight: max_inflight.max(1),
            max_queue,
            stats: RouterStats::default(),
        }
    }

    /// Replaces the ACL; clients whose subject may no longer connect are disconnected and
    /// their sessions dropped.
    pub fn set_acl(&mut self, acl: Acl) {
        self.acl = acl;
        let gone: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| !self.acl.may_connect(&s.identity))
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            if let Some(s) = self.remove_session(&key) {
                if let Some(conn) = s.conn {
                    self.conns.remove(&conn);
                    self.out.push_back(Output::Close(conn));
                }
            }
        }
    }

    /// A CONNECT on connection `conn` whose client certificate names `identity`.
    pub fn handle_connect(&mut self, conn: ConnId, identity: &str, connect: Connect) {
        if !self.acl.may_connect(identity) {
            self.stats.refused_connections += 1;
            self.refuse(conn, ConnectReturnCode::NotAuthorized);
            return;
        }
        if connect.client_id.is_empty() && !connect.clean_session {
            self.refuse(conn, ConnectReturnCode::BadClientId);
            return;
        }
        // Sessions are per certificate subject: one client cannot take over another's.
        let key = format!("{identity}\u{0}{}", connect.client_id);
        if let Some(old) = self.sessions.get_mut(&key).and_then(|s| s.conn.take()) {
            self.conns.remove(&old);
            self.out.push_back(Output::Close(old));
        }
        if connect.clean_session {
            self.remove_session(&key);
        }
        let present = self.sessions.contains_key(&key);
        let will = connect
            .last_will
            .filter(|w| valid_topic(&w.topic) && self.acl.may_publish(identity, &w.topic));
        let session = self.sessions.entry(key.clone()).or_insert_with(|| Session {
            identity: identity.to_string(),
            conn: None,
            clean: connect.clean_session,
            subs: Vec::new(),
            inflight: BTreeMap::new(),
            queue: VecDeque::new(),
            next_pkid: 1,
            will: None,
        });
        session.conn = Some(conn);
        session.clean = connect.clean_session;
        session.will = will;
        self.conns.insert(conn, key.clone());
        self.out.push_back(Output::Send(
            conn,
            Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, present)),
        ));
        let resend: Vec<(u16, Message)> = session
            .inflight
            .iter()
            .map(|(p, m)| (*p, m.clone()))
            .collect();
        for (pkid, m) in resend {
            self.out
                .push_back(Output::Send(conn, Packet::Publish(publish(&m, pkid, true))));
        }
        self.pump(&key);
    }

    fn refuse(&mut self, conn: ConnId, code: ConnectReturnCode) {
        self.out.push_back(Output::Send(
            conn,
            Packet::ConnAck(ConnAck::new(code, false)),
        ));
        self.out.push_back(Output::Close(conn));
    }

    /// Any packet after CONNECT.
    pub fn handle_packet(&mut self, conn: ConnId, packet: Packet) {
        let Some(key) = self.conns.get(&conn).cloned() else {
            self.out.push_back(Output::Close(conn));
            return;
        };
        match packet {
            Packet::Publish(p) => self.on_publish(conn, &key, p),
            Packet::PubAck(a) => {
                if let Some(s) = self.sessions.get_mut(&key) {
                    s.inflight.remove(&a.pkid);
                }
                self.pump(&key);
            }
            Packet::Subscribe(s) => self.on_subscribe(conn, &key, s),
            Packet::Unsubscribe(u) => {
                self.unindex(&key);
                if let Some(s) = self.sessions.get_mut(&key) {
                    s.subs.retain(|sub| !u.topics.contains(&sub.path));
                }
                self.reindex(&key);
                self.out
                    .push_back(Output::Send(conn, Packet::UnsubAck(UnsubAck::new(u.pkid))));
            }
            Packet::PingReq => self.out.push_back(Output::Send(conn, Packet::PingResp)),
            Packet::Disconnect => {
                if let Some(s) = self.sessions.get_mut(&key) {
                    s.will = None;
                }
                self.out.push_back(Output::Close(conn));
                self.handle_closed(conn);
            }
            _ => {
                // A second CONNECT, QoS 2 flow or a server-only packet: protocol violation.
                self.out.push_back(Output::Close(conn));
                self.handle_closed(conn);
            }
        }
    }

    /// The connection is gone (or was closed): publish the will unless the client said
    /// DISCONNECT, keep a persistent session, drop a clean one.
    pub fn handle_closed(&mut self, conn: ConnId) {
        let Some(key) = self.conns.remove(&conn) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        if s.conn != Some(conn) {
            return;
        }
        s.conn = None;
        let will = s.will.take();
        if s.clean {
            self.remove_session(&key);
        }
        if let Some(w) = will {
            self.route(Message {
                topic: w.topic,
                payload: w.message,
                qos: w.qos,
                retain: w.retain,
            });
        }
    }

    fn on_publish(&mut self, conn: ConnId, key: &str, p: Publish) {
        if p.qos == QoS::ExactlyOnce {
            self.out.push_back(Output::Close(conn));
            self.handle_closed(conn);
            return;
        }
        let allowed = self
            .sessions
            .get(key)
            .is_some_and(|s| valid_topic(&p.topic) && self.acl.may_publish(&s.identity, &p.topic));
        if allowed {
            self.route(Message {
                topic: p.topic,
                payload: p.payload,
                qos: p.qos,
                retain: p.retain,
            });
        } else {
            self.stats.denied_publishes += 1;
        }
        if p.qos == QoS::AtLeastOnce {
            self.out
                .push_back(Output::Send(conn, Packet::PubAck(PubAck::new(p.pkid))));
        }
    }

    fn on_subscribe(&mut self, conn: ConnId, key: &str, sub: Subscribe) {
        let Some(identity) = self.sessions.get(key).map(|s| s.identity.clone()) else {
            return;
        };
        self.unindex(key);
        let mut codes = Vec::with_capacity(sub.filters.len());
        let mut granted = Vec::new();
        for f in sub.filters {
            let (share, filter) = unshare(&f.path);
            if !valid_filter(filter) || !self.acl.may_subscribe(&identity, &f.path) {
                codes.push(SubscribeReasonCode::Failure);
                continue;
            }
            let qos = min_qos(f.qos, QoS::AtLeastOnce);
            codes.push(SubscribeReasonCode::Success(qos));
            let s = Subscription {
                path: f.path.clone(),
                share: share.map(str::to_string),
                filter: filter.to_string(),
                qos,
            };
            if s.share.is_none() {
                granted.push(s.clone());
            }
            if let Some(session) = self.sessions.get_mut(key) {
                session.subs.retain(|x| x.path != s.path);
                session.subs.push(s);
            }
        }
        self.reindex(key);
        self.out.push_back(Output::Send(
            conn,
            Packet::SubAck(SubAck::new(sub.pkid, codes)),
        ));
        for s in granted {
            let retained: Vec<Message> = self
                .retained
                .values()
                .filter(|m| matches(&m.topic, &s.filter))
                .cloned()
                .collect();
            for mut m in retained {
                m.qos = min_qos(m.qos, s.qos);
                m.retain = true;
                self.deliver(key, m);
            }
        }
    }

    fn route(&mut self, m: Message) {
        if m.retain {
            if m.payload.is_empty() {
                self.retained.remove(&m.topic);
            } else {
                self.retained.insert(m.topic.clone(), m.clone());
            }
        }
        let mut targets: BTreeMap<String, QoS> = BTreeMap::new();
        let mut groups: BTreeMap<String, Vec<(String, QoS, bool)>> = BTreeMap::new();
        let mut candidates: BTreeSet<&String> = BTreeSet::new();
        if let Some(keys) = self.by_filter.get(&m.topic) {
            candidates.extend(keys);
        }
        for filter in &self.wild_filters {
            if matches(&m.topic, filter) {
                candidates.extend(self.by_filter.get(filter).into_iter().flatten());
            }
        }
        for key in candidates {
            let Some(s) = self.sessions.get(key) else {
                continue;
            };
            for sub in &s.subs {
                if !matches(&m.topic, &sub.filter) {
                    continue;
                }
                match &sub.share {
                    None => {
                        let q = targets.entry(key.clone()).or_insert(QoS::AtMostOnce);
                        if sub.qos == QoS::AtLeastOnce {
                            *q = QoS::AtLeastOnce;
                        }
                    }
                    Some(g) => groups
                        .entry(format!("{g}/{}", sub.filter))
                        .or_default()
                        .push((key.clone(), sub.qos, s.conn.is_some())),
                }
            }
        }
        for (group, mut members) in groups {
            members.sort_by(|a, b| a.0.cmp(&b.0));
            let online: Vec<&(String, QoS, bool)> = members.iter().filter(|m| m.2).collect();
            let pool: Vec<&(String, QoS, bool)> = if online.is_empty() {
                members.iter().collect()
            } else {
                online
            };
            let cursor = self.share_cursor.entry(group).or_insert(0);
            let chosen = pool[*cursor % pool.len()];
            *cursor = cursor.wrapping_add(1);
            targets.entry(chosen.0.clone()).or_insert(chosen.1);
        }
        for (key, sub_qos) in targets {
            let mut copy = m.clone();
            copy.qos = min_qos(m.qos, sub_qos);
            copy.retain = false;
            self.deliver(&key, copy);
        }
    }

    fn deliver(&mut self, key: &str, m: Message) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        if m.qos == QoS::AtMostOnce {
            if let Some(conn) = s.conn {
                self.out
                    .push_back(Output::Send(conn, Packet::Publish(publish(&m, 0, false))));
            }
            return;
        }
        if s.queue.len() >= self.max_queue {
            s.queue.pop_front();
            self.stats.dropped_queued += 1;
        }
        s.queue.push_back(m);
        self.pump(key);
    }

    fn pump(&mut self, key: &str) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        let Some(conn) = s.conn else {
            return;
        };
        while s.inflight.len() < self.max_inflight {
            let Some(m) = s.queue.pop_front() else {
                break;
            };
            let mut pkid = s.next_pkid;
            while pkid == 0 || s.inflight.contains_key(&pkid) {
                pkid = pkid.wrapping_add(1);
            }
            s.next_pkid = pkid.wrapping_add(1);
            self.out.push_back(Output::Send(
                conn,
                Packet::Publish(publish(&m, pkid, false)),
            ));
            s.inflight.insert(pkid, m);
        }
    }

    /// Removes a session and its filters from the index.
    fn remove_session(&mut self, key: &str) -> Option<Session> {
        self.unindex(key);
        self.sessions.remove(key)
    }

    /// Takes `key` out of the index for every filter its session uses (before its
    /// subscriptions change; [`Router::reindex`] puts it back after).
    fn unindex(&mut self, key: &str) {
        let filters: Vec<String> = self
            .sessions
            .get(key)
            .map(|s| s.subs.iter().map(|sub| sub.filter.clone()).collect())
            .unwrap_or_default();
        for filter in &filters {
            if let Some(keys) = self.by_filter.get_mut(filter) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_filter.remove(filter);
                    self.wild_filters.remove(filter);
                }
            }
        }
    }

    /// Puts `key` back in the index under every filter its session now uses.
    fn reindex(&mut self, key: &str) {
        let filters: Vec<String> = self
            .sessions
            .get(key)
            .map(|s| s.subs.iter().map(|sub| sub.filter.clone()).collect())
            .unwrap_or_default();
        for filter in filters {
            if filter.contains(['+', '#']) {
                self.wild_filters.insert(filter.clone());
            }
            self.by_filter
                .entry(filter)
                .or_default()
                .insert(key.to_string());
        }
    }

    /// The next thing for the driver to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Counters since start.
    pub fn stats(&self) -> RouterStats {
        self.stats
    }

    /// Connected clients.
    pub fn connected(&self) -> usize {
        self.conns.len()
    }
}

fn publish(m: &Message, pkid: u16, dup: bool) -> Publish {
    let mut p = Publish::from_bytes(m.topic.clone(), m.qos, m.payload.clone());
    p.pkid = pkid;
    p.dup = dup;
    p.retain = m.retain;
    p
}

#[cfg(test)]
mod tests;
