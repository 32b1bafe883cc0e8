//! Failover and probing in virtual time: the router against scripted carriers (each a
//! real transaction layer) that answer, reject, or stay silent.

use super::*;
use crate::agent::AgentConfig;
use crate::header::{Contact, Header, NameAddr};
use crate::message::{response_to, Method, Request, SipMessage};
use crate::parse::{parse_datagram, Incoming};
use crate::transaction::{Output, TimerConfig, TransactionLayer, TxEvent};
use crate::trunk::Trunk;
use std::net::SocketAddr;

const UA: &str = "127.0.0.1:5060";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// How a scripted carrier answers INVITEs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Carrier {
    Answers,
    Rejects(u16),
    Silent,
    /// 183 with SDP (early media), then 200.
    EarlyMedia,
    /// Nothing (its 100 Trying is lost) for this many ms, then 180; answers CANCEL 487.
    RingsLate(u64),
}

const EARLY_SDP: &[u8] = b"v=0\r\no=carrier 1 1 IN IP4 127.0.0.3\r\ns=-\r\nc=IN IP4 127.0.0.3\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";

struct Peer {
    addr: SocketAddr,
    layer: TransactionLayer,
    mode: Carrier,
    invites: usize,
    byes: usize,
    /// Responses to requests this peer sent.
    responses: Vec<crate::message::Response>,
    /// Responses scheduled for later, and the INVITEs received (to answer a CANCEL).
    later: Vec<(Instant, crate::transaction::TxKey, crate::message::Response)>,
    invites_seen: Vec<(crate::transaction::TxKey, Request)>,
    cancels: usize,
    /// REGISTERs still to refuse 403, and when each REGISTER arrived.
    refuse_registers: u32,
    registers_at: Vec<Instant>,
}

struct World {
    start: Instant,
    now: Instant,
    router: OutboundRouter,
    peers: Vec<Peer>,
    in_flight: Vec<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
    events: Vec<(Duration, DialEvent)>,
}

fn fast_timers() -> TimerConfig {
    TimerConfig {
        t1: Duration::from_millis(50),
        t2: Duration::from_millis(400),
        t4: Duration::from_millis(500),
    }
}

fn trunk(name: &str, peer: &str, priority: u32) -> Trunk {
    let a = addr(peer);
    Trunk {
        name: name.into(),
        address: a,
        domain: a.ip().to_string(),
        credentials: None,
        max_channels: 10,
        max_cps: 10,
        priority,
        weight: 1,
    }
}

impl World {
    fn new(carriers: &[(&str, Carrier)], cfg: RouterConfig) -> World {
        let start = Instant::now();
        let agent = UserAgent::new(AgentConfig {
            local: addr(UA),
            user: "dialer".into(),
            timers: fast_timers(),
            credentials: None,
            seed: 7,
        });
        let trunks = carriers
            .iter()
            .enumerate()
            .map(|(i, (a, _))| trunk(&format!("t{i}"), a, i as u32))
            .collect();
        World {
            start,
            now: start,
            router: OutboundRouter::new(agent, TrunkGroup::new(trunks), cfg, start, 99),
            peers: carriers
                .iter()
                .map(|(a, mode)| Peer {
                    addr: addr(a),
                    layer: TransactionLayer::new(fast_timers()),
                    mode: *mode,
                    invites: 0,
                    byes: 0,
                    responses: Vec::new(),
                    later: Vec::new(),
                    invites_seen: Vec::new(),
                    cancels: 0,
                    refuse_registers: 0,
                    registers_at: Vec::new(),
                })
                .collect(),
            in_flight: Vec::new(),
            events: Vec::new(),
        }
    }

    fn flush(&mut self) {
        let t = self.now - self.start;
        let d = Duration::from_millis(5);
        while let Some(o) = self.router.poll_output() {
            match o {
                RouterOutput::Transmit(tr) => {
                    self.in_flight
                        .push((self.now + d, addr(UA), tr.to, tr.bytes))
                }
                RouterOutput::Event(e) => self.events.push((t, e)),
            }
        }
        let now = self.now;
        for p in &mut self.peers {
            while let Some(o) = p.layer.poll_output() {
                match o {
                    // A late-ringing carrier's 100 Trying is lost: it has sent no provisional.
                    Output::Transmit(tr)
                        if matches!(p.mode, Carrier::RingsLate(_))
                            && tr.bytes.starts_with(b"SIP/2.0 100 ") => {}
                    Output::Transmit(tr) => self.in_flight.push((now + d, p.addr, tr.to, tr.bytes)),
                    Output::Event(TxEvent::Request { key, request, .. }) => {
                        if request.method == Method::Invite {
                            p.invites_seen.push((key.clone(), request.clone()));
                        }
                        let resp = match (request.method.clone(), p.mode) {
                            (Method::Invite, Carrier::EarlyMedia) => {
                                let mut r =
                                    response_to(&request, 183, "Session Progress", Some("c"));
                                r.headers
                                    .push(Header::ContentType(crate::header::MediaType {
                                        mtype: "application".into(),
                                        subtype: "sdp".into(),
                                        params: Vec::new(),
                                    }));
                                r.body = EARLY_SDP.to_vec();
                                p.layer.respond(now, &key, r).unwrap();
                                let mut ok = response_to(&request, 200, "OK", Some("c"));
                                ok.headers
                                    .push(Header::Contact(Contact::Address(NameAddr::new(
                                        Uri::parse(&format!("sip:c@{}", p.addr)).unwrap(),
                                    ))));
                                p.later
                                    .push((now + Duration::from_millis(300), key.clone(), ok));
                                None
                            }
                            (Method::Invite, Carrier::RingsLate(ms)) => {
                                let r = response_to(&request, 180, "Ringing", Some("c"));
                                p.later
                                    .push((now + Duration::from_millis(ms), key.clone(), r));
                                None
                            }
                            (Method::Invite, Carrier::Answers) => {
                                let mut r = response_to(&request, 200, "OK", Some("c"));
                                r.headers
                                    .push(Header::Contact(Contact::Address(NameAddr::new(
                                        Uri::parse(&format!("sip:c@{}", p.addr)).unwrap(),
                                    ))));
                                Some(r)
                            }
                            (Method::Invite, Carrier::Rejects(s)) => {
                                Some(response_to(&request, s, "Rejected", Some("c")))
                            }
                            (_, Carrier::Silent) => None,
                            (Method::Register, _) => {
                                p.registers_at.push(now);
                                if p.refuse_registers > 0 {
                                    p.refuse_registers -= 1;
                                    Some(response_to(&request, 403, "Forbidden", Some("c")))
                                } else {
                                    Some(response_to(&request, 200, "OK", Some("c")))
                                }
                            }
                            _ => Some(response_to(&request, 200, "OK", Some("c"))),
                        };
                        if let Some(r) = resp {
                            p.layer.respond(now, &key, r).unwrap();
                        }
                    }
                    Output::Event(TxEvent::Response { response, .. }) => p.responses.push(response),
                    Output::Event(TxEvent::Cancelled { key }) => {
                        p.cancels += 1;
                        p.later.retain(|(_, k, _)| *k != key);
                        if let Some((_, inv)) = p.invites_seen.iter().find(|(k, _)| *k == key) {
                            let r = response_to(inv, 487, "Request Terminated", Some("c"));
                            p.layer.respond(now, &key, r).unwrap();
                        }
                    }
                    Output::Event(_) => {}
                }
            }
        }
    }

    fn run_until(&mut self, until: Duration) {
        let end = self.start + until;
        loop {
            self.flush();
            let next = self
                .peers
                .iter()
                .filter_map(|p| p.layer.poll_timeout())
                .chain(self.router.poll_timeout())
                .chain(self.in_flight.iter().map(|f| f.0))
                .chain(self.peers.iter().flat_map(|p| p.later.iter().map(|l| l.0)))
                .min();
            match next {
                Some(n) if n <= end => self.now = self.now.max(n),
                _ => {
                    self.now = end;
                    return;
                }
            }
            let now = self.now;
            for p in &mut self.peers {
                let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut p.later)
                    .into_iter()
                    .partition(|l| l.0 <= now);
                p.later = later;
                for (_, key, r) in due {
                    let _ = p.layer.respond(now, &key, r);
                }
            }
            let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.in_flight)
                .into_iter()
                .partition(|f| f.0 <= now);
            self.in_flight = later;
            for (_, from, to, bytes) in due {
                if to == addr(UA) {
                    self.router.handle_datagram(now, from, &bytes);
                } else if let Some(p) = self.peers.iter_mut().find(|p| p.addr == to) {
                    if p.mode == Carrier::Silent {
                        continue;
                    }
                    let Ok(Incoming::Message(m)) = parse_datagram(&bytes) else {
                        panic!()
                    };
                    if matches!(
                        &m,
                        SipMessage::Request(Request {
                            method: Method::Invite,
                            ..
                        })
                    ) {
                        p.invites += 1;
                    }
                    if let SipMessage::Request(Request {
                        method: Method::Bye,
                        ..
                    }) = &m
                    {
                        p.byes += 1;
                    }
                    p.layer.handle_message(now, from, m);
                }
            }
            self.router.handle_timeout(now);
            for p in &mut self.peers {
                p.layer.handle_timeout(now);
            }
        }
    }

    fn kinds(&self) -> Vec<String> {
        self.events
            .iter()
            .map(|(_, e)| match e {
                DialEvent::Progress { trunk, status, .. } => format!("progress {status} {trunk}"),
                DialEvent::Answered { trunk, .. } => format!("answered {trunk}"),
                DialEvent::Failed { status, tried, .. } => {
                    format!("failed {status} {}", tried.join(","))
                }
                DialEvent::Ended { .. } => "ended".into(),
                DialEvent::TrunkHealth { trunk, change } => format!("{trunk} {change:?}"),
                DialEvent::Incoming { number, .. } => format!("incoming {number}"),
                DialEvent::TrunkRegistered { trunk, expires } => {
                    format!("{trunk} registered {expires}")
                }
                DialEvent::TrunkRegistrationFailed { trunk, status, .. } => {
                    format!("{trunk} registration failed {status}")
                }
            })
            .collect()
    }
}

fn no_probes() -> RouterConfig {
    RouterConfig {
        probe: None,
        answer_wait: Duration::from_secs(2),
        ..RouterConfig::default()
    }
}

#[test]
fn invite_fails_over_to_second_trunk_on_503() {
    let mut w = World::new(
        &[
            ("127.0.0.2:5060", Carrier::Rejects(503)),
            ("127.0.0.3:5060", Carrier::Answers),
        ],
        no_probes(),
    );
    w.router.dial(w.now, "4930123", b"v=0\r\n".to_vec(), None);
    w.run_until(Duration::from_secs(5));
    assert_eq!(
        w.kinds(),
        vec!["answered t1"],
        "the dialer sees one attempt, not a failure"
    );
    let figs: Vec<_> = w
        .router
        .group()
        .trunks
        .iter()
        .map(|t| t.figures.clone())
        .collect();
    assert_eq!((figs[0].attempts, figs[0].answered), (1, 0));
    assert_eq!((figs[1].attempts, figs[1].answered), (1, 1));
    assert_eq!(figs[1].asr_percent(), Some(100.0));
    assert_eq!(figs[0].asr_percent(), Some(0.0));
}

#[test]
fn a_silent_trunk_is_given_up_after_the_answer_wait() {
    let mut w = World::new(
        &[
            ("127.0.0.2:5060", Carrier::Silent),
            ("127.0.0.3:5060", Carrier::Answers),
        ],
        no_probes(),
    );
    w.router.dial(w.now, "4930123", b"v=0\r\n".to_vec(), None);
    w.run_until(Duration::from_secs(10));
    let answered: Vec<_> = w
        .events
        .iter()
        .filter_map(|(t, e)| match e {
            DialEvent::Answered { trunk, .. } => Some((t.as_millis(), trunk.clone())),
            _ => None,
        })
        .collect();
    // INVITE to t0 at 0 s, given up at 2 s, answered by t1 5+5 ms later.
    assert_eq!(answered, vec![(2010, "t1".to_owned())]);
    assert_eq!(w.peers[1].invites, 1);
    // The silent trunk's channel is released once its INVITE transaction times out.
    assert_eq!(w.router.group().trunks[0].active, 0);
}

#[test]
fn busy_is_final_and_not_retried_on_another_trunk() {
    let mut w = World::new(
        &[
            ("127.0.0.2:5060", Carrier::Rejects(486)),
            ("127.0.0.3:5060", Carrier::Answers),
        ],
        no_probes(),
    );
    w.router.dial(w.now, "4930123", Vec::new(), None);
    w.run_until(Duration::from_secs(5));
    assert!(
        w.kinds().contains(&"failed 486 t0".to_owned()),
        "{:?}",
        w.kinds()
    );
    assert_eq!(w.peers[1].invites, 0);
}

#[test]
fn every_trunk_failing_is_one_failure_naming_them_all() {
    let mut w = World::new(
        &[
            ("127.0.0.2:5060", Carrier::Rejects(503)),
            ("127.0.0.3:5060", Carrier::Rejects(500)),
        ],
        no_probes(),
    );
    w.router.dial(w.now, "4930123", Vec::new(), None);
    w.run_until(Duration::from_secs(5));
    let fails: Vec<_> = w
        .kinds()
        .into_iter()
        .filter(|k| k.starts_with("failed"))
        .collect();
    assert_eq!(fails, vec!["failed 500 t0,t1"]);
}

#[test]
fn probing_marks_a_dead_trunk_down_and_up_again_and_calls_skip_it_meanwhile() {
    let cfg = RouterConfig {
        probe: Some(ProbePolicy {
            interval: Duration::from_secs(5),
            failures_to_down: 2,
            successes_to_up: 2,
        }),
        answer_wait: Duration::from_secs(2),
        ..RouterConfig::default()
    };
    let mut w = World::new(
        &[
            ("127.0.0.2:5060", Carrier::Silent),
            ("127.0.0.3:5060", Carrier::Answers),
        ],
        cfg,
    );
    // Probes at 0 s and 5 s each time out after 64*T1 = 3.2 s: down at 8.2 s.
    w.run_until(Duration::from_secs(9));
    let down: Vec<_> = w
        .events
        .iter()
        .filter(|(_, e)| {
            matches!(
                e,
                DialEvent::TrunkHealth {
                    change: HealthChange::WentDown,
                    ..
                }
            )
        })
        .map(|(t, _)| t.as_millis())
        .collect();
    assert_eq!(down, vec![8200]);
    // While down, a call goes straight to the second trunk: no answer wait.
    w.events.clear();
    w.router.dial(w.now, "4930123", Vec::new(), None);
    w.run_until(Duration::from_secs(10));
    assert_eq!(w.kinds(), vec!["answered t1"]);
    assert_eq!(w.router.group().trunks[0].figures.attempts, 0);
    // The carrier comes back: two answered probes (at 10 s and 15 s) bring it up.
    w.peers[0].mode = Carrier::Answers;
    w.run_until(Duration::from_secs(16));
    assert!(
        w.kinds().contains(&"t0 CameUp".to_owned()),
        "{:?}",
        w.kinds()
    );
    assert!(w.router.group().trunks[0].health.is_up());
}

#[test]
fn the_channel_limit_sends_overflow_to_the_next_trunk() {
    let mut w = World::new(
        &[
            ("127.0.0.2:5060", Carrier::Answers),
            ("127.0.0.3:5060", Carrier::Answers),
        ],
        no_probes(),
    );
    for t in &mut w.router.group.trunks {
        t.trunk.max_channels = 1;
    }
    w.router.dial(w.now, "1", Vec::new(), None);
    w.router.dial(w.now, "2", Vec::new(), None);
    w.router.dial(w.now, "3", Vec::new(), None);
    w.run_until(Duration::from_secs(1));
    let mut k = w.kinds();
    k.sort();
    assert_eq!(k, vec!["answered t0", "answered t1", "failed 503 "]);
}

use crate::header::{CSeq, Transport, Via};
use crate::inbound::{InboundPolicy, InboundRoute, UnknownSource};
use crate::message::Headers;
use crate::uri::Host;

/// A request from the calling carrier (127.0.0.2) to the appliance.
fn from_caller(method: Method, branch: &str, seq: u32, to_tag: Option<&str>) -> Request {
    let mut h = Headers::default();
    h.push(Header::Via(Via::new(
        Transport::Udp,
        Host::V4("127.0.0.2".parse().unwrap()),
        Some(5060),
        branch,
    )));
    let mut from = NameAddr::new(Uri::parse("sip:+4915100@127.0.0.2").unwrap());
    from.set_tag("caller");
    h.push(Header::From(from));
    let mut to = NameAddr::new(Uri::parse("sip:+4930777@127.0.0.1").unwrap());
    if let Some(t) = to_tag {
        to.set_tag(t);
    }
    h.push(Header::To(to));
    h.push(Header::CallId("bridge-1".into()));
    h.push(Header::CSeq(CSeq {
        seq,
        method: method.clone(),
    }));
    h.push(Header::Contact(Contact::Address(NameAddr::new(
        Uri::parse("sip:caller@127.0.0.2:5060").unwrap(),
    ))));
    Request {
        method,
        uri: Uri::parse("sip:+4930777@127.0.0.1").unwrap(),
        headers: h,
        body: Vec::new(),
    }
}

#[test]
fn an_inbound_call_routed_to_a_trunk_is_bridged_out_and_the_callers_bye_is_relayed() {
    let mut w = World::new(
        &[
            ("127.0.0.2:5060", Carrier::Rejects(503)),
            ("127.0.0.3:5060", Carrier::Answers),
        ],
        no_probes(),
    );
    w.router.set_inbound_policy(InboundPolicy {
        allowed_sources: vec!["127.0.0.2".parse().unwrap()],
        trunk_names: Vec::new(),
        unknown_source: UnknownSource::Reject,
        per_source_rate: 100,
        per_source_burst: 100,
        routes: vec![InboundRoute {
            number: "*".into(),
            target: crate::inbound::RouteTarget::Trunk("t1".into()),
        }],
    });
    let now = w.now;
    w.peers[0]
        .layer
        .start_client(
            now,
            from_caller(Method::Invite, "z9hG4bKcall", 1, None),
            addr(UA),
            false,
        )
        .unwrap();
    w.run_until(Duration::from_secs(1));
    // Out on t0 (503: the caller's own carrier refuses), then t1 answers.
    assert_eq!(w.peers[1].invites, 1);
    let ok = w.peers[0]
        .responses
        .iter()
        .find(|r| r.status == 200)
        .expect("the caller's INVITE was answered through the bridge")
        .clone();
    let tag = ok.headers.to().unwrap().tag().unwrap().to_owned();
    let ack = from_caller(Method::Ack, "z9hG4bKack", 1, Some(&tag));
    w.router
        .handle_datagram(w.now, addr("127.0.0.2:5060"), &ack.to_bytes());
    w.run_until(Duration::from_secs(2));
    let now = w.now;
    w.peers[0]
        .layer
        .start_client(
            now,
            from_caller(Method::Bye, "z9hG4bKbye", 2, Some(&tag)),
            addr(UA),
            false,
        )
        .unwrap();
    w.run_until(Duration::from_secs(5));
    assert_eq!(w.peers[1].byes, 1, "the caller's BYE reached the callee");
    assert!(w.peers[0]
        .responses
        .iter()
        .any(|r| r.status == 200 && r.headers.cseq().is_some_and(|c| c.method == Method::Bye)));
    assert!(
        w.kinds().contains(&"answered t1".to_owned()),
        "{:?}",
        w.kinds()
    );
    assert!(w.kinds().contains(&"ended".to_owned()), "{:?}", w.kinds());
}

#[test]
fn an_inbound_call_whose_trunks_all_fail_is_refused_503() {
    let mut w = World::new(&[("127.0.0.2:5060", Carrier::Rejects(500))], no_probes());
    w.router.set_inbound_policy(InboundPolicy {
        allowed_sources: vec!["127.0.0.2".parse().unwrap()],
        trunk_names: Vec::new(),
        unknown_source: UnknownSource::Reject,
        per_source_rate: 100,
        per_source_burst: 100,
        routes: vec![InboundRoute {
            number: "*".into(),
            target: crate::inbound::RouteTarget::Trunk("t0".into()),
        }],
    });
    let now = w.now;
    w.peers[0]
        .layer
        .start_client(
            now,
            from_caller(Method::Invite, "z9hG4bKc2", 1, None),
            addr(UA),
            false,
        )
        .unwrap();
    w.run_until(Duration::from_secs(2));
    let finals: Vec<u16> = w.peers[0]
        .responses
        .iter()
        .map(|r| r.status)
        .filter(|s| *s >= 200)
        .collect();
    assert!(finals.contains(&503), "{finals:?}");
}

fn bridge_policy() -> InboundPolicy {
    InboundPolicy {
        allowed_sources: vec!["127.0.0.2".parse().unwrap()],
        trunk_names: Vec::new(),
        unknown_source: UnknownSource::Reject,
        per_source_rate: 100,
        per_source_burst: 100,
        routes: vec![InboundRoute {
            number: "*".into(),
            target: crate::inbound::RouteTarget::Trunk("t1".into()),
        }],
    }
}

#[test]
fn early_media_from_the_callee_reaches_the_caller_with_its_sdp() {
    let mut w = World::new(
        &[
            ("127.0.0.2:5060", Carrier::Rejects(503)),
            ("127.0.0.3:5060", Carrier::EarlyMedia),
        ],
        no_probes(),
    );
    w.router.set_inbound_policy(bridge_policy());
    let now = w.now;
    w.peers[0]
        .layer
        .start_client(
            now,
            from_caller(Method::Invite, "z9hG4bKearly", 1, None),
            addr(UA),
            false,
        )
        .unwrap();
    w.run_until(Duration::from_millis(200));
    let early = w.peers[0]
        .responses
        .iter()
        .find(|r| r.status == 183)
        .expect("the caller heard 183 before the answer");
    assert_eq!(
        early.body, EARLY_SDP,
        "the callee's early-media SDP is relayed"
    );
    assert!(early
        .headers
        .0
        .iter()
        .any(|h| matches!(h, Header::ContentType(_))));
    assert!(
        !w.peers[0].responses.iter().any(|r| r.status == 200),
        "not answered yet"
    );
    w.run_until(Duration::from_secs(1));
    assert!(w.peers[0].responses.iter().any(|r| r.status == 200));
}

#[test]
fn a_caller_cancel_before_the_callees_first_provisional_cancels_it_after_and_tries_no_other_trunk()
{
    let mut w = World::new(
        &[
            ("127.0.0.2:5060", Carrier::Rejects(503)),
            ("127.0.0.3:5060", Carrier::RingsLate(2_500)),
            ("127.0.0.4:5060", Carrier::Answers),
        ],
        no_probes(),
    );
    w.router.set_inbound_policy(bridge_policy());
    let invite = from_caller(Method::Invite, "z9hG4bKcxl", 1, None);
    let now = w.now;
    w.peers[0]
        .layer
        .start_client(now, invite.clone(), addr(UA), false)
        .unwrap();
    w.run_until(Duration::from_millis(500));
    assert_eq!(w.peers[1].invites_seen.len(), 1, "the call went out on t1");
    let mut cancel = invite;
    cancel.method = Method::Cancel;
    for h in &mut cancel.headers.0 {
        if let Header::CSeq(c) = h {
            c.method = Method::Cancel;
        }
    }
    let now = w.now;
    w.peers[0]
        .layer
        .start_client(now, cancel, addr(UA), false)
        .unwrap();
    w.run_until(Duration::from_millis(2_000));
    assert_eq!(
        w.peers[1].cancels, 0,
        "no CANCEL before the callee's provisional (§9.1)"
    );
    assert!(w.peers[0].responses.iter().any(|r| r.status == 487));
    w.run_until(Duration::from_secs(6));
    assert_eq!(
        w.peers[1].cancels, 1,
        "CANCEL follows the callee's late 180"
    );
    assert_eq!(
        w.peers[2].invites, 0,
        "a cancelled call is not failed over, past the answer wait included"
    );
    assert!(
        w.peers[1].responses.iter().all(
            |r| r.status != 200 || r.headers.cseq().is_some_and(|c| c.method == Method::Cancel)
        ),
        "the callee was never answered"
    );
    assert!(
        w.kinds().iter().any(|k| k.starts_with("failed 487")),
        "{:?}",
        w.kinds()
    );
}

#[test]
fn a_failed_connection_to_a_tcp_trunk_fails_over_at_once() {
    let mut w = World::new(
        &[
            ("127.0.0.2:5060", Carrier::Silent),
            ("127.0.0.3:5060", Carrier::Answers),
        ],
        no_probes(),
    );
    w.router
        .set_transport(addr("127.0.0.2:5060"), crate::header::Transport::Tcp);
    let now = w.now;
    w.router.dial(now, "+4930123", b"v=0\r\n".to_vec(), None);
    w.run_until(Duration::from_millis(100));
    assert_eq!(w.peers[1].invites, 0);
    // The driver reports the connection refused: no waiting for the answer wait (2 s).
    let now = w.now;
    w.router.handle_transport_error(now, addr("127.0.0.2:5060"));
    w.run_until(Duration::from_millis(300));
    assert_eq!(
        w.peers[1].invites, 1,
        "the second trunk took the call at once"
    );
    assert_eq!(w.kinds(), vec!["answered t1"]);
    assert_eq!(w.router.group().trunks[0].figures.attempts, 1);
}

#[test]
fn replacing_the_trunks_keeps_calls_in_progress_and_sends_the_next_call_to_the_new_trunk() {
    let mut w = World::new(
        &[
            ("127.0.0.2:5060", Carrier::Answers),
            ("127.0.0.3:5060", Carrier::Answers),
        ],
        no_probes(),
    );
    // Only t0 (127.0.0.2) in service at first.
    w.router
        .replace_trunks(w.now, vec![trunk("t0", "127.0.0.2:5060", 0)]);
    let first = w.router.dial(w.now, "4930123", b"v=0\r\n".to_vec(), None);
    w.run_until(Duration::from_secs(1));
    assert_eq!(w.kinds(), vec!["answered t0"]);

    // The edit: t0 moves to 127.0.0.3 while the first call is up on 127.0.0.2.
    w.router
        .replace_trunks(w.now, vec![trunk("t0", "127.0.0.3:5060", 0)]);
    assert_eq!(w.router.in_service().len(), 1);
    assert_eq!(
        w.router.in_service()[0].active,
        1,
        "the call up keeps its channel"
    );
    let second = w.router.dial(w.now, "4930124", b"v=0\r\n".to_vec(), None);
    w.run_until(Duration::from_secs(2));
    assert_eq!((w.peers[0].invites, w.peers[1].invites), (1, 1));

    // The first call still ends normally, with its BYE to the old address.
    w.router.hang_up(w.now, first);
    w.run_until(Duration::from_secs(3));
    assert_eq!((w.peers[0].byes, w.peers[1].byes), (1, 0));
    assert!(w.events.iter().any(|(_, e)| matches!(e,
        DialEvent::Ended { attempt, by_peer: false } if *attempt == first)));
    assert_eq!(
        w.router.in_service()[0].active,
        1,
        "only the second call is up"
    );

    // Removing the trunk outright: its call stays up out of service, the next call fails
    // over to what remains, and the removed trunk leaves once idle.
    w.router
        .replace_trunks(w.now, vec![trunk("t9", "127.0.0.2:5060", 0)]);
    assert_eq!(
        w.router.group().trunks.len(),
        2,
        "t0 is kept while it carries a call"
    );
    assert_eq!(w.router.in_service()[0].trunk.name, "t9");
    w.router.hang_up(w.now, second);
    w.run_until(Duration::from_secs(4));
    assert_eq!(w.peers[1].byes, 1);
    assert_eq!(w.router.group().trunks[1].active, 0);
    w.router
        .replace_trunks(w.now, vec![trunk("t9", "127.0.0.2:5060", 0)]);
    assert_eq!(w.router.group().trunks.len(), 1);
    w.router.dial(w.now, "4930125", b"v=0\r\n".to_vec(), None);
    w.run_until(Duration::from_secs(5));
    assert_eq!(w.kinds().last().map(String::as_str), Some("answered t9"));
}

#[test]
fn a_registered_trunk_sends_register_to_its_carrier_and_refreshes_at_half_the_expiry() {
    let mut w = World::new(&[("127.0.0.2:5060", Carrier::Answers)], no_probes());
    assert!(w
        .router
        .register_trunk(w.now, "no-such-trunk", 120)
        .is_none());
    w.router.register_trunk(w.now, "t0", 120).unwrap();
    let Some(RouterOutput::Transmit(tr)) = w.router.poll_output() else {
        panic!("a REGISTER goes out at once")
    };
    assert_eq!(tr.to, addr("127.0.0.2:5060"));
    let text = String::from_utf8(tr.bytes.clone()).unwrap();
    assert!(
        text.starts_with("REGISTER sip:127.0.0.2 SIP/2.0\r\n"),
        "{text}"
    );
    assert!(text.contains("<sip:dialer@127.0.0.2>"), "{text}");
    w.in_flight
        .push((w.now + Duration::from_millis(5), addr(UA), tr.to, tr.bytes));
    w.run_until(Duration::from_secs(90));
    let registered: Vec<_> = w
        .events
        .iter()
        .filter_map(|(t, e)| match e {
            DialEvent::TrunkRegistered { trunk, expires } => Some((*t, trunk.clone(), *expires)),
            _ => None,
        })
        .collect();
    assert_eq!(registered.len(), 2, "{:?}", w.events);
    assert!(registered[0].0 < Duration::from_secs(1));
    assert!(
        registered[1].0 >= Duration::from_secs(60) && registered[1].0 < Duration::from_secs(61),
        "refreshed at half of 120 s: {registered:?}"
    );
    assert!(registered.iter().all(|(_, t, e)| t == "t0" && *e == 120));
}

#[test]
fn a_trunk_registration_left_unanswered_is_reported_failed_408() {
    let mut w = World::new(&[("127.0.0.2:5060", Carrier::Silent)], no_probes());
    w.router.register_trunk(w.now, "t0", 120).unwrap();
    // Timer F (64·T1 = 3.2 s) fails it; the retry comes 2.5 s or more later.
    w.run_until(Duration::from_secs(5));
    let failed: Vec<_> = w
        .events
        .iter()
        .filter(|(_, e)| matches!(e, DialEvent::TrunkRegistrationFailed { .. }))
        .collect();
    assert_eq!(failed.len(), 1, "{:?}", w.events);
    assert!(matches!(
        &failed[0].1,
        DialEvent::TrunkRegistrationFailed { trunk, status: 408, .. } if trunk == "t0"
    ));
}

/// From, P-Asserted-Identity and Privacy of the INVITE peer `p` received.
fn presented(w: &World, p: usize) -> (String, Option<String>, Option<String>) {
    let (_, invite) = w.peers[p].invites_seen.first().expect("an INVITE");
    let h = &invite.headers;
    let from = h.get("From").unwrap();
    let from = from.split(";tag=").next().unwrap().to_owned();
    (from, h.get("P-Asserted-Identity"), h.get("Privacy"))
}

#[test]
fn the_campaign_caller_id_is_the_from_user_by_default() {
    let mut w = World::new(&[("127.0.0.2:5060", Carrier::Answers)], no_probes());
    let caller = CallerId::parse("+442079460000").unwrap();
    w.router
        .dial_as(w.now, "4930123", Some(caller), b"v=0\r\n".to_vec(), None);
    w.run_until(Duration::from_secs(2));
    assert_eq!(w.kinds(), vec!["answered t0"]);
    assert_eq!(
        presented(&w, 0),
        ("<sip:+442079460000@127.0.0.1:5060>".into(), None, None)
    );
}

#[test]
fn a_call_without_a_campaign_caller_id_presents_our_user_not_anonymous() {
    let mut w = World::new(&[("127.0.0.2:5060", Carrier::Answers)], no_probes());
    w.router.dial(w.now, "4930123", b"v=0\r\n".to_vec(), None);
    w.run_until(Duration::from_secs(2));
    assert_eq!(
        presented(&w, 0),
        ("<sip:dialer@127.0.0.1:5060>".into(), None, None)
    );
}

#[test]
fn a_withheld_caller_id_is_anonymous_with_privacy_id_and_the_asserted_number() {
    let mut w = World::new(&[("127.0.0.2:5060", Carrier::Answers)], no_probes());
    w.router.set_presentation(
        "t0",
        Presentation {
            header: crate::trunk::presentation::CallerIdHeader::Pai,
            fixed_number: Some("+441134960000".into()),
            ..Presentation::default()
        },
    );
    let caller = CallerId::parse("anonymous").unwrap();
    w.router
        .dial_as(w.now, "4930123", Some(caller), b"v=0\r\n".to_vec(), None);
    w.run_until(Duration::from_secs(2));
    assert_eq!(
        presented(&w, 0),
        (
            "\"Anonymous\" <sip:anonymous@anonymous.invalid>".into(),
            Some("<sip:+441134960000@127.0.0.2>".into()),
            Some("id".into())
        )
    );
}

#[test]
fn a_call_failing_over_presents_its_caller_id_per_the_next_trunks_settings() {
    let mut w = World::new(
        &[
            ("127.0.0.2:5060", Carrier::Rejects(503)),
            ("127.0.0.3:5060", Carrier::Answers),
        ],
        no_probes(),
    );
    w.router.set_presentation(
        "t1",
        Presentation {
            header: crate::trunk::presentation::CallerIdHeader::Both,
            from_domain: Some(crate::uri::Host::Name("callgate.example".into())),
            user_phone: true,
            ..Presentation::default()
        },
    );
    let caller = CallerId::parse("+442079460000").unwrap();
    w.router
        .dial_as(w.now, "4930123", Some(caller), b"v=0\r\n".to_vec(), None);
    w.run_until(Duration::from_secs(5));
    assert_eq!(w.kinds(), vec!["answered t1"]);
    assert_eq!(
        presented(&w, 0),
        ("<sip:+442079460000@127.0.0.1:5060>".into(), None, None),
        "the first trunk presents per its own (default) settings"
    );
    assert_eq!(
        presented(&w, 1),
        (
            "<sip:+442079460000@callgate.example;user=phone>".into(),
            Some("<sip:+442079460000@callgate.example;user=phone>".into()),
            None
        )
    );
}

#[test]
fn registration_backoff_doubles_from_five_seconds_with_jitter_and_stops_at_five_minutes() {
    for roll in [0, 1, 7, 12_345, u64::MAX] {
        for (failures, full) in [(1, 5), (2, 10), (3, 20), (7, 300), (40, 300)] {
            let full = Duration::from_secs(full);
            let wait = registration_backoff(failures, roll);
            assert!(
                wait >= full / 2 && wait <= full,
                "failure {failures}, roll {roll}: {wait:?} not in [{:?}, {full:?}]",
                full / 2
            );
        }
    }
    let spread: std::collections::HashSet<_> = (0..50u64)
        .map(|r| registration_backoff(3, r * 7919))
        .collect();
    assert!(spread.len() > 10, "jitter spreads the retries: {spread:?}");
}

#[test]
fn a_refused_trunk_registration_is_retried_with_growing_back_off_until_it_is_registered() {
    let mut w = World::new(&[("127.0.0.2:5060", Carrier::Answers)], no_probes());
    w.peers[0].refuse_registers = 2;
    w.router.register_trunk(w.now, "t0", 120).unwrap();
    let registration = |w: &World| w.router.group().trunks[0].registration.clone();
    assert_eq!(registration(&w), Some(RegistrationState::Registering));
    w.run_until(Duration::from_secs(1));
    match registration(&w) {
        Some(RegistrationState::Failed {
            status: 403,
            next_try,
            ..
        }) => assert!(next_try > w.now, "the next try is ahead"),
        other => panic!("the refusal is visible with its next try: {other:?}"),
    }
    w.run_until(Duration::from_secs(30));
    let Some(RegistrationState::Registered { until }) = registration(&w) else {
        panic!("registered at last: {:?}", registration(&w))
    };
    assert!(until > w.now && until <= w.now + Duration::from_secs(120));
    let failed: Vec<_> = w
        .events
        .iter()
        .filter_map(|(t, e)| match e {
            DialEvent::TrunkRegistrationFailed {
                trunk,
                status,
                retry_in,
                ..
            } => Some((*t, trunk.clone(), *status, *retry_in)),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 2, "{:?}", w.kinds());
    assert!(failed.iter().all(|(_, t, s, _)| t == "t0" && *s == 403));
    let at = &w.peers[0].registers_at;
    assert_eq!(
        at.len(),
        3,
        "two refused, then one accepted: {:?}",
        w.kinds()
    );
    let (first, second) = (at[1] - at[0], at[2] - at[1]);
    assert!(
        first >= Duration::from_millis(2_500) && first <= Duration::from_millis(5_100),
        "first retry after 2.5-5 s: {first:?}"
    );
    assert!(
        second >= Duration::from_secs(5) && second <= Duration::from_millis(10_100),
        "second retry after 5-10 s: {second:?}"
    );
    assert!(
        (first.as_millis() as i128 - failed[0].3.as_millis() as i128).abs() < 100,
        "the event says when the next try goes out: {failed:?} vs {first:?}"
    );
    assert_eq!(
        w.kinds().last().map(String::as_str),
        Some("t0 registered 120"),
        "{:?}",
        w.kinds()
    );
}
