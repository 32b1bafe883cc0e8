//! The B2BUA's CPU per bridged call, measured on the sans-IO core alone (no sockets, no
//! tokio, no machine load in the figure).
//!
//! A scripted caller (SIPp's built-in `uac` scenario, byte for byte in shape) calls into an
//! [`OutboundRouter`] that bridges each call to one trunk, where a scripted callee (SIPp's
//! `uas`) answers: INVITE/100/180/200/ACK/BYE/200 on the caller's leg, INVITE/180/200/ACK/
//! BYE/200 on the callee's. Calls start `1/rate` apart in virtual time, so transactions and
//! legs linger and expire (Timers D, J, K...) as they do in the live bench; the first
//! `--warmup-seconds` of virtual time fill the tables to their steady size and are not
//! counted.
//!
//! What the relay does per datagram is what the driver does: parse (the receive task),
//! `handle_parsed`, drain `poll_output`, `poll_timeout`; due timers go through
//! `handle_timeout`. That work runs only inside the functions named `measured_*`, so
//!
//! ```text
//! scripts/sip-cpu-per-call            # callgrind over this example, prints the table
//! ```
//!
//! counts the relay's instructions per call (repeatable to a few instructions) and
//! leaves the scripted peers out. Run alone it prints wall-clock ns per call inside the
//! relay (noisy on a shared machine):
//!
//! ```text
//! cargo run --release -p callgate-sip --example b2bua_calls -- --rate 1000 --calls 20000
//! ```

use callgate_sip::agent::{AgentConfig, UserAgent};
use callgate_sip::inbound::{InboundPolicy, InboundRoute, RouteTarget, UnknownSource};
use callgate_sip::parse_datagram;
use callgate_sip::transaction::{TimerConfig, Transmit};
use callgate_sip::trunk::router::{OutboundRouter, RouterConfig, RouterOutput};
use callgate_sip::trunk::{Trunk, TrunkGroup};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const RELAY: &str = "127.0.0.1:5060";
const CALLER: &str = "127.0.0.2:5061";
const CALLEE: &str = "127.0.0.3:5062";

/// The command line: `--rate N --warmup-seconds S --calls N`. The defaults (200 calls/s,
/// 35 s, 1,000 calls) reach the steady state (the longest transaction timer is 32 s) and
/// take about a minute under callgrind.
struct Args {
    rate: u32,
    warmup_seconds: u32,
    calls: u64,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        rate: 200,
        warmup_seconds: 35,
        calls: 1000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |what: &str| {
            value
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0 || what == "--warmup-seconds")
                .ok_or_else(|| format!("{what}: `{value}` is not a positive whole number"))
        };
        match flag.as_str() {
            "--rate" => a.rate = u32::try_from(number("--rate")?).map_err(|e| e.to_string())?,
            "--warmup-seconds" => {
                a.warmup_seconds =
                    u32::try_from(number("--warmup-seconds")?).map_err(|e| e.to_string())?
            }
            "--calls" => a.calls = number("--calls")?,
            other => {
                return Err(format!(
                    "unknown option `{other}` (known: --rate, --warmup-seconds, --calls)"
                ))
            }
        }
    }
    Ok(a)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a socket address")
}

fn bridge() -> OutboundRouter {
    let start = Instant::now();
    let agent = UserAgent::new(AgentConfig {
        local: addr(RELAY),
        user: "bench".into(),
        timers: TimerConfig::default(),
        credentials: None,
        seed: 11,
    });
    let trunk = Trunk {
        name: "out".into(),
        address: addr(CALLEE),
        domain: "127.0.0.3".into(),
        credentials: None,
        max_channels: 1_000_000,
        max_cps: 1_000_000,
        priority: 1,
        weight: 1,
    };
    let mut router = OutboundRouter::new(
        agent,
        TrunkGroup::new(vec![trunk]),
        RouterConfig {
            probe: None,
            ..RouterConfig::default()
        },
        start,
        99,
    );
    router.set_inbound_policy(InboundPolicy {
        allowed_sources: vec![addr(CALLER).ip()],
        trunk_names: Vec::new(),
        unknown_source: UnknownSource::Reject,
        per_source_rate: 1_000_000,
        per_source_burst: 1_000_000,
        routes: vec![InboundRoute {
            number: "*".into(),
            target: RouteTarget::Trunk("out".into()),
        }],
    });
    router
}

/// What the driver does with one datagram: parse it, hand it to the core, take what the
/// core sends, and ask for the next deadline.
#[inline(always)]
fn relay_datagram(
    router: &mut OutboundRouter,
    now: Instant,
    from: SocketAddr,
    bytes: &[u8],
    sent: &mut VecDeque<Transmit>,
) -> Option<Instant> {
    let parsed = parse_datagram(bytes);
    router.handle_parsed(now, from, bytes, parsed);
    while let Some(o) = router.poll_output() {
        if let RouterOutput::Transmit(t) = o {
            sent.push_back(t);
        }
    }
    router.poll_timeout()
}

/// What the driver does when its timer fires.
#[inline(always)]
fn relay_timers(
    router: &mut OutboundRouter,
    now: Instant,
    sent: &mut VecDeque<Transmit>,
) -> Option<Instant> {
    router.handle_timeout(now);
    while let Some(o) = router.poll_output() {
        if let RouterOutput::Transmit(t) = o {
            sent.push_back(t);
        }
    }
    router.poll_timeout()
}

// Two copies of each, so callgrind (`--toggle-collect=*measured_*`) counts only the
// measured calls and not the warm-up. The measured ones count their invocations, which
// also keeps the compiler from folding each pair into one function.
#[inline(never)]
fn measured_datagram(
    r: &mut OutboundRouter,
    now: Instant,
    from: SocketAddr,
    bytes: &[u8],
    sent: &mut VecDeque<Transmit>,
    count: &mut u64,
) -> Option<Instant> {
    *count += 1;
    relay_datagram(r, now, from, bytes, sent)
}

#[inline(never)]
fn measured_timers(
    r: &mut OutboundRouter,
    now: Instant,
    sent: &mut VecDeque<Transmit>,
    count: &mut u64,
) -> Option<Instant> {
    *count += 1;
    relay_timers(r, now, sent)
}

#[inline(never)]
fn warmup_datagram(
    r: &mut OutboundRouter,
    now: Instant,
    from: SocketAddr,
    bytes: &[u8],
    sent: &mut VecDeque<Transmit>,
) -> Option<Instant> {
    relay_datagram(r, now, from, bytes, sent)
}

#[inline(never)]
fn warmup_timers(
    r: &mut OutboundRouter,
    now: Instant,
    sent: &mut VecDeque<Transmit>,
) -> Option<Instant> {
    relay_timers(r, now, sent)
}

/// The text of every header line of `msg` named `name` (`Via`, `To`...), CRLF included.
fn header_lines<'a>(msg: &'a str, name: &str) -> impl Iterator<Item = &'a str> + 'a {
    let prefix = format!("{name}:");
    msg.split_inclusive("\r\n")
        .skip(1)
        .take_while(|l| *l != "\r\n")
        .filter(move |l| l.len() > prefix.len() && l[..prefix.len()].eq_ignore_ascii_case(&prefix))
}

/// SIPp's `uac` scenario for call `n`: INVITE, then on 200 ACK and BYE at once (`-d 0`).
fn caller_request(n: u64, method: &str, seq: u32, to_line: Option<&str>, sdp: bool) -> Vec<u8> {
    let to = to_line.map_or_else(
        || "To: service <sip:service@127.0.0.1:5060>\r\n".to_owned(),
        str::to_owned,
    );
    let body = if sdp {
        "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\n\
         t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    } else {
        ""
    };
    let content_type = if sdp {
        "Content-Type: application/sdp\r\n"
    } else {
        ""
    };
    format!(
        "{method} sip:service@127.0.0.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.2:5061;branch=z9hG4bK-4242-{n}-{seq}-{method}\r\n\
         From: sipp <sip:sipp@127.0.0.2:5061>;tag=4242SIPpTag00{n}\r\n\
         {to}\
         Call-ID: {n}-4242@127.0.0.2\r\n\
         CSeq: {seq} {method}\r\n\
         Contact: sip:sipp@127.0.0.2:5061\r\n\
         Max-Forwards: 70\r\n\
         Subject: Performance Test\r\n\
         {content_type}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// SIPp's `uas` scenario's answer to `request` with `status` (180, 200 with SDP, 200).
fn callee_response(request: &str, status: &str, sdp: bool) -> Vec<u8> {
    let mut out = format!("SIP/2.0 {status}\r\n");
    for name in ["Via", "From"] {
        header_lines(request, name).for_each(|l| out.push_str(l));
    }
    for l in header_lines(request, "To") {
        if l.contains(";tag=") {
            out.push_str(l);
        } else {
            out.push_str(l.trim_end());
            out.push_str(";tag=4343SIPpTag01\r\n");
        }
    }
    for name in ["Call-ID", "CSeq"] {
        header_lines(request, name).for_each(|l| out.push_str(l));
    }
    out.push_str("Contact: <sip:127.0.0.3:5062;transport=UDP>\r\n");
    let body = if sdp {
        "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.3\r\ns=-\r\nc=IN IP4 127.0.0.3\r\n\
         t=0 0\r\nm=audio 6002 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    } else {
        ""
    };
    if sdp {
        out.push_str("Content-Type: application/sdp\r\n");
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    out.into_bytes()
}

/// The two scripted peers' reactions to what the relay sent: datagrams back to the relay.
struct Peers {
    caller: SocketAddr,
    callee: SocketAddr,
    completed: u64,
    datagrams: u64,
}

impl Peers {
    fn react(&mut self, t: &Transmit, replies: &mut VecDeque<(SocketAddr, Vec<u8>)>) {
        self.datagrams += 1;
        let text = std::str::from_utf8(&t.bytes).expect("the relay sends UTF-8 here");
        let start = text.split("\r\n").next().unwrap_or("");
        let cseq = header_lines(text, "CSeq").next().unwrap_or("");
        if t.to == self.callee {
            if start.starts_with("INVITE ") {
                replies.push_back((self.callee, callee_response(text, "180 Ringing", false)));
                replies.push_back((self.callee, callee_response(text, "200 OK", true)));
            } else if start.starts_with("BYE ") {
                replies.push_back((self.callee, callee_response(text, "200 OK", false)));
            }
        } else if t.to == self.caller && start.starts_with("SIP/2.0 200 ") {
            let call_id = header_lines(text, "Call-ID").next().unwrap_or("");
            let n: u64 = call_id
                .trim_start_matches(|c: char| !c.is_ascii_digit())
                .split('-')
                .next()
                .and_then(|s| s.parse().ok())
                .expect("our Call-ID comes back");
            if cseq.contains("INVITE") {
                let to = header_lines(text, "To").next().expect("a To line");
                replies.push_back((self.caller, caller_request(n, "ACK", 1, Some(to), false)));
                replies.push_back((self.caller, caller_request(n, "BYE", 2, Some(to), false)));
            } else if cseq.contains("BYE") {
                self.completed += 1;
            }
        }
    }
}

fn main() -> ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("b2bua_calls: {e}");
            return ExitCode::from(2);
        }
    };
    let warmup_calls = u64::from(a.rate) * u64::from(a.warmup_seconds);
    let gap = Duration::from_secs(1) / a.rate;
    let mut router = bridge();
    let start = Instant::now();
    let mut peers = Peers {
        caller: addr(CALLER),
        callee: addr(CALLEE),
        completed: 0,
        datagrams: 0,
    };
    let mut sent = VecDeque::new();
    let mut replies = VecDeque::new();
    let mut deadline = None;
    let mut relay_time = Duration::ZERO;
    let (mut received, mut timer_runs) = (0u64, 0u64);
    let (mut measured_completed, mut measured_datagrams) = (0, 0);
    for n in 0..warmup_calls + a.calls {
        let measured = n >= warmup_calls;
        if n == warmup_calls {
            (measured_completed, measured_datagrams) = (peers.completed, peers.datagrams);
        }
        let now = start + gap * u32::try_from(n).expect("calls fit in u32");
        let timed = Instant::now();
        if deadline.is_some_and(|d| d <= now) {
            deadline = if measured {
                measured_timers(&mut router, now, &mut sent, &mut timer_runs)
            } else {
                warmup_timers(&mut router, now, &mut sent)
            };
        }
        if measured {
            relay_time += timed.elapsed();
        }
        replies.push_back((peers.caller, caller_request(n, "INVITE", 1, None, true)));
        loop {
            while let Some(t) = sent.pop_front() {
                peers.react(&t, &mut replies);
            }
            let Some((from, bytes)) = replies.pop_front() else {
                break;
            };
            let timed = Instant::now();
            deadline = if measured {
                measured_datagram(&mut router, now, from, &bytes, &mut sent, &mut received)
            } else {
                warmup_datagram(&mut router, now, from, &bytes, &mut sent)
            };
            if measured {
                relay_time += timed.elapsed();
            }
        }
    }
    let completed = peers.completed - measured_completed;
    let datagrams = peers.datagrams - measured_datagrams;
    println!(
        "rate {}/s (virtual), warm-up {} calls, measured {} calls: {} completed, {:.1} datagrams \
         received and {:.1} sent per call, {} timer runs, {:.0} ns per call in the relay (wall clock)",
        a.rate,
        warmup_calls,
        a.calls,
        completed,
        received as f64 / a.calls as f64,
        datagrams as f64 / a.calls as f64,
        timer_runs,
        relay_time.as_nanos() as f64 / a.calls as f64,
    );
    if peers.completed != warmup_calls + a.calls {
        eprintln!(
            "b2bua_calls: only {} of {} calls completed: the bridge did not relay every call",
            peers.completed,
            warmup_calls + a.calls
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
