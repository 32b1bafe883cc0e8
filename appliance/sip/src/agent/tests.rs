//! Call scenarios in virtual time: our [`UserAgent`] against a scripted UAS built on a
//! bare transaction layer, over a simulated link that can drop chosen packets.

use super::*;
use crate::digest::DigestCredentials;
use crate::header::AuthValue;
use std::collections::HashMap;
use std::time::Duration;

const UA: &str = "127.0.0.1:5060";
const PEER: &str = "127.0.0.2:5080";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// What the scripted UAS does with each new request: responses after delays (ms).
type Script = Box<dyn FnMut(&Request) -> Vec<(u64, u16, Vec<Header>)>>;

struct Net {
    start: Instant,
    now: Instant,
    ua: UserAgent,
    peer: TransactionLayer,
    script: Script,
    scheduled: Vec<(Instant, TxKey, Request, u16, Vec<Header>)>,
    in_flight: Vec<(Instant, bool, Vec<u8>)>,
    events: Vec<(Duration, AgentEvent)>,
    /// Every request that reached the peer, as parsed (retransmissions, CANCEL and ACK
    /// included).
    peer_seen: Vec<Request>,
    drop_to_peer: Vec<Method>,
    /// Responses the peer's client transactions received.
    peer_responses: Vec<(Duration, u16)>,
    /// The same responses whole.
    peer_response_msgs: Vec<Response>,
    /// The source address the peer sends from.
    peer_addr: SocketAddr,
    /// Requests the peer's user got, by transaction (to answer a CANCEL with 487).
    peer_requests: HashMap<TxKey, Request>,
}

const DELAY: Duration = Duration::from_millis(10);

impl Net {
    fn new(credentials: Option<DigestCredentials>, script: Script) -> Net {
        let start = Instant::now();
        Net {
            start,
            now: start,
            ua: UserAgent::new(AgentConfig {
                local: addr(UA),
                user: "dialer".into(),
                timers: TimerConfig::default(),
                credentials,
                seed: 42,
            }),
            peer: TransactionLayer::new(TimerConfig::default()),
            script,
            scheduled: Vec::new(),
            in_flight: Vec::new(),
            events: Vec::new(),
            peer_seen: Vec::new(),
            drop_to_peer: Vec::new(),
            peer_responses: Vec::new(),
            peer_response_msgs: Vec::new(),
            peer_addr: addr(PEER),
            peer_requests: HashMap::new(),
        }
    }

    fn flush(&mut self) {
        let t = self.now - self.start;
        while let Some(o) = self.ua.poll_output() {
            match o {
                AgentOutput::Transmit(tr) => {
                    assert_eq!(tr.to, self.peer_addr, "responses follow received/rport");
                    let m = parse_datagram(&tr.bytes).unwrap();
                    let drop = match &m {
                        Incoming::Message(SipMessage::Request(r)) => {
                            if let Some(i) = self.drop_to_peer.iter().position(|d| *d == r.method) {
                                self.drop_to_peer.remove(i);
                                true
                            } else {
                                false
                            }
                        }
                        _ => false,
                    };
                    if !drop {
                        self.in_flight.push((self.now + DELAY, true, tr.bytes));
                    }
                }
                AgentOutput::Event(e) => self.events.push((t, e)),
            }
        }
        while let Some(o) = self.peer.poll_output() {
            match o {
                Output::Transmit(tr) => {
                    assert_eq!(
                        tr.to.ip(),
                        addr(UA).ip(),
                        "the peer answers where Via/rport say"
                    );
                    self.in_flight.push((self.now + DELAY, false, tr.bytes));
                }
                Output::Event(TxEvent::Request { key, request, .. }) => {
                    self.peer_requests.insert(key.clone(), request.clone());
                    for (delay, status, extra) in (self.script)(&request) {
                        self.scheduled.push((
                            self.now + Duration::from_millis(delay),
                            key.clone(),
                            request.clone(),
                            status,
                            extra,
                        ));
                    }
                }
                Output::Event(TxEvent::Response { response, .. }) => {
                    self.peer_responses.push((t, response.status));
                    self.peer_response_msgs.push(response);
                }
                Output::Event(TxEvent::Cancelled { key }) => {
                    if let Some(req) = self.peer_requests.get(&key) {
                        self.scheduled
                            .push((self.now, key, req.clone(), 487, Vec::new()));
                    }
                }
                Output::Event(_) => {}
            }
        }
    }

    fn run_until(&mut self, until: Duration) {
        let end = self.start + until;
        loop {
            self.flush();
            let next = [
                self.ua.poll_timeout(),
                self.peer.poll_timeout(),
                self.in_flight.iter().map(|f| f.0).min(),
                self.scheduled.iter().map(|s| s.0).min(),
            ]
            .into_iter()
            .flatten()
            .min();
            match next {
                Some(n) if n <= end => self.now = self.now.max(n),
                _ => {
                    self.now = end;
                    self.flush();
                    return;
                }
            }
            let now = self.now;
            let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.scheduled)
                .into_iter()
                .partition(|s| s.0 <= now);
            self.scheduled = later;
            for (_, key, req, status, extra) in due {
                let mut r = response_to(&req, status, "Scripted", Some("peer-tag"));
                if (200..300).contains(&status) && req.method == Method::Invite {
                    r.headers
                        .push(Header::Contact(Contact::Address(NameAddr::new(
                            Uri::parse(&format!("sip:uas@{PEER}")).unwrap(),
                        ))));
                    r.body = b"v=0\r\n".to_vec();
                }
                for h in extra {
                    r.headers.push(h);
                }
                let _ = self.peer.respond(now, &key, r);
            }
            let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.in_flight)
                .into_iter()
                .partition(|f| f.0 <= now);
            self.in_flight = later;
            for (_, to_peer, bytes) in due {
                if to_peer {
                    let Ok(Incoming::Message(m)) = parse_datagram(&bytes) else {
                        panic!()
                    };
                    if let SipMessage::Request(r) = &m {
                        self.peer_seen.push(r.clone());
                    }
                    self.peer.handle_message(now, addr(UA), m);
                } else {
                    self.ua.handle_datagram(now, self.peer_addr, &bytes);
                }
            }
            self.ua.handle_timeout(now);
            self.peer.handle_timeout(now);
            assert!(self.ua.legs.consistent(), "the legs' timeline at {now:?}");
            assert!(
                self.ua
                    .leg_transactions
                    .keys()
                    .all(|l| self.ua.legs.get(l).is_some()),
                "transactions kept for a forgotten leg at {now:?}"
            );
        }
    }

    fn call(&mut self) -> LegId {
        let leg = self.ua.place_call(
            self.now,
            CallSpec::new(
                Uri::parse("sip:+4930123@127.0.0.2").unwrap(),
                addr(PEER),
                b"v=0\r\n".to_vec(),
            ),
        );
        self.flush();
        leg
    }

    fn seen(&self, m: Method) -> Vec<&Request> {
        self.peer_seen.iter().filter(|r| r.method == m).collect()
    }

    fn event_kinds(&self) -> Vec<String> {
        self.events
            .iter()
            .map(|(_, e)| match e {
                AgentEvent::Progress { status, .. } => format!("progress {status}"),
                AgentEvent::Answered { .. } => "answered".into(),
                AgentEvent::Failed { status, .. } => format!("failed {status}"),
                AgentEvent::Ended { by_peer, .. } => format!("ended by_peer={by_peer}"),
                AgentEvent::Reinvited { status, .. } => format!("reinvited {status}"),
                AgentEvent::Updated { status, .. } => format!("updated {status}"),
                AgentEvent::ProbeResult { status, .. } => format!("probe {status}"),
                AgentEvent::Registered { expires, .. } => format!("registered {expires}"),
                AgentEvent::Incoming { number, .. } => format!("incoming {number}"),
                AgentEvent::RegistrationFailed { status, .. } => {
                    format!("register failed {status}")
                }
            })
            .collect()
    }
}

fn answering(ring_ms: u64) -> Script {
    Box::new(move |r: &Request| match r.method {
        Method::Invite => vec![(0, 180, vec![]), (ring_ms, 200, vec![])],
        Method::Bye | Method::Options => vec![(0, 200, vec![])],
        _ => vec![],
    })
}

#[test]
fn an_answered_call_is_acked_and_ended_with_bye() {
    let mut net = Net::new(None, answering(500));
    let leg = net.call();
    net.run_until(Duration::from_secs(2));
    assert_eq!(net.event_kinds(), vec!["progress 180", "answered"]);
    let acks = net.seen(Method::Ack);
    assert_eq!(acks.len(), 1);
    let ack = acks[0];
    assert_eq!(ack.headers.cseq().unwrap().seq, 1);
    assert_eq!(ack.headers.to().unwrap().tag(), Some("peer-tag"));
    assert_eq!(
        ack.uri.to_string(),
        format!("sip:uas@{PEER}"),
        "ACK goes to the Contact"
    );
    let invite_branch = net.seen(Method::Invite)[0]
        .headers
        .top_via()
        .unwrap()
        .branch()
        .map(str::to_owned);
    assert_ne!(
        ack.headers.top_via().unwrap().branch().map(str::to_owned),
        invite_branch,
        "2xx ACK is its own transaction"
    );
    net.ua.hang_up(net.now, leg).unwrap();
    net.run_until(Duration::from_secs(3));
    assert_eq!(net.event_kinds().last().unwrap(), "ended by_peer=false");
    let bye = net.seen(Method::Bye)[0];
    assert_eq!(bye.headers.cseq().unwrap().seq, 2);
    assert_eq!(net.ua.legs(), 0);
}

#[test]
fn a_lost_ack_is_resent_when_the_200_is_retransmitted() {
    let mut net = Net::new(None, answering(100));
    net.drop_to_peer.push(Method::Ack);
    net.call();
    net.run_until(Duration::from_secs(5));
    // The peer's transaction layer does not retransmit 2xx by itself (its UAS core
    // would); emulate that core by resending the 200 once.
    let invite = net.seen(Method::Invite)[0].clone();
    let mut ok = response_to(&invite, 200, "OK", Some("peer-tag"));
    ok.headers
        .push(Header::Contact(Contact::Address(NameAddr::new(
            Uri::parse(&format!("sip:uas@{PEER}")).unwrap(),
        ))));
    net.ua.handle_datagram(net.now, addr(PEER), &ok.to_bytes());
    net.run_until(Duration::from_secs(6));
    assert_eq!(
        net.seen(Method::Ack).len(),
        1,
        "the first ACK was lost, the resent one arrived"
    );
    assert_eq!(net.event_kinds(), vec!["progress 180", "answered"]);
}

#[test]
fn busy_and_decline_are_reported_as_failures_and_acked() {
    for status in [486u16, 603] {
        let mut net = Net::new(
            None,
            Box::new(move |r: &Request| match r.method {
                Method::Invite => vec![(0, 180, vec![]), (200, status, vec![])],
                _ => vec![],
            }),
        );
        net.call();
        net.run_until(Duration::from_secs(40));
        assert_eq!(
            net.event_kinds(),
            vec!["progress 180".to_owned(), format!("failed {status}")]
        );
        assert_eq!(net.seen(Method::Ack).len(), 1);
        assert_eq!(net.ua.legs(), 0);
        assert_eq!(net.ua.tx.live(), (0, 0));
    }
}

fn challenge_then_answer(alg: &'static str) -> Script {
    Box::new(move |r: &Request| match r.method {
        Method::Invite if r.headers.authorization().next().is_none() => {
            let ch = AuthValue::parse(&format!(
                r#"Digest realm="carrier.example", nonce="abc123", qop="auth", algorithm={alg}"#
            ))
            .unwrap();
            vec![(0, 401, vec![Header::WwwAuthenticate(ch)])]
        }
        Method::Invite => vec![(0, 180, vec![]), (100, 200, vec![])],
        Method::Bye => vec![(0, 200, vec![])],
        _ => vec![],
    })
}

#[test]
fn a_401_challenge_is_answered_with_digest_credentials() {
    for alg in ["MD5", "SHA-256"] {
        let creds = DigestCredentials {
            username: "branch7".into(),
            password: "s3cret".into(),
            realm: None,
        };
        let mut net = Net::new(Some(creds.clone()), challenge_then_answer(alg));
        net.call();
        net.run_until(Duration::from_secs(2));
        assert_eq!(net.event_kinds(), vec!["progress 180", "answered"], "{alg}");
        let invites = net.seen(Method::Invite);
        assert_eq!(invites.len(), 2);
        let second = invites[1];
        assert_eq!(second.headers.cseq().unwrap().seq, 2);
        assert_eq!(second.headers.call_id(), invites[0].headers.call_id());
        let auth = second.headers.authorization().next().unwrap();
        // Verify as the carrier would: recompute the digest from the password.
        let mut server_side = DigestSession::new(creds);
        server_side
            .challenge(
                &AuthValue::parse(&format!(
                    r#"Digest realm="carrier.example", nonce="abc123", qop="auth", algorithm={alg}"#
                ))
                .unwrap(),
            )
            .unwrap();
        let expected = server_side
            .authorize(
                &Method::Invite,
                &auth.param("uri").unwrap(),
                &auth.param("cnonce").unwrap(),
            )
            .unwrap();
        assert_eq!(auth.param("response"), expected.param("response"), "{alg}");
        assert_eq!(auth.param("algorithm").as_deref(), Some(alg));
    }
}

#[test]
fn wrong_credentials_fail_the_call_after_one_retry() {
    let mut net = Net::new(
        Some(DigestCredentials {
            username: "u".into(),
            password: "wrong".into(),
            realm: None,
        }),
        Box::new(|r: &Request| match r.method {
            Method::Invite => {
                let ch = AuthValue::parse(r#"Digest realm="r", nonce="n""#).unwrap();
                vec![(0, 401, vec![Header::WwwAuthenticate(ch)])]
            }
            _ => vec![],
        }),
    );
    net.call();
    net.run_until(Duration::from_secs(40));
    assert_eq!(net.seen(Method::Invite).len(), 2);
    assert_eq!(net.event_kinds(), vec!["failed 401"]);
}

#[test]
fn hanging_up_while_ringing_cancels_and_reports_487() {
    let mut net = Net::new(
        None,
        Box::new(|r: &Request| match r.method {
            Method::Invite => vec![(0, 180, vec![])],
            _ => vec![],
        }),
    );
    let leg = net.call();
    net.run_until(Duration::from_millis(500));
    net.ua.hang_up(net.now, leg).unwrap();
    net.run_until(Duration::from_millis(600));
    assert_eq!(net.seen(Method::Cancel).len(), 1);
    // The peer's user answers the cancelled INVITE with 487.
    let invite = net.seen(Method::Invite)[0].clone();
    let key = TxKey {
        role: crate::transaction::Role::Server,
        branch: invite.headers.top_via().unwrap().branch().unwrap().into(),
        method: Method::Invite,
        sent_by: UA.into(),
    };
    net.peer
        .respond(
            net.now,
            &key,
            response_to(&invite, 487, "Request Terminated", Some("peer-tag")),
        )
        .unwrap();
    net.run_until(Duration::from_secs(40));
    assert_eq!(net.event_kinds(), vec!["progress 180", "failed 487"]);
    assert_eq!(net.seen(Method::Ack).len(), 1);
}

#[test]
fn cancel_is_held_until_a_provisional_arrives() {
    let mut net = Net::new(
        None,
        Box::new(|r: &Request| match r.method {
            Method::Invite => vec![(300, 180, vec![])],
            _ => vec![],
        }),
    );
    let leg = net.call();
    net.ua.hang_up(net.now, leg).unwrap();
    // The peer's 100 Trying reaches us at 20 ms; until then no CANCEL may leave (§9.1).
    net.run_until(Duration::from_millis(19));
    assert!(net.ua.poll_output().is_none());
    net.run_until(Duration::from_millis(100));
    let cancels = net.seen(Method::Cancel);
    assert_eq!(cancels.len(), 1);
    assert_eq!(
        cancels[0].headers.top_via().unwrap().branch(),
        net.seen(Method::Invite)[0]
            .headers
            .top_via()
            .unwrap()
            .branch(),
        "CANCEL carries the INVITE's branch"
    );
}

#[test]
fn a_200_crossing_our_cancel_is_acked_and_then_ended_with_bye() {
    let mut net = Net::new(None, answering(500));
    let leg = net.call();
    // Hang up at the instant the peer answers: CANCEL and 200 cross on the link.
    net.run_until(Duration::from_millis(510));
    net.ua.hang_up(net.now, leg).unwrap();
    net.run_until(Duration::from_secs(5));
    assert_eq!(net.seen(Method::Cancel).len(), 1);
    assert_eq!(net.seen(Method::Ack).len(), 1);
    assert_eq!(net.seen(Method::Bye).len(), 1);
    assert_eq!(
        net.event_kinds(),
        vec!["progress 180", "answered", "ended by_peer=false"]
    );
}

#[test]
fn a_second_forked_2xx_is_acked_and_released_with_bye() {
    let mut net = Net::new(None, answering(100));
    net.call();
    net.run_until(Duration::from_secs(1));
    let invite = net.seen(Method::Invite)[0].clone();
    let mut fork = response_to(&invite, 200, "OK", Some("other-fork"));
    fork.headers
        .push(Header::Contact(Contact::Address(NameAddr::new(
            Uri::parse(&format!("sip:fork@{PEER}")).unwrap(),
        ))));
    net.ua
        .handle_datagram(net.now, addr(PEER), &fork.to_bytes());
    net.run_until(Duration::from_secs(2));
    let acks = net.seen(Method::Ack);
    assert_eq!(acks.len(), 2);
    assert_eq!(acks[1].headers.to().unwrap().tag(), Some("other-fork"));
    let byes = net.seen(Method::Bye);
    assert_eq!(byes.len(), 1);
    assert_eq!(byes[0].uri.to_string(), format!("sip:fork@{PEER}"));
    // The call itself stays up.
    assert_eq!(net.event_kinds(), vec!["progress 180", "answered"]);
    assert_eq!(net.ua.legs(), 1);
}

#[test]
fn a_reinvite_changes_media_and_is_acked() {
    let mut net = Net::new(None, answering(100));
    let leg = net.call();
    net.run_until(Duration::from_secs(1));
    net.ua
        .reinvite(net.now, leg, b"v=0\r\na=sendonly\r\n".to_vec())
        .unwrap();
    net.run_until(Duration::from_secs(2));
    assert_eq!(net.event_kinds().last().unwrap(), "reinvited 200");
    let invites = net.seen(Method::Invite);
    assert_eq!(invites.len(), 2);
    assert_eq!(invites[1].headers.cseq().unwrap().seq, 2);
    assert_eq!(invites[1].headers.to().unwrap().tag(), Some("peer-tag"));
    assert!(invites[1].body.ends_with(b"a=sendonly\r\n"));
    let acks = net.seen(Method::Ack);
    assert_eq!(acks.len(), 2);
    assert_eq!(acks[1].headers.cseq().unwrap().seq, 2);
}

#[test]
fn the_peers_bye_ends_the_call_and_is_answered() {
    let mut net = Net::new(None, answering(100));
    net.call();
    net.run_until(Duration::from_secs(1));
    let invite = net.seen(Method::Invite)[0].clone();
    // The peer's BYE: its From is our To (with its tag), its To is our From.
    let mut h = Headers::default();
    h.push(Header::Via(Via::new(
        Transport::Udp,
        Host::V4("127.0.0.2".parse().unwrap()),
        Some(5080),
        "z9hG4bKpeerbye",
    )));
    let mut from = invite.headers.to().unwrap().clone();
    from.set_tag("peer-tag");
    h.push(Header::From(from));
    h.push(Header::To(invite.headers.from().unwrap().clone()));
    h.push(Header::CallId(invite.headers.call_id().unwrap().clone()));
    h.push(Header::CSeq(CSeq {
        seq: 1,
        method: Method::Bye,
    }));
    let bye = Request {
        method: Method::Bye,
        uri: Uri::parse(&format!("sip:dialer@{UA}")).unwrap(),
        headers: h,
        body: Vec::new(),
    };
    net.ua.handle_datagram(net.now, addr(PEER), &bye.to_bytes());
    let mut answered = None;
    while let Some(o) = net.ua.poll_output() {
        match o {
            AgentOutput::Transmit(t) => answered = Some(parse_datagram(&t.bytes).unwrap()),
            AgentOutput::Event(e) => net.events.push((Duration::ZERO, e)),
        }
    }
    let Some(Incoming::Message(SipMessage::Response(r))) = answered else {
        panic!()
    };
    assert_eq!(r.status, 200);
    assert_eq!(net.event_kinds().last().unwrap(), "ended by_peer=true");
    assert_eq!(net.ua.legs(), 0);
}

#[test]
fn options_probes_report_the_status_or_408() {
    let mut net = Net::new(None, answering(0));
    net.ua.probe(
        net.now,
        Uri::parse("sip:127.0.0.2:5080").unwrap(),
        addr(PEER),
    );
    net.run_until(Duration::from_secs(1));
    assert_eq!(net.event_kinds(), vec!["probe 200"]);
    let mut silent = Net::new(None, Box::new(|_: &Request| vec![]));
    silent.drop_to_peer = vec![Method::Options; 20];
    silent.ua.probe(
        silent.now,
        Uri::parse("sip:127.0.0.2:5080").unwrap(),
        addr(PEER),
    );
    silent.run_until(Duration::from_secs(40));
    assert_eq!(silent.event_kinds(), vec!["probe 408"]);
}

#[test]
fn a_malformed_request_from_the_peer_is_answered_400() {
    let mut net = Net::new(None, answering(0));
    let bad = b"OPTIONS sip:dialer@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5080;branch=z9hG4bKx\r\n\
        From: Bad, Name <sip:x@y>;tag=1\r\nTo: <sip:dialer@127.0.0.1>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n";
    net.ua.handle_datagram(net.now, addr(PEER), bad);
    let Some(AgentOutput::Transmit(t)) = net.ua.poll_output() else {
        panic!()
    };
    assert!(t
        .bytes
        .starts_with(b"SIP/2.0 400 Bad Request (malformed From header"));
}

#[test]
fn an_unanswered_call_is_cancelled_at_its_ring_timeout() {
    let mut net = Net::new(
        None,
        Box::new(|r: &Request| match r.method {
            Method::Invite => vec![(0, 180, vec![])],
            _ => vec![],
        }),
    );
    net.ua.place_call(
        net.now,
        CallSpec {
            ring_timeout: Some(Duration::from_secs(20)),
            ..CallSpec::new(
                Uri::parse("sip:+4930123@127.0.0.2").unwrap(),
                addr(PEER),
                b"v=0\r\n".to_vec(),
            )
        },
    );
    net.run_until(Duration::from_millis(19_999));
    assert!(net.seen(Method::Cancel).is_empty());
    net.run_until(Duration::from_millis(20_011));
    assert_eq!(net.seen(Method::Cancel).len(), 1, "CANCEL left at 20 s");
}

fn registrar(grant: u32) -> Script {
    Box::new(move |r: &Request| match r.method {
        Method::Register if r.headers.authorization().next().is_none() => {
            let ch = AuthValue::parse(r#"Digest realm="reg", nonce="n1", qop="auth""#).unwrap();
            vec![(0, 401, vec![Header::WwwAuthenticate(ch)])]
        }
        Method::Register => vec![(0, 200, vec![Header::Expires(grant)])],
        _ => vec![],
    })
}

#[test]
fn registration_answers_the_challenge_and_refreshes_at_half_the_expiry_reusing_the_nonce() {
    let creds = DigestCredentials {
        username: "trunk7".into(),
        password: "pw".into(),
        realm: None,
    };
    let mut net = Net::new(None, registrar(60));
    let spec = RegistrationSpec {
        registrar: Uri::parse("sip:127.0.0.2").unwrap(),
        dest: addr(PEER),
        aor: Uri::parse("sip:trunk7@carrier.example").unwrap(),
        expires: 3600,
        credentials: Some(creds),
    };
    let reg = net.ua.register(net.now, spec);
    net.run_until(Duration::from_secs(1));
    assert_eq!(net.event_kinds(), vec!["registered 60"]);
    // Refreshed at 30 s (half of 60) with the nonce reused: no new 401 round trip.
    net.run_until(Duration::from_secs(31));
    assert_eq!(net.event_kinds(), vec!["registered 60", "registered 60"]);
    let regs = net.seen(Method::Register);
    assert_eq!(regs.len(), 3, "challenge, answer, refresh");
    let refresh = regs[2];
    let auth = refresh.headers.authorization().next().unwrap();
    assert_eq!(auth.param("nc").as_deref(), Some("00000002"));
    assert_eq!(auth.param("nonce").as_deref(), Some("n1"));
    assert_eq!(refresh.headers.call_id(), regs[0].headers.call_id());
    assert_eq!(refresh.headers.cseq().unwrap().seq, 3);
    // Unregistering sends Expires: 0 and stops the refreshes.
    net.ua.unregister(net.now, reg);
    net.run_until(Duration::from_secs(120));
    let regs = net.seen(Method::Register);
    assert_eq!(regs.len(), 4);
    assert_eq!(regs[3].headers.expires(), Some(&0));
    assert_eq!(net.event_kinds().last().unwrap(), "registered 0");
}

#[test]
fn a_refused_registration_is_reported_and_not_refreshed() {
    let mut net = Net::new(
        None,
        Box::new(|r: &Request| match r.method {
            Method::Register => vec![(0, 403, vec![])],
            _ => vec![],
        }),
    );
    net.ua.register(
        net.now,
        RegistrationSpec {
            registrar: Uri::parse("sip:127.0.0.2").unwrap(),
            dest: addr(PEER),
            aor: Uri::parse("sip:x@carrier.example").unwrap(),
            expires: 60,
            credentials: None,
        },
    );
    net.run_until(Duration::from_secs(300));
    assert_eq!(net.event_kinds(), vec!["register failed 403"]);
    assert_eq!(net.seen(Method::Register).len(), 1);
}

use crate::inbound::{InboundPolicy, InboundRoute, RouteTarget, UnknownSource};

fn policy(unknown: UnknownSource) -> InboundPolicy {
    InboundPolicy {
        allowed_sources: vec!["127.0.0.2".parse().unwrap()],
        trunk_names: Vec::new(),
        unknown_source: unknown,
        per_source_rate: 10,
        per_source_burst: 20,
        routes: vec![InboundRoute {
            number: "4930*".into(),
            target: RouteTarget::AgentGroup("berlin".into()),
        }],
    }
}

/// An INVITE from the peer to us, with a Contact so the dialog has a remote target.
fn peer_invite(branch: &str) -> Request {
    let mut h = Headers::default();
    h.push(Header::Via(Via::new(
        Transport::Udp,
        Host::V4("127.0.0.2".parse().unwrap()),
        Some(5080),
        branch,
    )));
    let mut from = NameAddr::new(Uri::parse("sip:+4915100@carrier").unwrap());
    from.set_tag("caller");
    h.push(Header::From(from));
    h.push(Header::To(NameAddr::new(
        Uri::parse("sip:+4930777@box").unwrap(),
    )));
    h.push(Header::CallId(format!("in-{branch}")));
    h.push(Header::CSeq(CSeq {
        seq: 1,
        method: Method::Invite,
    }));
    h.push(Header::Contact(Contact::Address(NameAddr::new(
        Uri::parse(&format!("sip:carrier@{PEER}")).unwrap(),
    ))));
    Request {
        method: Method::Invite,
        uri: Uri::parse("sip:+4930777@127.0.0.1").unwrap(),
        headers: h,
        body: b"v=0\r\n".to_vec(),
    }
}

fn incoming_leg(net: &Net) -> LegId {
    net.events
        .iter()
        .find_map(|(_, e)| match e {
            AgentEvent::Incoming { leg, .. } => Some(*leg),
            _ => None,
        })
        .expect("an incoming call")
}

/// The peer's ACK for our 2xx (built from the INVITE and our To tag).
fn peer_ack(invite: &Request, to_tag: &str) -> Request {
    let mut ack = invite.clone();
    ack.method = Method::Ack;
    ack.body.clear();
    for h in &mut ack.headers.0 {
        match h {
            Header::CSeq(c) => c.method = Method::Ack,
            Header::Via(v) => {
                *v = Via::new(Transport::Udp, v.host.clone(), v.port, "z9hG4bKpeerack")
            }
            Header::To(t) => t.set_tag(to_tag),
            _ => {}
        }
    }
    ack
}

#[test]
fn an_inbound_call_names_the_trunk_whose_address_sent_it() {
    let mut net = Net::new(None, answering(0));
    let mut named = policy(UnknownSource::Reject);
    named.trunk_names = vec![
        ("127.0.0.9".parse().unwrap(), "other".into()),
        ("127.0.0.2".parse().unwrap(), "carrier-b".into()),
    ];
    net.ua.set_inbound_policy(named);
    net.peer
        .start_client(net.now, peer_invite("z9hG4bKnamed"), addr(UA), false)
        .unwrap();
    net.run_until(Duration::from_millis(50));
    let trunks: Vec<_> = net
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            AgentEvent::Incoming { trunk, .. } => Some(trunk.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(trunks, vec![Some("carrier-b".to_string())]);
}

#[test]
fn an_inbound_call_from_a_trunk_is_routed_rung_answered_and_acked() {
    let mut net = Net::new(None, answering(0));
    net.ua.set_inbound_policy(policy(UnknownSource::Reject));
    let invite = peer_invite("z9hG4bKin1");
    net.peer
        .start_client(net.now, invite.clone(), addr(UA), false)
        .unwrap();
    net.run_until(Duration::from_millis(50));
    assert_eq!(net.event_kinds(), vec!["incoming 4930777"]);
    let AgentEvent::Incoming {
        target,
        from,
        trunk,
        ..
    } = &net.events[0].1
    else {
        panic!()
    };
    assert_eq!(target, &RouteTarget::AgentGroup("berlin".into()));
    assert_eq!(from, "sip:+4915100@carrier");
    assert_eq!(trunk, &None, "the policy names no trunk for the address");
    let leg = incoming_leg(&net);
    net.ua.ring(net.now, leg).unwrap();
    net.ua
        .answer(net.now, leg, b"v=0\r\nm=audio 4000 RTP/AVP 0\r\n".to_vec())
        .unwrap();
    // The peer does not ACK yet: our 200 is retransmitted at T1, 2*T1.
    net.run_until(Duration::from_millis(1600));
    let oks: Vec<_> = net
        .peer_responses
        .iter()
        .filter(|(_, s)| *s == 200)
        .collect();
    assert_eq!(
        oks.len(),
        3,
        "the first 200 and two retransmissions: {oks:?}"
    );
    assert!(net.peer_responses.iter().any(|(_, s)| *s == 180));
    // The ACK stops the retransmissions and the call is up.
    let to_tag = {
        let l = net.ua.legs.get(&leg).unwrap();
        l.dialog.as_ref().unwrap().local_tag.clone()
    };
    let ack = peer_ack(&invite, &to_tag);
    net.ua.handle_datagram(net.now, addr(PEER), &ack.to_bytes());
    net.run_until(Duration::from_secs(10));
    assert_eq!(net.event_kinds(), vec!["incoming 4930777", "answered"]);
    assert_eq!(
        net.peer_responses.iter().filter(|(_, s)| *s == 200).count(),
        3
    );
    // We hang up: BYE to the caller's Contact.
    net.ua.hang_up(net.now, leg).unwrap();
    net.run_until(Duration::from_secs(11));
    let bye = net.seen(Method::Bye);
    assert_eq!(bye.len(), 1);
    assert_eq!(bye[0].uri.to_string(), format!("sip:carrier@{PEER}"));
    assert_eq!(bye[0].headers.from().unwrap().tag(), Some(to_tag.as_str()));
}

#[test]
fn an_unacknowledged_answer_is_given_up_with_bye_after_64_t1() {
    let mut net = Net::new(None, answering(0));
    net.ua.set_inbound_policy(policy(UnknownSource::Reject));
    net.peer
        .start_client(net.now, peer_invite("z9hG4bKin2"), addr(UA), false)
        .unwrap();
    net.run_until(Duration::from_millis(50));
    let leg = incoming_leg(&net);
    net.ua.answer(net.now, leg, b"v=0\r\n".to_vec()).unwrap();
    net.run_until(Duration::from_secs(40));
    assert_eq!(net.seen(Method::Bye).len(), 1);
    assert_eq!(net.event_kinds().last().unwrap(), "ended by_peer=false");
}

#[test]
fn unknown_sources_get_403_or_nothing_at_all() {
    for (unknown, expect) in [
        (UnknownSource::Reject, vec![100u16, 403]),
        (UnknownSource::Ignore, vec![]),
    ] {
        let mut net = Net::new(None, answering(0));
        net.ua.set_inbound_policy(policy(unknown));
        net.peer_addr = addr("127.0.0.9:5080");
        net.peer
            .start_client(net.now, peer_invite("z9hG4bKscan"), addr(UA), false)
            .unwrap();
        net.run_until(Duration::from_secs(40));
        let statuses: Vec<u16> = net.peer_responses.iter().map(|(_, s)| *s).collect();
        assert_eq!(
            statuses, expect,
            "{unknown:?}: not even 100 Trying when ignored"
        );
        assert!(net.events.is_empty());
    }
}

#[test]
fn the_callers_cancel_ends_an_unanswered_inbound_call_with_487() {
    let mut net = Net::new(None, answering(0));
    net.ua.set_inbound_policy(policy(UnknownSource::Reject));
    let invite = peer_invite("z9hG4bKin3");
    net.peer
        .start_client(net.now, invite.clone(), addr(UA), false)
        .unwrap();
    net.run_until(Duration::from_millis(50));
    let mut cancel = invite.clone();
    cancel.method = Method::Cancel;
    cancel.body.clear();
    for h in &mut cancel.headers.0 {
        if let Header::CSeq(c) = h {
            c.method = Method::Cancel;
        }
    }
    cancel
        .headers
        .0
        .retain(|h| !matches!(h, Header::Contact(_)));
    net.peer
        .start_client(net.now, cancel, addr(UA), false)
        .unwrap();
    net.run_until(Duration::from_secs(1));
    assert_eq!(net.event_kinds(), vec!["incoming 4930777", "failed 487"]);
    let finals: Vec<u16> = net
        .peer_responses
        .iter()
        .map(|(_, s)| *s)
        .filter(|s| *s >= 200)
        .collect();
    assert!(finals.contains(&487) && finals.contains(&200), "{finals:?}");
}

use crate::registrar::{PhoneAccount, Registrar, RegistrarConfig};

/// The phone at PEER registers `contacts` with digest through the UA; returns the 200.
fn register_phone(net: &mut Net, contacts: &[&str]) -> Response {
    let mut session = DigestSession::new(DigestCredentials {
        username: "desk1".into(),
        password: "pw1".into(),
        realm: None,
    });
    let build = |seq: u32, auth: Option<AuthValue>| {
        let mut h = Headers::default();
        h.push(Header::Via(Via::new(
            Transport::Udp,
            Host::V4("127.0.0.2".parse().unwrap()),
            Some(5080),
            &format!("z9hG4bKreg{seq}"),
        )));
        let aor = Uri::parse("sip:desk1@127.0.0.1").unwrap();
        let mut from = NameAddr::new(aor.clone());
        from.set_tag("ph");
        h.push(Header::From(from));
        h.push(Header::To(NameAddr::new(aor)));
        h.push(Header::CallId("reg-desk1".into()));
        h.push(Header::CSeq(CSeq {
            seq,
            method: Method::Register,
        }));
        for c in contacts {
            h.push(Header::Contact(Contact::Address(NameAddr::new(
                Uri::parse(c).unwrap(),
            ))));
        }
        h.push(Header::Expires(300));
        if let Some(a) = auth {
            h.push(Header::Authorization(a));
        }
        Request {
            method: Method::Register,
            uri: Uri::parse("sip:127.0.0.1").unwrap(),
            headers: h,
            body: Vec::new(),
        }
    };
    let answer = |net: &mut Net, req: Request| -> Response {
        net.ua.handle_datagram(net.now, addr(PEER), &req.to_bytes());
        loop {
            match net.ua.poll_output() {
                Some(AgentOutput::Transmit(t)) => {
                    if let Ok(Incoming::Message(SipMessage::Response(r))) = parse_datagram(&t.bytes)
                    {
                        if r.status >= 200 {
                            return r;
                        }
                    }
                }
                Some(AgentOutput::Event(e)) => net.events.push((Duration::ZERO, e)),
                None => panic!("no final response"),
            }
        }
    };
    let challenge = answer(net, build(1, None));
    assert_eq!(challenge.status, 401);
    session
        .challenge(challenge.headers.www_authenticate().next().unwrap())
        .unwrap();
    let cred = session
        .authorize(&Method::Register, "sip:127.0.0.1", "cn1")
        .unwrap();
    answer(net, build(2, Some(cred)))
}

fn with_registrar(net: &mut Net) {
    net.ua.set_registrar(Registrar::new(
        RegistrarConfig::default(),
        vec![PhoneAccount {
            username: "desk1".into(),
            password: "pw1".into(),
        }],
    ));
}

#[test]
fn a_registered_phone_is_called_at_the_address_it_registered_from() {
    let mut net = Net::new(None, answering(100));
    with_registrar(&mut net);
    let ok = register_phone(&mut net, &["sip:desk1@10.1.1.5:5060"]);
    assert_eq!(ok.status, 200);
    let legs = net
        .ua
        .call_phone(net.now, "desk1", b"v=0\r\n".to_vec(), None)
        .unwrap();
    assert_eq!(legs.len(), 1);
    net.run_until(Duration::from_secs(2));
    let invite = net.seen(Method::Invite)[0];
    assert_eq!(
        invite.uri.to_string(),
        "sip:desk1@10.1.1.5:5060",
        "Request-URI is the Contact"
    );
    // (The harness asserts every transmission went to PEER, the REGISTER's source.)
    assert!(net.event_kinds().contains(&"answered".to_owned()));
    assert!(net
        .ua
        .call_phone(net.now, "nobody", Vec::new(), None)
        .is_err());
}

#[test]
fn a_phone_with_two_contacts_rings_both_and_the_first_answer_cancels_the_other() {
    let mut net = Net::new(
        None,
        Box::new(|r: &Request| match r.method {
            Method::Invite if r.uri.to_string().contains("10.1.1.5") => {
                vec![(0, 180, vec![]), (300, 200, vec![])]
            }
            Method::Invite => vec![(0, 180, vec![])],
            _ => vec![],
        }),
    );
    with_registrar(&mut net);
    register_phone(&mut net, &["sip:desk1@10.1.1.5", "sip:desk1@10.1.1.6"]);
    let legs = net
        .ua
        .call_phone(net.now, "desk1", b"v=0\r\n".to_vec(), None)
        .unwrap();
    assert_eq!(legs.len(), 2);
    net.run_until(Duration::from_secs(40));
    assert_eq!(net.seen(Method::Invite).len(), 2);
    let cancels = net.seen(Method::Cancel);
    assert_eq!(cancels.len(), 1);
    assert!(cancels[0].uri.to_string().contains("10.1.1.6"));
    let kinds = net.event_kinds();
    assert!(kinds.contains(&"answered".to_owned()), "{kinds:?}");
    assert!(kinds.contains(&"failed 487".to_owned()), "{kinds:?}");
}

#[test]
fn an_invite_that_never_ends_after_our_cancel_is_given_up_at_64_t1() {
    // The peer rings, takes the CANCEL (200) but never sends 487.
    let mut net = Net::new(
        None,
        Box::new(|r: &Request| match r.method {
            Method::Invite => vec![(0, 180, vec![])],
            _ => vec![],
        }),
    );
    let leg = net.call();
    net.run_until(Duration::from_millis(100));
    net.ua.hang_up(net.now, leg).unwrap();
    // Our harness answers a CANCEL's INVITE with 487 unless told otherwise: forget it.
    net.peer_requests.clear();
    net.run_until(Duration::from_secs(40));
    assert_eq!(net.event_kinds(), vec!["progress 180", "failed 487"]);
    let failed_at = net.events.last().unwrap().0;
    assert_eq!(failed_at, Duration::from_millis(100 + 32_000));
    assert_eq!(net.ua.legs(), 0);
    assert_eq!(
        net.ua.tx.live().0,
        0,
        "the INVITE client transaction is gone too"
    );
}

#[test]
fn reliable_provisionals_are_pracked_once_and_the_dialog_continues_after_them() {
    let reliable = |rseq: u32| {
        vec![
            Header::Require(vec!["100rel".into()]),
            Header::RSeq(rseq),
            Header::Contact(Contact::Address(NameAddr::new(
                Uri::parse(&format!("sip:uas@{PEER}")).unwrap(),
            ))),
        ]
    };
    let mut net = Net::new(
        None,
        Box::new(move |r: &Request| match r.method {
            // 183 with RSeq 1, its retransmission, then 180 with RSeq 2, then 200.
            Method::Invite => vec![
                (0, 183, reliable(1)),
                (50, 183, reliable(1)),
                (100, 180, reliable(2)),
                (300, 200, vec![]),
            ],
            Method::Prack | Method::Bye => vec![(0, 200, vec![])],
            _ => vec![],
        }),
    );
    let leg = net.call();
    net.run_until(Duration::from_secs(1));
    let invite = net.seen(Method::Invite)[0];
    assert!(invite.headers.supported().contains(&"100rel"));
    let pracks = net.seen(Method::Prack);
    assert_eq!(
        pracks.len(),
        2,
        "one PRACK per RSeq, none for the retransmission"
    );
    let racks: Vec<(u32, u32)> = pracks
        .iter()
        .filter_map(|p| {
            p.headers.0.iter().find_map(|h| match h {
                Header::RAck(r) => Some((r.rseq, r.cseq)),
                _ => None,
            })
        })
        .collect();
    assert_eq!(racks, vec![(1, 1), (2, 1)]);
    assert_eq!(pracks[0].headers.cseq().unwrap().seq, 2);
    assert_eq!(pracks[1].headers.cseq().unwrap().seq, 3);
    assert_eq!(
        net.event_kinds(),
        vec!["progress 183", "progress 180", "answered"]
    );
    net.ua.hang_up(net.now, leg).unwrap();
    net.run_until(Duration::from_secs(2));
    assert_eq!(
        net.seen(Method::Bye)[0].headers.cseq().unwrap().seq,
        4,
        "BYE after the PRACKs"
    );
}

fn session_answer(refresher: &'static str) -> Script {
    Box::new(move |r: &Request| match r.method {
        Method::Invite => vec![(
            0,
            200,
            vec![super::session_timer::session_header(90, refresher)],
        )],
        Method::Bye => vec![(0, 200, vec![])],
        _ => vec![],
    })
}

#[test]
fn as_session_refresher_we_reinvite_at_half_the_interval_silently() {
    let mut net = Net::new(None, session_answer("uac"));
    net.ua.place_call(
        net.now,
        CallSpec {
            session_expires: Some(90),
            ..CallSpec::new(
                Uri::parse("sip:+4930123@127.0.0.2").unwrap(),
                addr(PEER),
                b"v=0\r\n".to_vec(),
            )
        },
    );
    net.run_until(Duration::from_secs(100));
    let invites = net.seen(Method::Invite);
    assert!(invites[0].headers.supported().contains(&"timer"));
    assert_eq!(net.ua.legs(), 1, "the call is still up");
    // The first INVITE, then refreshes at ~45 s and ~90 s.
    assert_eq!(invites.len(), 3, "{:?}", invites.len());
    assert_eq!(invites[1].headers.cseq().unwrap().seq, 2);
    assert_eq!(net.seen(Method::Ack).len(), 3);
    assert_eq!(
        net.event_kinds(),
        vec!["answered"],
        "refreshes are not reported"
    );
}

#[test]
fn when_the_peer_refreshes_and_stops_the_call_ends_with_bye_before_expiry() {
    let mut net = Net::new(None, session_answer("uas"));
    net.call();
    net.run_until(Duration::from_secs(100));
    assert_eq!(
        net.seen(Method::Invite).len(),
        1,
        "the peer is refresher: we send none"
    );
    let byes = net.seen(Method::Bye);
    assert_eq!(byes.len(), 1);
    // Ended at 90 - min(32, 90/3) = 60 s after the answer (10 ms + 10 ms in).
    let (t, e) = net.events.last().unwrap();
    assert!(matches!(e, AgentEvent::Ended { by_peer: false, .. }));
    assert!(
        *t >= Duration::from_secs(60) && *t < Duration::from_secs(61),
        "{t:?}"
    );
}

#[test]
fn a_422_is_retried_once_with_the_peers_min_se() {
    let mut net = Net::new(
        None,
        Box::new(|r: &Request| {
            let asked = r.headers.0.iter().find_map(|h| match h {
                Header::SessionExpires(v) => Some(v.value),
                _ => None,
            });
            match (r.method.clone(), asked) {
                (Method::Invite, Some(a)) if a < 1800 => {
                    vec![(0, 422, vec![Header::MinSe(1800)])]
                }
                (Method::Invite, _) => vec![(0, 200, vec![])],
                _ => vec![],
            }
        }),
    );
    net.ua.place_call(
        net.now,
        CallSpec {
            session_expires: Some(300),
            ..CallSpec::new(
                Uri::parse("sip:+4930123@127.0.0.2").unwrap(),
                addr(PEER),
                b"v=0\r\n".to_vec(),
            )
        },
    );
    net.run_until(Duration::from_secs(2));
    let invites = net.seen(Method::Invite);
    assert_eq!(invites.len(), 2);
    let se = invites[1].headers.0.iter().find_map(|h| match h {
        Header::SessionExpires(v) => Some(v.value),
        _ => None,
    });
    assert_eq!(se, Some(1800));
    assert_eq!(invites[1].headers.cseq().unwrap().seq, 2);
    assert_eq!(net.event_kinds(), vec!["answered"]);
}

/// The caller's PRACK for a reliable provisional (in its early dialog).
fn peer_prack(invite: &Request, provisional: &Response) -> Request {
    let mut prack = invite.clone();
    prack.method = Method::Prack;
    prack.body.clear();
    let rseq = *provisional.headers.rseq().expect("RSeq");
    let tag = provisional.headers.to().and_then(NameAddr::tag).unwrap();
    prack
        .headers
        .0
        .retain(|h| !matches!(h, Header::Supported(_)));
    for h in &mut prack.headers.0 {
        match h {
            Header::CSeq(c) => {
                c.seq = 2;
                c.method = Method::Prack;
            }
            Header::Via(v) => {
                *v = Via::new(Transport::Udp, v.host.clone(), v.port, "z9hG4bKprack1")
            }
            Header::To(t) => t.set_tag(tag),
            _ => {}
        }
    }
    prack.headers.push(Header::RAck(crate::header::RAck {
        rseq,
        cseq: 1,
        method: Method::Invite,
    }));
    prack
}

const EARLY: &[u8] = b"v=0\r\nm=audio 4000 RTP/AVP 0\r\n";

fn reliable_invite(branch: &str) -> Request {
    let mut invite = peer_invite(branch);
    invite
        .headers
        .push(Header::Supported(vec!["100rel".into()]));
    invite
}

#[test]
fn early_media_to_a_100rel_caller_is_reliable_until_pracked_and_holds_the_answer() {
    let mut net = Net::new(None, answering(0));
    net.ua.set_inbound_policy(policy(UnknownSource::Reject));
    let invite = reliable_invite("z9hG4bKrel1");
    net.peer
        .start_client(net.now, invite.clone(), addr(UA), false)
        .unwrap();
    net.run_until(Duration::from_millis(50));
    let leg = incoming_leg(&net);
    net.ua.progress(net.now, leg, 183, EARLY.to_vec()).unwrap();
    net.ua.answer(net.now, leg, b"v=0\r\n".to_vec()).unwrap();
    // No PRACK yet: the 183 is resent at T1 (0.5 s) and 2*T1 later (1.5 s); no 200.
    net.run_until(Duration::from_millis(1_700));
    let early: Vec<&Response> = net
        .peer_response_msgs
        .iter()
        .filter(|r| r.status == 183)
        .collect();
    assert_eq!(early.len(), 3, "the first 183 and two retransmissions");
    assert!(early.iter().all(|r| r.body == EARLY
        && r.headers.require().contains(&"100rel")
        && r.headers.rseq() == Some(&1)));
    assert!(
        !net.peer_responses.iter().any(|(_, s)| *s == 200),
        "the 2xx waits for the PRACK of the SDP-bearing 183"
    );
    let prack = peer_prack(&invite, early[0]);
    net.peer
        .start_client(net.now, prack, addr(UA), false)
        .unwrap();
    net.run_until(Duration::from_millis(1_800));
    let oks: Vec<Method> = net
        .peer_response_msgs
        .iter()
        .filter(|r| r.status == 200)
        .filter_map(|r| r.headers.cseq().map(|c| c.method.clone()))
        .collect();
    assert!(
        oks.contains(&Method::Prack),
        "the PRACK was answered 200: {oks:?}"
    );
    assert!(
        oks.contains(&Method::Invite),
        "then the held 200 went out: {oks:?}"
    );
    let later_183 = net.peer_responses.iter().filter(|(_, s)| *s == 183).count();
    net.run_until(Duration::from_secs(5));
    assert_eq!(
        net.peer_responses.iter().filter(|(_, s)| *s == 183).count(),
        later_183,
        "no 183 after the PRACK"
    );
}

#[test]
fn a_reliable_provisional_never_pracked_refuses_the_call_500_after_64_t1() {
    let mut net = Net::new(None, answering(0));
    net.ua.set_inbound_policy(policy(UnknownSource::Reject));
    net.peer
        .start_client(net.now, reliable_invite("z9hG4bKrel2"), addr(UA), false)
        .unwrap();
    net.run_until(Duration::from_millis(50));
    let leg = incoming_leg(&net);
    net.ua.progress(net.now, leg, 183, EARLY.to_vec()).unwrap();
    net.run_until(Duration::from_secs(40));
    assert!(net.peer_responses.iter().any(|(_, s)| *s == 500));
    assert_eq!(net.event_kinds().last().unwrap(), "failed 500");
}

#[test]
fn a_caller_without_100rel_gets_early_media_unreliably_once() {
    let mut net = Net::new(None, answering(0));
    net.ua.set_inbound_policy(policy(UnknownSource::Reject));
    net.peer
        .start_client(net.now, peer_invite("z9hG4bKrel3"), addr(UA), false)
        .unwrap();
    net.run_until(Duration::from_millis(50));
    let leg = incoming_leg(&net);
    net.ua.progress(net.now, leg, 183, EARLY.to_vec()).unwrap();
    net.run_until(Duration::from_secs(3));
    let early: Vec<&Response> = net
        .peer_response_msgs
        .iter()
        .filter(|r| r.status == 183)
        .collect();
    assert_eq!(early.len(), 1);
    assert!(early[0].headers.rseq().is_none() && early[0].body == EARLY);
}

#[test]
fn an_update_carries_a_new_offer_and_its_answer_is_reported() {
    let script: Script = Box::new(|r: &Request| match r.method {
        Method::Invite => vec![(0, 180, vec![]), (100, 200, vec![])],
        Method::Update | Method::Bye => vec![(0, 200, vec![])],
        _ => vec![],
    });
    let mut net = Net::new(None, script);
    let leg = net.call();
    net.run_until(Duration::from_secs(1));
    net.ua
        .update(net.now, leg, b"v=0\r\na=sendonly\r\n".to_vec())
        .unwrap();
    assert!(
        net.ua.update(net.now, leg, b"v=0\r\n".to_vec()).is_err(),
        "one UPDATE at a time"
    );
    net.run_until(Duration::from_secs(2));
    assert_eq!(net.event_kinds().last().unwrap(), "updated 200");
    let updates = net.seen(Method::Update);
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].headers.cseq().unwrap().seq, 2);
    assert_eq!(updates[0].headers.to().unwrap().tag(), Some("peer-tag"));
    assert!(updates[0].body.ends_with(b"a=sendonly\r\n"));
    assert!(updates[0]
        .headers
        .0
        .iter()
        .any(|h| matches!(h, Header::ContentType(_))));
    // The accepted offer is what we now answer the peer's re-INVITEs with.
    assert!(net
        .ua
        .legs
        .get(&leg)
        .unwrap()
        .local_body
        .ends_with(b"a=sendonly\r\n"));
}

#[test]
fn a_491_to_our_reinvite_is_retried_after_2_1_to_4_seconds_as_call_id_owner() {
    for seed in 0..20 {
        let mut reinvites = 0;
        let script: Script = Box::new(move |r: &Request| match r.method {
            Method::Invite if r.headers.to().and_then(NameAddr::tag).is_some() => {
                reinvites += 1;
                if reinvites == 1 {
                    vec![(0, 491, vec![])]
                } else {
                    vec![(0, 200, vec![])]
                }
            }
            Method::Invite => vec![(0, 180, vec![]), (100, 200, vec![])],
            _ => vec![(0, 200, vec![])],
        });
        let mut net = Net::new(None, script);
        net.ua.counter = seed * 7919;
        let leg = net.call();
        net.run_until(Duration::from_secs(1));
        net.ua
            .reinvite(net.now, leg, b"v=0\r\na=sendonly\r\n".to_vec())
            .unwrap();
        let reinvites = |net: &Net| -> Vec<u32> {
            net.peer_seen
                .iter()
                .filter(|r| {
                    r.method == Method::Invite && r.headers.to().and_then(NameAddr::tag).is_some()
                })
                .map(|r| r.headers.cseq().unwrap().seq)
                .collect()
        };
        // The 491 reaches us at 1.02 s: nothing again before 1.02 + 2.1 s ...
        net.run_until(Duration::from_millis(1_020 + 2_100 - 1));
        assert_eq!(reinvites(&net).len(), 1, "seed {seed}: not before 2.1 s");
        // ... and the retry is out (and reached the peer) by 1.02 + 4 s.
        net.run_until(Duration::from_millis(1_020 + 4_000 + 20));
        let seen = reinvites(&net);
        assert_eq!(seen.len(), 2, "seed {seed}: retried once within 4 s");
        assert!(seen[1] > seen[0], "with a new CSeq");
        net.run_until(Duration::from_secs(8));
        assert_eq!(
            net.event_kinds()
                .iter()
                .filter(|k| k.starts_with("reinvited"))
                .collect::<Vec<_>>(),
            vec!["reinvited 200"],
            "the 491 is handled, not reported"
        );
    }
}

#[test]
fn a_peer_reinvite_crossing_ours_is_answered_491() {
    let script: Script = Box::new(|r: &Request| match r.method {
        // The peer sits on our re-INVITE.
        Method::Invite if r.headers.to().and_then(NameAddr::tag).is_some() => vec![],
        Method::Invite => vec![(0, 180, vec![]), (100, 200, vec![])],
        _ => vec![(0, 200, vec![])],
    });
    let mut net = Net::new(None, script);
    let leg = net.call();
    net.run_until(Duration::from_secs(1));
    net.ua.reinvite(net.now, leg, b"v=0\r\n".to_vec()).unwrap();
    net.run_until(Duration::from_millis(1_100));
    let invite = net.seen(Method::Invite)[0].clone();
    let mut h = Headers::default();
    h.push(Header::Via(Via::new(
        Transport::Udp,
        Host::V4("127.0.0.2".parse().unwrap()),
        Some(5080),
        "z9hG4bKpeerreinv",
    )));
    let mut from = invite.headers.to().unwrap().clone();
    from.set_tag("peer-tag");
    h.push(Header::From(from));
    h.push(Header::To(invite.headers.from().unwrap().clone()));
    h.push(Header::CallId(invite.headers.call_id().unwrap().clone()));
    h.push(Header::CSeq(CSeq {
        seq: 5,
        method: Method::Invite,
    }));
    h.push(Header::Contact(Contact::Address(NameAddr::new(
        Uri::parse(&format!("sip:uas@{PEER}")).unwrap(),
    ))));
    let reinvite = Request {
        method: Method::Invite,
        uri: Uri::parse(&format!("sip:dialer@{UA}")).unwrap(),
        headers: h,
        body: b"v=0\r\n".to_vec(),
    };
    net.peer
        .start_client(net.now, reinvite, addr(UA), false)
        .unwrap();
    net.run_until(Duration::from_millis(1_300));
    assert!(
        net.peer_response_msgs
            .iter()
            .any(|r| r.status == 491 && r.headers.cseq().is_some_and(|c| c.seq == 5)),
        "{:?}",
        net.peer_responses
    );
}

#[test]
fn requests_to_a_tcp_destination_say_tcp_and_are_not_retransmitted() {
    let script: Script = Box::new(|_r: &Request| vec![]);
    let mut net = Net::new(None, script);
    net.ua.set_transport(addr(PEER), Transport::Tcp);
    net.ua.add_listener(Transport::Tcp, addr("127.0.0.1:5070"));
    net.call();
    net.run_until(Duration::from_secs(20));
    let invites = net.seen(Method::Invite);
    assert_eq!(
        invites.len(),
        1,
        "no retransmission over a reliable transport"
    );
    let via = invites[0].headers.top_via().unwrap();
    assert_eq!(via.transport, Transport::Tcp);
    assert_eq!(via.port, Some(5070), "Via names the TCP listener");
    let contact = invites[0]
        .headers
        .0
        .iter()
        .find_map(|h| match h {
            Header::Contact(Contact::Address(a)) => Some(a.uri.to_string()),
            _ => None,
        })
        .unwrap();
    assert_eq!(contact, "sip:dialer@127.0.0.1:5070;transport=tcp");
}

#[test]
fn a_transport_error_fails_the_call_503_at_once() {
    let script: Script = Box::new(|_r: &Request| vec![]);
    let mut net = Net::new(None, script);
    net.ua.set_transport(addr(PEER), Transport::Tls);
    net.call();
    net.run_until(Duration::from_millis(100));
    net.ua.handle_transport_error(net.now, addr(PEER));
    net.run_until(Duration::from_millis(200));
    assert_eq!(net.event_kinds(), vec!["failed 503"]);
    assert_eq!(net.ua.legs(), 0);
    let via = net.seen(Method::Invite)[0]
        .headers
        .top_via()
        .unwrap()
        .clone();
    assert_eq!(via.transport, Transport::Tls);
}

#[test]
fn a_caller_requiring_100rel_gets_even_a_bare_180_reliably() {
    let mut net = Net::new(None, answering(0));
    net.ua.set_inbound_policy(policy(UnknownSource::Reject));
    let mut invite = peer_invite("z9hG4bKrel4");
    invite.headers.push(Header::Require(vec!["100rel".into()]));
    net.peer
        .start_client(net.now, invite.clone(), addr(UA), false)
        .unwrap();
    net.run_until(Duration::from_millis(50));
    let leg = incoming_leg(&net);
    net.ua.ring(net.now, leg).unwrap();
    net.run_until(Duration::from_millis(700));
    let ringing: Vec<&Response> = net
        .peer_response_msgs
        .iter()
        .filter(|r| r.status == 180)
        .collect();
    assert_eq!(ringing.len(), 2, "sent and resent at T1 until PRACKed");
    assert!(ringing[0].headers.require().contains(&"100rel"));
    assert_eq!(ringing[0].headers.rseq(), Some(&1));
    // Without SDP nothing holds the answer back once the PRACK came.
    let prack = peer_prack(&invite, ringing[0]);
    net.peer
        .start_client(net.now, prack, addr(UA), false)
        .unwrap();
    net.run_until(Duration::from_millis(800));
    net.ua.answer(net.now, leg, b"v=0\r\n".to_vec()).unwrap();
    net.run_until(Duration::from_millis(900));
    assert!(net
        .peer_response_msgs
        .iter()
        .any(|r| r.status == 200 && r.headers.cseq().is_some_and(|c| c.method == Method::Invite)));
}

#[test]
fn a_491_to_our_update_is_retried_after_the_glare_wait_with_the_same_offer() {
    let mut updates = 0;
    let script: Script = Box::new(move |r: &Request| match r.method {
        Method::Update => {
            updates += 1;
            vec![(0, if updates == 1 { 491 } else { 200 }, vec![])]
        }
        Method::Invite => vec![(0, 180, vec![]), (100, 200, vec![])],
        _ => vec![(0, 200, vec![])],
    });
    let mut net = Net::new(None, script);
    let leg = net.call();
    net.run_until(Duration::from_secs(1));
    net.ua
        .update(net.now, leg, b"v=0\r\na=sendonly\r\n".to_vec())
        .unwrap();
    net.run_until(Duration::from_millis(1_020 + 2_100 - 1));
    assert_eq!(net.seen(Method::Update).len(), 1, "not before 2.1 s");
    net.run_until(Duration::from_secs(6));
    let sent = net.seen(Method::Update);
    assert_eq!(sent.len(), 2, "sent again once");
    assert_eq!(sent[1].body, sent[0].body, "with the same offer");
    assert!(sent[1].headers.cseq().unwrap().seq > sent[0].headers.cseq().unwrap().seq);
    assert_eq!(
        net.event_kinds()
            .iter()
            .filter(|k| k.starts_with("updated"))
            .collect::<Vec<_>>(),
        vec!["updated 200"]
    );
}

/// The phone at PEER is not a trunk: under `trunk`'s policy it is let through only as a
/// registered phone.
fn phone_only_policy(trunk: &str) -> InboundPolicy {
    InboundPolicy {
        allowed_sources: vec![trunk.parse().unwrap()],
        trunk_names: Vec::new(),
        ..policy(UnknownSource::Reject)
    }
}

/// The registered phone at PEER sends an out-of-dialog INVITE; the statuses it got.
fn phone_invites(net: &mut Net, branch: &str) -> Vec<u16> {
    net.peer_responses.clear();
    net.peer
        .start_client(net.now, peer_invite(branch), addr(UA), false)
        .unwrap();
    net.run_until(net.now.duration_since(net.start) + Duration::from_millis(50));
    net.peer_responses.iter().map(|(_, s)| *s).collect()
}

#[test]
fn a_trunk_edit_keeps_registered_phones_let_through_out_of_dialog() {
    let mut net = Net::new(None, answering(0));
    with_registrar(&mut net);
    net.ua.set_inbound_policy(phone_only_policy("10.9.9.9"));
    assert_eq!(phone_invites(&mut net, "z9hG4bKunreg"), vec![100, 403]);
    assert_eq!(
        register_phone(&mut net, &["sip:desk1@127.0.0.2:5080"]).status,
        200
    );
    assert!(!phone_invites(&mut net, "z9hG4bKreg1").contains(&403));

    // A trunk edit (another trunk address) keeps the registered phone's source.
    net.ua
        .replace_inbound_policy(net.now, phone_only_policy("10.9.9.10"));
    let statuses = phone_invites(&mut net, "z9hG4bKafter");
    assert!(!statuses.contains(&403), "{statuses:?}");
    assert_eq!(
        net.event_kinds()
            .iter()
            .filter(|k| k.starts_with("incoming"))
            .count(),
        2,
        "both INVITEs since the REGISTER were taken: {:?}",
        net.event_kinds()
    );

    // A fresh gate (what a trunk edit did before) forgets it until the next REGISTER.
    net.ua.set_inbound_policy(phone_only_policy("10.9.9.10"));
    assert_eq!(phone_invites(&mut net, "z9hG4bKfresh"), vec![100, 403]);
}

#[test]
fn a_first_policy_set_by_replacing_lets_already_registered_phones_through() {
    let mut net = Net::new(None, answering(0));
    with_registrar(&mut net);
    assert_eq!(
        register_phone(&mut net, &["sip:desk1@127.0.0.2:5080"]).status,
        200
    );
    net.ua
        .replace_inbound_policy(net.now, phone_only_policy("10.9.9.9"));
    let statuses = phone_invites(&mut net, "z9hG4bKfirst");
    assert!(!statuses.contains(&403), "{statuses:?}");
}
