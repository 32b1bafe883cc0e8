//! Scenario tests: two transaction layers over a simulated lossy, reordering UDP link in
//! virtual time. Every message crosses the link as bytes and is parsed on arrival.

use super::*;
use crate::header::{CSeq, NameAddr, Transport};
use crate::message::{response_to, Headers};
use crate::parse::{parse_datagram, Incoming};
use crate::uri::{SipUri, Uri};

const A: &str = "10.0.0.1:5060";
const B: &str = "10.0.0.2:5060";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A request from A to B.
fn request(method: Method, branch: &str, seq: u32) -> Request {
    let a = addr(A);
    let mut h = Headers::default();
    h.push(Header::Via(Via::new(
        Transport::Udp,
        Host::V4("10.0.0.1".parse().unwrap()),
        Some(a.port()),
        branch,
    )));
    let mut from = NameAddr::new(Uri::Sip(SipUri::new(
        Some("a"),
        Host::Name("a.example".into()),
        None,
    )));
    from.set_tag("fa");
    h.push(Header::From(from));
    h.push(Header::To(NameAddr::new(Uri::Sip(SipUri::new(
        Some("b"),
        Host::Name("b.example".into()),
        None,
    )))));
    h.push(Header::CallId(format!("call-{branch}")));
    h.push(Header::CSeq(CSeq {
        seq,
        method: method.clone(),
    }));
    h.push(Header::MaxForwards(70));
    Request {
        method,
        uri: Uri::Sip(SipUri::new(
            Some("b"),
            Host::V4("10.0.0.2".parse().unwrap()),
            None,
        )),
        headers: h,
        body: Vec::new(),
    }
}

/// A tiny deterministic PRNG (xorshift) so runs are reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

struct Endpoint {
    layer: TransactionLayer,
    events: Vec<(Duration, TxEvent)>,
    sent: Vec<(Duration, SocketAddr, Vec<u8>)>,
    /// Drop this many of this endpoint's next transmissions.
    drop_next: usize,
    /// Drop every transmission after the first `n`.
    mute_after: Option<usize>,
}

struct Sim {
    start: Instant,
    now: Instant,
    a: Endpoint,
    b: Endpoint,
    rng: Rng,
    loss_percent: u64,
    delay_ms: (u64, u64),
    /// (arrival, sender is A, bytes)
    in_flight: Vec<(Instant, bool, Vec<u8>)>,
    /// B answers OPTIONS 200 and INVITE with this status (if any) on its own.
    b_auto_invite: Option<u16>,
}

impl Sim {
    fn new(loss_percent: u64, delay_ms: (u64, u64), seed: u64) -> Sim {
        let start = Instant::now();
        let ep = || Endpoint {
            layer: TransactionLayer::new(TimerConfig::default()),
            events: Vec::new(),
            sent: Vec::new(),
            drop_next: 0,
            mute_after: None,
        };
        Sim {
            start,
            now: start,
            a: ep(),
            b: ep(),
            rng: Rng(seed | 1),
            loss_percent,
            delay_ms,
            in_flight: Vec::new(),
            b_auto_invite: None,
        }
    }

    fn t(&self) -> Duration {
        self.now - self.start
    }

    fn flush(&mut self) {
        let now = self.now;
        let t = self.t();
        for from_a in [true, false] {
            loop {
                let ep = if from_a { &mut self.a } else { &mut self.b };
                let Some(o) = ep.layer.poll_output() else {
                    break;
                };
                match o {
                    Output::Transmit(tr) => {
                        ep.sent.push((t, tr.to, tr.bytes.clone()));
                        let muted = ep.mute_after.is_some_and(|n| ep.sent.len() > n);
                        let dropped = if ep.drop_next > 0 {
                            ep.drop_next -= 1;
                            true
                        } else {
                            muted
                        };
                        if !dropped && self.rng.below(100) >= self.loss_percent {
                            let (lo, hi) = self.delay_ms;
                            let d = lo + self.rng.below(hi - lo + 1);
                            self.in_flight
                                .push((now + Duration::from_millis(d), from_a, tr.bytes));
                        }
                    }
                    Output::Event(ev) => {
                        if !from_a {
                            self.b_react(&ev);
                        }
                        let ep = if from_a { &mut self.a } else { &mut self.b };
                        ep.events.push((t, ev));
                    }
                }
            }
        }
    }

    fn b_react(&mut self, ev: &TxEvent) {
        let now = self.now;
        if let TxEvent::Request { key, request, .. } = ev {
            let status = match request.method {
                Method::Options => Some(200),
                Method::Invite => self.b_auto_invite,
                _ => None,
            };
            if let Some(s) = status {
                let resp = response_to(request, s, "Auto", Some("tb"));
                self.b.layer.respond(now, key, resp).unwrap();
            }
        }
    }

    /// Runs virtual time up to `until` (from the start), delivering and firing timers.
    fn run_until(&mut self, until: Duration) {
        let end = self.start + until;
        loop {
            self.flush();
            let next = [
                self.a.layer.poll_timeout(),
                self.b.layer.poll_timeout(),
                self.in_flight.iter().map(|f| f.0).min(),
            ]
            .into_iter()
            .flatten()
            .min();
            match next {
                Some(n) if n <= end => self.now = self.now.max(n),
                _ => {
                    self.now = end;
                    return;
                }
            }
            let now = self.now;
            let mut due: Vec<_> = Vec::new();
            self.in_flight.retain(|f| {
                if f.0 <= now {
                    due.push(f.clone());
                    false
                } else {
                    true
                }
            });
            due.sort_by_key(|f| f.0);
            for (_, from_a, bytes) in due {
                let Ok(Incoming::Message(m)) = parse_datagram(&bytes) else {
                    panic!("the link carried an unparseable message")
                };
                let (to, source) = if from_a {
                    (&mut self.b, addr(A))
                } else {
                    (&mut self.a, addr(B))
                };
                to.layer.handle_message(now, source, m);
            }
            self.a.layer.handle_timeout(now);
            self.b.layer.handle_timeout(now);
            assert!(self.a.layer.timeline_agrees(), "A's timeline at {now:?}");
            assert!(self.b.layer.timeline_agrees(), "B's timeline at {now:?}");
        }
    }

    fn a_send(&mut self, req: Request) -> TxKey {
        let key = self
            .a
            .layer
            .start_client(self.now, req, addr(B), false)
            .unwrap();
        self.flush();
        key
    }
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn send_times(ep: &Endpoint, method_prefix: &[u8]) -> Vec<u64> {
    ep.sent
        .iter()
        .filter(|(_, _, b)| b.starts_with(method_prefix))
        .map(|(t, _, _)| t.as_millis() as u64)
        .collect()
}

fn finals(ep: &Endpoint) -> Vec<(u64, u16)> {
    ep.events
        .iter()
        .filter_map(|(t, e)| match e {
            TxEvent::Response { response, .. } if response.status >= 200 => {
                Some((t.as_millis() as u64, response.status))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn non_invite_retransmits_at_t1_doubling_to_t2_and_times_out_at_64_t1() {
    let mut sim = Sim::new(100, (10, 10), 1);
    sim.a_send(request(Method::Options, "z9hG4bKnict1", 1));
    sim.run_until(Duration::from_secs(40));
    assert_eq!(
        send_times(&sim.a, b"OPTIONS"),
        vec![0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
    );
    assert!(matches!(sim.a.events.as_slice(), [(t, TxEvent::Timeout { .. })] if *t == ms(32_000)));
    assert_eq!(sim.a.layer.live(), (0, 0));
}

#[test]
fn invite_retransmits_doubling_without_cap_and_times_out_with_timer_b() {
    let mut sim = Sim::new(100, (10, 10), 1);
    sim.a_send(request(Method::Invite, "z9hG4bKict1", 1));
    sim.run_until(Duration::from_secs(40));
    assert_eq!(
        send_times(&sim.a, b"INVITE"),
        vec![0, 500, 1500, 3500, 7500, 15500, 31500]
    );
    assert!(matches!(sim.a.events.as_slice(), [(t, TxEvent::Timeout { .. })] if *t == ms(32_000)));
}

#[test]
fn lost_requests_are_recovered_and_the_server_sees_the_request_once() {
    let mut sim = Sim::new(0, (20, 20), 1);
    sim.a.drop_next = 2;
    sim.a_send(request(Method::Options, "z9hG4bKlost", 1));
    sim.run_until(Duration::from_secs(40));
    assert_eq!(finals(&sim.a), vec![(1540, 200)]);
    let requests = sim
        .b
        .events
        .iter()
        .filter(|(_, e)| matches!(e, TxEvent::Request { .. }));
    assert_eq!(requests.count(), 1);
    assert_eq!(sim.a.layer.live(), (0, 0), "Timer K ended the client");
    assert_eq!(sim.b.layer.live(), (0, 0), "Timer J ended the server");
}

#[test]
fn a_lost_final_response_is_resent_when_the_request_is_retransmitted() {
    let mut sim = Sim::new(0, (20, 20), 1);
    sim.b.drop_next = 1;
    sim.a_send(request(Method::Options, "z9hG4bKlostresp", 1));
    sim.run_until(Duration::from_secs(1));
    // The 200 sent at 20 ms was lost; the retransmission at 500 ms got it resent.
    assert_eq!(finals(&sim.a), vec![(540, 200)]);
    assert_eq!(send_times(&sim.b, b"SIP/2.0 200"), vec![20, 520]);
}

#[test]
fn invite_rejection_is_retransmitted_until_the_ack_arrives_and_acked_once_per_copy() {
    let mut sim = Sim::new(0, (20, 20), 1);
    sim.b_auto_invite = Some(486);
    sim.b.drop_next = 2; // the 100 Trying and the first 486
    sim.a_send(request(Method::Invite, "z9hG4bKbusy", 1));
    sim.run_until(Duration::from_secs(60));
    // At 520 ms B resent the 486 twice: Timer G fired, and the INVITE retransmission
    // arrived. The client passed the 486 up once and ACKed each copy.
    assert_eq!(finals(&sim.a), vec![(540, 486)]);
    assert_eq!(send_times(&sim.a, b"ACK"), vec![540, 540]);
    assert_eq!(send_times(&sim.b, b"SIP/2.0 486"), vec![20, 520, 520]);
    // INVITE retransmitted at 500 ms (before any response arrived), absorbed by B.
    assert_eq!(send_times(&sim.a, b"INVITE"), vec![0, 500]);
    assert!(!sim
        .b
        .events
        .iter()
        .any(|(_, e)| matches!(e, TxEvent::AckTimeout { .. })));
    assert_eq!(sim.a.layer.live(), (0, 0));
    assert_eq!(sim.b.layer.live(), (0, 0));
}

#[test]
fn a_server_with_no_ack_gives_up_with_timer_h() {
    let mut sim = Sim::new(0, (20, 20), 1);
    sim.b_auto_invite = Some(603);
    sim.a.mute_after = Some(1); // the INVITE arrives; every ACK is lost
    sim.a_send(request(Method::Invite, "z9hG4bKnoack", 1));
    sim.run_until(Duration::from_secs(60));
    assert_eq!(
        send_times(&sim.b, b"SIP/2.0 603"),
        vec![20, 520, 1520, 3520, 7520, 11520, 15520, 19520, 23520, 27520, 31520]
    );
    let timeouts: Vec<_> = sim
        .b
        .events
        .iter()
        .filter(|(_, e)| matches!(e, TxEvent::AckTimeout { .. }))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(timeouts, vec![ms(32_020)]);
}

fn response_with_tag(req: &Request, status: u16, tag: &str) -> SipMessage {
    SipMessage::Response(response_to(req, status, "X", Some(tag)))
}

#[test]
fn duplicate_and_forked_2xx_all_reach_the_user_until_timer_m() {
    let mut layer = TransactionLayer::new(TimerConfig::default());
    let t0 = Instant::now();
    let invite = request(Method::Invite, "z9hG4bKfork", 1);
    let key = layer
        .start_client(t0, invite.clone(), addr(B), false)
        .unwrap();
    for (dt, status, tag) in [
        (10, 180, "x1"),
        (20, 200, "x1"),
        (30, 200, "x1"),
        (40, 200, "x2"),
    ] {
        layer.handle_message(
            t0 + ms(dt),
            addr(B),
            response_with_tag(&invite, status, tag),
        );
    }
    let mut got = Vec::new();
    while let Some(o) = layer.poll_output() {
        if let Output::Event(TxEvent::Response { key: k, response }) = o {
            assert_eq!(k, key);
            got.push((
                response.status,
                response.headers.to().unwrap().tag().unwrap().to_owned(),
            ));
        }
    }
    assert_eq!(
        got,
        vec![
            (180, "x1".into()),
            (200, "x1".into()),
            (200, "x1".into()),
            (200, "x2".into())
        ]
    );
    // No ACK from the transaction layer for 2xx: that is the dialog's job.
    layer.handle_timeout(t0 + Duration::from_secs(32) + ms(20));
    assert_eq!(layer.live(), (0, 0));
    layer.handle_message(
        t0 + Duration::from_secs(33),
        addr(B),
        response_with_tag(&invite, 200, "x3"),
    );
    assert!(matches!(
        layer.poll_output(),
        Some(Output::Event(TxEvent::StrayResponse { .. }))
    ));
}

/// The CANCEL for `invite` (§9.1): same branch, Call-ID, From, To, CSeq number.
fn cancel_for(invite: &Request) -> Request {
    let mut c = invite.clone();
    c.method = Method::Cancel;
    for h in &mut c.headers.0 {
        if let Header::CSeq(cs) = h {
            cs.method = Method::Cancel;
        }
    }
    c
}

#[test]
fn cancel_crossing_a_200_leaves_the_invite_answered() {
    let mut sim = Sim::new(0, (50, 50), 1);
    let invite = request(Method::Invite, "z9hG4bKcross", 1);
    sim.a_send(invite.clone());
    sim.run_until(ms(100));
    let key = match &sim.b.events[0].1 {
        TxEvent::Request { key, .. } => key.clone(),
        e => panic!("{e:?}"),
    };
    let ringing = response_to(&invite, 180, "Ringing", Some("tb"));
    sim.b.layer.respond(sim.now, &key, ringing).unwrap();
    sim.run_until(ms(1000));
    // Both sides act at the same instant: B answers, A cancels. They cross on the link.
    let ok = response_to(&invite, 200, "OK", Some("tb"));
    sim.b.layer.respond(sim.now, &key, ok).unwrap();
    sim.a_send(cancel_for(&invite));
    sim.run_until(Duration::from_secs(40));
    let statuses: Vec<(Method, u16)> = sim
        .a
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            TxEvent::Response { key, response } if response.status >= 200 => {
                Some((key.method.clone(), response.status))
            }
            _ => None,
        })
        .collect();
    assert!(statuses.contains(&(Method::Invite, 200)), "{statuses:?}");
    assert!(statuses.contains(&(Method::Cancel, 200)), "{statuses:?}");
    assert!(!statuses.contains(&(Method::Invite, 487)));
    assert!(!sim
        .b
        .events
        .iter()
        .any(|(_, e)| matches!(e, TxEvent::Cancelled { .. })));
}

#[test]
fn cancel_before_the_answer_reaches_the_user_who_answers_487() {
    let mut sim = Sim::new(0, (50, 50), 1);
    let invite = request(Method::Invite, "z9hG4bKcancel", 1);
    sim.a_send(invite.clone());
    sim.run_until(ms(200));
    sim.a_send(cancel_for(&invite));
    sim.run_until(ms(300));
    let cancelled = sim.b.events.iter().find_map(|(_, e)| match e {
        TxEvent::Cancelled { key } => Some(key.clone()),
        _ => None,
    });
    let key = cancelled.expect("B was told of the CANCEL");
    let terminated = response_to(&invite, 487, "Request Terminated", Some("tb"));
    sim.b.layer.respond(sim.now, &key, terminated).unwrap();
    sim.run_until(Duration::from_secs(40));
    let f = finals(&sim.a);
    assert!(f.iter().any(|(_, s)| *s == 487));
    assert_eq!(send_times(&sim.a, b"ACK").len(), 1);
    assert_eq!(sim.a.layer.live(), (0, 0));
    assert_eq!(sim.b.layer.live(), (0, 0));
}

#[test]
fn cancel_matching_nothing_is_answered_481() {
    let mut sim = Sim::new(0, (10, 10), 1);
    let invite = request(Method::Invite, "z9hG4bKnone", 1);
    sim.a_send(cancel_for(&invite));
    sim.run_until(ms(100));
    assert_eq!(finals(&sim.a), vec![(20, 481)]);
}

#[test]
fn responses_follow_rport_and_received_not_the_via() {
    let mut layer = TransactionLayer::new(TimerConfig::default());
    let now = Instant::now();
    let mut req = request(Method::Options, "z9hG4bKnat", 1);
    // The Via claims a private address and port; the packet came from a NAT.
    if let Some(v) = req.headers.top_via_mut() {
        v.host = Host::V4("192.168.1.10".parse().unwrap());
        v.port = Some(5999);
    }
    let nat = addr("203.0.113.7:40000");
    layer.handle_message(now, nat, SipMessage::Request(req));
    let Some(Output::Event(TxEvent::Request { key, request, .. })) = layer.poll_output() else {
        panic!()
    };
    let via = request.headers.top_via().unwrap();
    assert_eq!(via.received(), Some("203.0.113.7"));
    assert_eq!(via.rport(), Some(Some(40000)));
    layer
        .respond(now, &key, response_to(&request, 200, "OK", Some("t")))
        .unwrap();
    let Some(Output::Transmit(t)) = layer.poll_output() else {
        panic!()
    };
    assert_eq!(t.to, nat);
}

#[test]
fn over_a_lossy_reordering_link_each_transaction_ends_exactly_once() {
    for seed in 1..=5u64 {
        let mut sim = Sim::new(25, (5, 400), seed * 7919);
        sim.b_auto_invite = Some(486);
        let mut keys = Vec::new();
        for i in 0..30u32 {
            let (m, b) = if i % 3 == 0 {
                (Method::Invite, format!("z9hG4bKi{i}"))
            } else {
                (Method::Options, format!("z9hG4bKo{i}"))
            };
            keys.push(sim.a_send(request(m, &b, i + 1)));
            sim.run_until(ms(u64::from(i) * 37));
        }
        sim.run_until(Duration::from_secs(120));
        for key in &keys {
            let outcomes: Vec<_> = sim
                .a
                .events
                .iter()
                .filter(|(_, e)| match e {
                    TxEvent::Response { key: k, response } => k == key && response.status >= 200,
                    TxEvent::Timeout { key: k } => k == key,
                    _ => false,
                })
                .collect();
            assert_eq!(outcomes.len(), 1, "seed {seed} {key:?}: {outcomes:?}");
        }
        // Each request reached B's user at most once despite retransmissions.
        let mut seen = std::collections::HashSet::new();
        for (_, e) in &sim.b.events {
            if let TxEvent::Request { key, .. } = e {
                assert!(
                    seen.insert(key.branch.clone()),
                    "seed {seed}: {key:?} twice"
                );
            }
        }
        assert_eq!(sim.a.layer.live(), (0, 0));
        assert_eq!(sim.b.layer.live(), (0, 0));
        assert_eq!(sim.a.layer.poll_timeout(), None, "seed {seed}");
        assert_eq!(sim.b.layer.poll_timeout(), None, "seed {seed}");
    }
}
