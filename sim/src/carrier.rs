//! The simulated carrier: what happens to each call the appliance places.
//!
//! [`CarrierCore`] is sans-IO (time passed in, no tokio): for each INVITE it draws the
//! call's fate from the scenario with the seeded generator — busy, no answer, a person or
//! an answering machine — and its ring, talk and greeting times, then says when to ring,
//! answer, refuse and hang up. [`SimCarrier`] is its tokio driver: one SIP/UDP socket
//! ([`crate::sip_loop`]), one RTP socket per answered call playing a [`Voice`].
//!
//! Owns: the carrier's side of the calls. Must not: decide anything for the caller.

use crate::dist::SimRng;
use crate::rtp::{MediaSocket, RtpStats};
use crate::scenario::CarrierScenario;
use crate::sip_loop::{SipCommand, SipLoop};
use crate::voice::Voice;
use crate::SimError;
use callgate_sip::agent::{AgentEvent, LegId};
use callgate_sip::inbound::{InboundPolicy, InboundRoute, RouteTarget, UnknownSource};
use std::collections::{HashMap, VecDeque};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What happens to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fate {
    /// 486 Busy Here after the ring time.
    Busy,
    /// Rings until the caller gives up (or 480 after `no_answer_after_seconds`).
    NoAnswer,
    /// A person answers and talks.
    Person,
    /// An answering machine answers, plays its greeting and beep, records, hangs up.
    Machine,
}

/// One call's plan, drawn when its INVITE arrives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallPlan {
    /// The fate.
    pub fate: Fate,
    /// Time from the INVITE to the answer or the busy signal.
    pub ring: Duration,
    /// Time from the answer to the carrier's BYE (talk time; for a machine, the greeting,
    /// the beep and the recording).
    pub hold: Duration,
    /// A machine's greeting.
    pub greeting: Duration,
    /// Seed of the call's voice.
    pub voice_seed: u64,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum CarrierAction<K> {
    /// Send 180 Ringing.
    Ring(K),
    /// Answer (200 OK with our SDP) and start the voice.
    Answer {
        /// The call.
        call: K,
        /// Its plan (fate, voice seed, greeting).
        plan: CallPlan,
    },
    /// Refuse with a final response.
    Reject {
        /// The call.
        call: K,
        /// 486, 480 or 503.
        status: u16,
        /// Reason phrase.
        reason: &'static str,
    },
    /// Send BYE.
    HangUp(K),
}

/// How a call ended, seen from the carrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The caller sent CANCEL before the answer.
    Cancelled,
    /// The caller hung up after the answer.
    ByCaller,
    /// We hung up (talk time over) and the BYE completed.
    ByUs,
}

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CarrierStats {
    /// INVITEs accepted for a plan.
    pub calls: u64,
    /// Calls refused busy (486).
    pub busy: u64,
    /// Calls given up unanswered by us (480; not those the caller cancelled first).
    pub no_answer: u64,
    /// Calls answered by a person.
    pub person: u64,
    /// Calls answered by a machine.
    pub machine: u64,
    /// Calls answered (200 sent).
    pub answered: u64,
    /// Calls refused because `max_calls` were up.
    pub refused_full: u64,
    /// Calls the caller cancelled while ringing.
    pub cancelled: u64,
    /// Answered calls the caller hung up.
    pub caller_hung_up: u64,
    /// Answered calls we hung up.
    pub carrier_hung_up: u64,
    /// Calls in progress now.
    pub active: u64,
    /// RTP sent and heard over finished calls.
    pub rtp: RtpTotals,
}

/// RTP over finished calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtpTotals {
    /// Packets sent.
    pub sent: u64,
    /// Packets received.
    pub received: u64,
    /// Calls on which we heard audio from the caller.
    pub calls_heard: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    /// Ringing; at the deadline answer or refuse.
    Ringing,
    /// Answered, waiting for the ACK.
    Answering,
    /// Talking; at the deadline hang up.
    Talking,
    /// BYE sent.
    Ending,
}

#[derive(Debug)]
struct Call {
    plan: CallPlan,
    step: Step,
    deadline: Option<Instant>,
}

/// The sans-IO carrier.
#[derive(Debug)]
pub struct CarrierCore<K> {
    scenario: CarrierScenario,
    rng: SimRng,
    calls: HashMap<K, Call>,
    out: VecDeque<CarrierAction<K>>,
    stats: CarrierStats,
}

impl<K: Copy + Eq + Hash + Debug> CarrierCore<K> {
    /// A carrier for `scenario` (validated) drawing from `seed`.
    pub fn new(scenario: CarrierScenario, seed: u64) -> Self {
        CarrierCore {
            scenario,
            rng: SimRng::derive(seed, 1),
            calls: HashMap::new(),
            out: VecDeque::new(),
            stats: CarrierStats::default(),
        }
    }

    /// Draws the next call's plan (what [`Self::handle_invite`] does for each INVITE).
    pub fn draw_plan(&mut self) -> CallPlan {
        let s = &self.scenario;
        let answered = self.rng.chance(s.answer_probability);
        let fate = if answered {
            if self.rng.chance(s.machine_share) {
                Fate::Machine
            } else {
                Fate::Person
            }
        } else if self.rng.chance(s.busy_share) {
            Fate::Busy
        } else {
            Fate::NoAnswer
        };
        let ring = match fate {
            Fate::NoAnswer => Duration::from_secs_f64(s.no_answer_after_seconds),
            Fate::Busy => s.ring_seconds.draw(&mut self.rng) / 3,
            _ => s.ring_seconds.draw(&mut self.rng),
        };
        let greeting = s.greeting_seconds.draw(&mut self.rng);
        let hold = match fate {
            Fate::Machine => {
                greeting
                    + Duration::from_millis(500)
                    + Duration::from_secs_f64(s.machine_record_seconds)
            }
            _ => s.talk_seconds.draw(&mut self.rng),
        };
        CallPlan {
            fate,
            ring,
            hold,
            greeting,
            voice_seed: self.rng.next_u64(),
        }
    }

    /// A new INVITE: ring, and plan its fate (or 503 when full).
    pub fn handle_invite(&mut self, now: Instant, call: K) {
        if self.calls.len() >= self.scenario.max_calls {
            self.stats.refused_full += 1;
            self.out.push_back(CarrierAction::Reject {
                call,
                status: 503,
                reason: "Service Unavailable",
            });
            return;
        }
        let plan = self.draw_plan();
        self.stats.calls += 1;
        self.calls.insert(
            call,
            Call {
                plan,
                step: Step::Ringing,
                deadline: Some(now + plan.ring),
            },
        );
        self.out.push_back(CarrierAction::Ring(call));
    }

    /// The caller ACKed our answer: the talk time starts.
    pub fn handle_answered(&mut self, now: Instant, call: K) {
        if let Some(c) = self.calls.get_mut(&call) {
            if c.step == Step::Answering {
                c.step = Step::Talking;
                c.deadline = Some(now + c.plan.hold);
            }
        }
    }

    /// The call is over.
    pub fn handle_ended(&mut self, call: K, how: Ended) {
        if self.calls.remove(&call).is_none() {
            return;
        }
        match how {
            Ended::Cancelled => self.stats.cancelled += 1,
            Ended::ByCaller => self.stats.caller_hung_up += 1,
            Ended::ByUs => self.stats.carrier_hung_up += 1,
        }
    }

    /// The call was refused by us (busy, no answer, a bad offer): forget it.
    pub fn handle_refused(&mut self, call: K) {
        self.calls.remove(&call);
    }

    /// Fires due deadlines.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<K> = self
            .calls
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(k, _)| *k)
            .collect();
        for k in due {
            let Some(c) = self.calls.get_mut(&k) else {
                continue;
            };
            c.deadline = None;
            match (c.step, c.plan.fate) {
                (Step::Ringing, Fate::Busy) => {
                    self.stats.busy += 1;
                    self.calls.remove(&k);
                    self.out.push_back(CarrierAction::Reject {
                        call: k,
                        status: 486,
                        reason: "Busy Here",
                    });
                }
                (Step::Ringing, Fate::NoAnswer) => {
                    self.stats.no_answer += 1;
                    self.calls.remove(&k);
                    self.out.push_back(CarrierAction::Reject {
                        call: k,
                        status: 480,
                        reason: "Temporarily Unavailable",
                    });
                }
                (Step::Ringing, _) => {
                    c.step = Step::Answering;
                    self.stats.answered += 1;
                    if c.plan.fate == Fate::Machine {
                        self.stats.machine += 1;
                    } else {
                        self.stats.person += 1;
                    }
                    let plan = c.plan;
                    self.out.push_back(CarrierAction::Answer { call: k, plan });
                }
                (Step::Talking, _) => {
                    c.step = Step::Ending;
                    self.out.push_back(CarrierAction::HangUp(k));
                }
                _ => {}
            }
        }
    }

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<CarrierAction<K>> {
        self.out.pop_front()
    }

    /// When to call [`Self::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.calls.values().filter_map(|c| c.deadline).min()
    }

    /// Counters.
    pub fn stats(&self) -> CarrierStats {
        CarrierStats {
            active: self.calls.len() as u64,
            ..self.stats
        }
    }

    /// Every call still known (for a clean stop).
    pub fn calls(&self) -> Vec<K> {
        self.calls.keys().copied().collect()
    }
}

/// The running simulated carrier.
#[derive(Debug)]
pub struct SimCarrier {
    local: std::net::SocketAddr,
    stats: Arc<Mutex<CarrierStats>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

struct LiveMedia {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<RtpStats>,
}

impl SimCarrier {
    /// Starts the carrier on `scenario.listen` (validated first).
    pub async fn start(scenario: &CarrierScenario, seed: u64) -> Result<SimCarrier, SimError> {
        scenario.validate()?;
        let ip = scenario.listen.ip();
        let policy = InboundPolicy {
            allowed_sources: vec![
                ip,
                std::net::IpAddr::from([127, 0, 0, 1]),
                std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            ],
            trunk_names: Vec::new(),
            unknown_source: UnknownSource::Reject,
            per_source_rate: 100_000,
            per_source_burst: 100_000,
            routes: vec![InboundRoute {
                number: "*".into(),
                target: RouteTarget::Trunk("pstn".into()),
            }],
        };
        let sip = SipLoop::start(scenario.listen, "carrier", seed, Some(policy)).await?;
        let local = sip.local_addr();
        let stats = Arc::new(Mutex::new(CarrierStats::default()));
        let (stop, stop_rx) = watch::channel(false);
        let core = CarrierCore::new(scenario.clone(), seed);
        let task = tokio::spawn(drive(
            sip,
            core,
            scenario.voice_level,
            stats.clone(),
            stop_rx,
        ));
        tracing::info!(listen = %local, "simulated carrier up");
        Ok(SimCarrier {
            local,
            stats,
            stop,
            task,
        })
    }

    /// Where the carrier listens.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.local
    }

    /// Counters so far.
    pub fn stats(&self) -> CarrierStats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hangs up every call and stops.
    pub async fn stop(self) -> CarrierStats {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn drive(
    mut sip: SipLoop,
    mut core: CarrierCore<LegId>,
    level: i16,
    shared: Arc<Mutex<CarrierStats>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut offers: HashMap<LegId, Vec<u8>> = HashMap::new();
    let mut media: HashMap<LegId, LiveMedia> = HashMap::new();
    let mut rtp = RtpTotals::default();
    let ip = sip.local_addr().ip();
    loop {
        while let Some(action) = core.poll_action() {
            let sent = match action {
                CarrierAction::Ring(leg) => sip.handle.send(SipCommand::Ring(leg)),
                CarrierAction::Reject {
                    call,
                    status,
                    reason,
                } => {
                    offers.remove(&call);
                    sip.handle
                        .send(SipCommand::Reject(call, status, reason.into()))
                }
                CarrierAction::Answer { call, plan } => {
                    let offer = offers.remove(&call).unwrap_or_default();
                    match answer(ip, &offer, plan, level).await {
                        Ok((sdp, live)) => {
                            media.insert(call, live);
                            sip.handle.send(SipCommand::Answer(call, sdp))
                        }
                        Err(status) => {
                            core.handle_refused(call);
                            sip.handle.send(SipCommand::Reject(
                                call,
                                status,
                                "Not Acceptable Here".into(),
                            ))
                        }
                    }
                }
                CarrierAction::HangUp(leg) => sip.handle.send(SipCommand::HangUp(leg)),
            };
            if sent.is_err() {
                return;
            }
        }
        {
            let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
            *s = CarrierStats {
                rtp,
                ..core.stats()
            };
        }
        let deadline = core
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            ev = sip.events.recv() => {
                let Some(ev) = ev else { return };
                let now = Instant::now();
                match ev {
                    AgentEvent::Incoming { leg, body, .. } => {
                        offers.insert(leg, body);
                        core.handle_invite(now, leg);
                    }
                    AgentEvent::Answered { leg, .. } => core.handle_answered(now, leg),
                    AgentEvent::Ended { leg, by_peer } => {
                        core.handle_ended(leg, if by_peer { Ended::ByCaller } else { Ended::ByUs });
                        if let Some(m) = media.remove(&leg) {
                            let _ = m.stop.send(true);
                            if let Ok(s) = m.task.await {
                                rtp.sent += s.sent;
                                rtp.received += s.received;
                                rtp.calls_heard += u64::from(s.audible > 0);
                            }
                        }
                    }
                    AgentEvent::Failed { leg, .. } => {
                        offers.remove(&leg);
                        core.handle_ended(leg, Ended::Cancelled);
                        if let Some(m) = media.remove(&leg) {
                            let _ = m.stop.send(true);
                        }
                    }
                    _ => {}
                }
            }
            () = tokio::time::sleep_until(deadline.into()) => core.handle_timeout(Instant::now()),
            () = crate::stopped(&mut stop) => break,
        }
    }
    // Stop: hang up whatever is up, give the BYEs a moment, end the loop.
    for leg in core.calls() {
        let _ = sip.handle.send(SipCommand::HangUp(leg));
    }
    for (_, m) in media.drain() {
        let _ = m.stop.send(true);
        let _ = m.task.await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    sip.stop().await;
}

async fn answer(
    ip: std::net::IpAddr,
    offer: &[u8],
    plan: CallPlan,
    level: i16,
) -> Result<(Vec<u8>, LiveMedia), u16> {
    let socket = MediaSocket::bind(ip).await.map_err(|_| 503u16)?;
    let (sdp, audio) = socket.answer(offer, plan.voice_seed >> 1)?;
    let voice = match plan.fate {
        Fate::Machine => Voice::machine(plan.voice_seed, level, plan.greeting),
        _ => Voice::person(plan.voice_seed, level),
    };
    let (stop, stop_rx) = watch::channel(false);
    let task = socket.play(audio, voice, plan.voice_seed as u32, stop_rx);
    Ok((sdp, LiveMedia { stop, task }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::Seconds;

    fn scenario() -> CarrierScenario {
        CarrierScenario {
            answer_probability: 0.5,
            machine_share: 0.3,
            busy_share: 0.4,
            ring_seconds: Seconds::Uniform { min: 2.0, max: 6.0 },
            talk_seconds: Seconds::fixed(20.0),
            no_answer_after_seconds: 30.0,
            max_calls: 3,
            ..CarrierScenario::default()
        }
    }

    fn drain(c: &mut CarrierCore<u32>) -> Vec<CarrierAction<u32>> {
        std::iter::from_fn(|| c.poll_action()).collect()
    }

    #[test]
    fn the_mix_of_fates_follows_the_scenario_and_the_seed_repeats_it() {
        let mut c = CarrierCore::<u32>::new(scenario(), 11);
        let plans: Vec<CallPlan> = (0..20_000).map(|_| c.draw_plan()).collect();
        let share = |f: Fate| plans.iter().filter(|p| p.fate == f).count() as f64 / 20_000.0;
        // answered 0.5 (of which 30 % machines), unanswered 0.5 (of which 40 % busy).
        assert!(
            (share(Fate::Person) - 0.35).abs() < 0.015,
            "{}",
            share(Fate::Person)
        );
        assert!((share(Fate::Machine) - 0.15).abs() < 0.015);
        assert!((share(Fate::Busy) - 0.20).abs() < 0.015);
        assert!((share(Fate::NoAnswer) - 0.30).abs() < 0.015);
        let mut again = CarrierCore::<u32>::new(scenario(), 11);
        let replay: Vec<CallPlan> = (0..100).map(|_| again.draw_plan()).collect();
        assert_eq!(&plans[..100], &replay[..]);
        let mut other = CarrierCore::<u32>::new(scenario(), 12);
        let other: Vec<CallPlan> = (0..100).map(|_| other.draw_plan()).collect();
        assert_ne!(&plans[..100], &other[..]);
    }

    #[test]
    fn each_fate_plays_out_at_its_times_in_virtual_time() {
        let t0 = Instant::now();
        let mut c = CarrierCore::<u32>::new(scenario(), 3);
        // Find one call of each answered/unanswered kind by peeking at the seed's plans.
        let mut probe = CarrierCore::<u32>::new(scenario(), 3);
        let plans: Vec<CallPlan> = (0..3).map(|_| probe.draw_plan()).collect();
        for k in 0..3u32 {
            c.handle_invite(t0, k);
        }
        assert_eq!(
            drain(&mut c),
            vec![
                CarrierAction::Ring(0),
                CarrierAction::Ring(1),
                CarrierAction::Ring(2)
            ]
        );
        // Full: the fourth is refused at once.
        c.handle_invite(t0, 9);
        assert_eq!(
            drain(&mut c),
            vec![CarrierAction::Reject {
                call: 9,
                status: 503,
                reason: "Service Unavailable"
            }]
        );
        let mut now = t0;
        let mut answered_at = HashMap::new();
        let mut ended = HashMap::new();
        while let Some(at) = c.poll_timeout() {
            assert!(at >= now, "time moves forward");
            now = at;
            c.handle_timeout(now);
            for a in drain(&mut c) {
                match a {
                    CarrierAction::Answer { call, plan } => {
                        assert_eq!(plan, plans[call as usize]);
                        answered_at.insert(call, now);
                        c.handle_answered(now, call);
                    }
                    CarrierAction::Reject { call, status, .. } => {
                        ended.insert(call, (status, now));
                    }
                    CarrierAction::HangUp(call) => {
                        ended.insert(call, (200, now));
                        c.handle_ended(call, Ended::ByUs);
                    }
                    CarrierAction::Ring(_) => unreachable!(),
                }
            }
        }
        for (k, p) in plans.iter().enumerate() {
            let k = k as u32;
            let (status, at) = ended[&k];
            match p.fate {
                Fate::Busy => {
                    assert_eq!(status, 486);
                    assert_eq!(at, t0 + p.ring);
                }
                Fate::NoAnswer => {
                    assert_eq!(status, 480);
                    assert_eq!(at, t0 + Duration::from_secs(30));
                }
                Fate::Person | Fate::Machine => {
                    assert_eq!(answered_at[&k], t0 + p.ring);
                    assert_eq!(at, t0 + p.ring + p.hold);
                }
            }
        }
        assert_eq!(c.stats().active, 0);
    }

    #[test]
    fn a_caller_who_cancels_or_hangs_up_first_ends_the_call_without_a_bye() {
        let t0 = Instant::now();
        let mut s = scenario();
        s.answer_probability = 1.0;
        s.machine_share = 0.0;
        let mut c = CarrierCore::<u32>::new(s, 5);
        c.handle_invite(t0, 1);
        c.handle_invite(t0, 2);
        drain(&mut c);
        c.handle_ended(1, Ended::Cancelled);
        let at = c.poll_timeout().unwrap();
        c.handle_timeout(at);
        assert!(matches!(
            drain(&mut c)[..],
            [CarrierAction::Answer { call: 2, .. }]
        ));
        c.handle_answered(at, 2);
        c.handle_ended(2, Ended::ByCaller);
        assert_eq!(c.poll_timeout(), None, "nothing left to hang up");
        let st = c.stats();
        assert_eq!((st.cancelled, st.caller_hung_up, st.answered), (1, 1, 1));
    }
}
