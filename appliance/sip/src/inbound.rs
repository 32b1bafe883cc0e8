//! Who may call in, and where their calls go: INVITEs are taken only from configured
//! trunk addresses (and registered phones, added by the registrar), others get 403 or
//! silence as configured; a per-source token bucket keeps a scanner flood from starving
//! real calls; a static route table maps the called number to a phone, an agent group or
//! a trunk. Pure decisions with time passed in; no I/O.

use crate::message::Request;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Where a routed inbound call goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTarget {
    /// A registered phone (account name).
    Phone(String),
    /// An agent group (the daemon picks the agent).
    AgentGroup(String),
    /// Out again on a trunk.
    Trunk(String),
}

/// One entry of the route table: `number` is an exact called number, or a prefix ending
/// in `*` (`4930*`). The longest match wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundRoute {
    /// The called number or prefix.
    pub number: String,
    /// Where it goes.
    pub target: RouteTarget,
}

/// What to do with requests from addresses that are not allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownSource {
    /// Answer 403 Forbidden.
    Reject,
    /// Send nothing (do not confirm to a scanner that something listens).
    Ignore,
}

/// The inbound policy, from config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundPolicy {
    /// Source addresses allowed to send INVITEs (trunk addresses).
    pub allowed_sources: Vec<IpAddr>,
    /// The trunk each carrier address belongs to, reported with its inbound calls (the first
    /// trunk of an address shared by several). Sources without a name (registered phones)
    /// are reported without a trunk.
    pub trunk_names: Vec<(IpAddr, String)>,
    /// What unknown sources get.
    pub unknown_source: UnknownSource,
    /// Requests per second allowed per source (sustained).
    pub per_source_rate: u32,
    /// Requests a source may send in a burst.
    pub per_source_burst: u32,
    /// The route table.
    pub routes: Vec<InboundRoute>,
}

/// The decision for one out-of-dialog request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Route the call to this target.
    Route(RouteTarget),
    /// Answer with this status (403 unknown source, 404 no route).
    Refuse(u16),
    /// Send nothing (rate limited, or an unknown source under `Ignore`).
    Drop,
}

#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Applies an [`InboundPolicy`], keeping per-source rate state.
#[derive(Debug, Clone)]
pub struct InboundGate {
    policy: InboundPolicy,
    /// Extra allowed sources (registered phones), managed by the registrar.
    phones: Vec<IpAddr>,
    buckets: HashMap<IpAddr, Bucket>,
}

/// Rate state is forgotten for sources idle this long once the table grows.
const IDLE: Duration = Duration::from_secs(60);
const TABLE_LIMIT: usize = 4096;

impl InboundGate {
    /// A gate for `policy`.
    pub fn new(policy: InboundPolicy) -> Self {
        InboundGate {
            policy,
            phones: Vec::new(),
            buckets: HashMap::new(),
        }
    }

    /// Takes `policy` from now on (a trunk edit), keeping what the gate has learnt: the
    /// registered phones' sources and each source's rate state (a flooding source does not
    /// get a fresh burst from an edit). Buckets refill at the new rate up to the new burst.
    pub fn replace_policy(&mut self, policy: InboundPolicy) {
        self.policy = policy;
    }

    /// Allows (or stops allowing) a registered phone's address.
    pub fn set_phone_sources(&mut self, sources: Vec<IpAddr>) {
        self.phones = sources;
    }

    fn take_token(&mut self, now: Instant, ip: IpAddr) -> bool {
        if self.buckets.len() > TABLE_LIMIT {
            self.buckets
                .retain(|_, b| now.saturating_duration_since(b.at) < IDLE);
        }
        let burst = f64::from(self.policy.per_source_burst.max(1));
        let rate = f64::from(self.policy.per_source_rate);
        let b = self.buckets.entry(ip).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// A REGISTER from `source`: phones are not on the allow-list until they register,
    /// so only the rate limit applies (the registrar authenticates them).
    pub fn admit_register(&mut self, now: Instant, source: SocketAddr) -> bool {
        self.take_token(now, source.ip())
    }

    /// Decides about an out-of-dialog request from `source`.
    pub fn admit(&mut self, now: Instant, source: SocketAddr, req: &Request) -> Admission {
        if !self.take_token(now, source.ip()) {
            return Admission::Drop;
        }
        let ip = source.ip();
        if !self.policy.allowed_sources.contains(&ip) && !self.phones.contains(&ip) {
            return match self.policy.unknown_source {
                UnknownSource::Reject => Admission::Refuse(403),
                UnknownSource::Ignore => Admission::Drop,
            };
        }
        let number = called_number(req);
        self.route(&number)
            .map_or(Admission::Refuse(404), Admission::Route)
    }

    /// The trunk whose address `source` is, if any.
    pub fn trunk_of(&self, source: IpAddr) -> Option<&str> {
        self.policy
            .trunk_names
            .iter()
            .find(|(ip, _)| *ip == source)
            .map(|(_, name)| name.as_str())
    }

    /// The route for a called number (longest match).
    pub fn route(&self, number: &str) -> Option<RouteTarget> {
        self.policy
            .routes
            .iter()
            .filter_map(|r| match r.number.strip_suffix('*') {
                Some(prefix) if number.starts_with(prefix) => Some((prefix.len(), r)),
                None if r.number == number => Some((usize::MAX, r)),
                _ => None,
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, r)| r.target.clone())
    }
}

/// The called number: the Request-URI's user part, unescaped, without a leading `+`.
pub fn called_number(req: &Request) -> String {
    let user = match &req.uri {
        crate::uri::Uri::Sip(u) => u
            .user_unescaped()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default(),
        crate::uri::Uri::Other { opaque, .. } => opaque.clone(),
    };
    user.trim_start_matches('+').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::{CSeq, Header, NameAddr};
    use crate::message::{Headers, Method};
    use crate::uri::Uri;

    fn invite(to: &str) -> Request {
        let mut h = Headers::default();
        h.push(Header::CSeq(CSeq {
            seq: 1,
            method: Method::Invite,
        }));
        h.push(Header::To(NameAddr::new(Uri::parse(to).unwrap())));
        Request {
            method: Method::Invite,
            uri: Uri::parse(to).unwrap(),
            headers: h,
            body: Vec::new(),
        }
    }

    fn gate(unknown: UnknownSource) -> InboundGate {
        InboundGate::new(InboundPolicy {
            allowed_sources: vec!["192.0.2.10".parse().unwrap()],
            trunk_names: Vec::new(),
            unknown_source: unknown,
            per_source_rate: 5,
            per_source_burst: 10,
            routes: vec![
                InboundRoute {
                    number: "4930*".into(),
                    target: RouteTarget::AgentGroup("berlin".into()),
                },
                InboundRoute {
                    number: "4930123".into(),
                    target: RouteTarget::Phone("desk1".into()),
                },
                InboundRoute {
                    number: "*".into(),
                    target: RouteTarget::Trunk("backup".into()),
                },
            ],
        })
    }

    fn src(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 5060)
    }

    #[test]
    fn calls_from_trunks_are_routed_by_the_longest_match() {
        let mut g = gate(UnknownSource::Reject);
        let now = Instant::now();
        let s = src("192.0.2.10");
        assert_eq!(
            g.admit(now, s, &invite("sip:+4930123@box")),
            Admission::Route(RouteTarget::Phone("desk1".into()))
        );
        assert_eq!(
            g.admit(now, s, &invite("sip:4930999@box")),
            Admission::Route(RouteTarget::AgentGroup("berlin".into()))
        );
        assert_eq!(
            g.admit(now, s, &invite("sip:331234@box")),
            Admission::Route(RouteTarget::Trunk("backup".into()))
        );
    }

    #[test]
    fn a_replaced_policy_keeps_phone_sources_and_a_floods_spent_burst() {
        let mut g = gate(UnknownSource::Reject);
        let now = Instant::now();
        let (trunk, phone) = (src("192.0.2.10"), src("198.51.100.7"));
        g.set_phone_sources(vec![phone.ip()]);
        // The trunk floods: its burst of 10 is spent.
        for _ in 0..10 {
            assert_ne!(g.admit(now, trunk, &invite("sip:1@box")), Admission::Drop);
        }
        assert_eq!(g.admit(now, trunk, &invite("sip:1@box")), Admission::Drop);

        let mut edited = g.policy.clone();
        edited.routes.truncate(1);
        g.replace_policy(edited);
        assert_eq!(
            g.admit(now, trunk, &invite("sip:4930999@box")),
            Admission::Drop,
            "no fresh burst from an edit"
        );
        assert_eq!(
            g.admit(now, phone, &invite("sip:4930999@box")),
            Admission::Route(RouteTarget::AgentGroup("berlin".into())),
            "the registered phone is still let through"
        );
        assert_eq!(
            g.admit(now, phone, &invite("sip:331234@box")),
            Admission::Refuse(404),
            "the new route table applies"
        );
        // 0.2 s at 5/s: one token back.
        let later = now + Duration::from_millis(200);
        assert_ne!(g.admit(later, trunk, &invite("sip:1@box")), Admission::Drop);
    }

    #[test]
    fn unknown_sources_get_403_or_silence_per_config() {
        let now = Instant::now();
        let s = src("203.0.113.5");
        assert_eq!(
            gate(UnknownSource::Reject).admit(now, s, &invite("sip:1@box")),
            Admission::Refuse(403)
        );
        assert_eq!(
            gate(UnknownSource::Ignore).admit(now, s, &invite("sip:1@box")),
            Admission::Drop
        );
    }

    #[test]
    fn a_flooding_source_is_limited_without_starving_a_trunk() {
        let mut g = gate(UnknownSource::Reject);
        let now = Instant::now();
        let scanner = src("203.0.113.5");
        let trunk = src("192.0.2.10");
        let answered = (0..1000)
            .filter(|_| g.admit(now, scanner, &invite("sip:1@box")) != Admission::Drop)
            .count();
        assert_eq!(answered, 10, "the scanner gets its burst, then silence");
        assert!(matches!(
            g.admit(now, trunk, &invite("sip:4930123@box")),
            Admission::Route(_)
        ));
        // Tokens come back at the sustained rate.
        let later = now + Duration::from_secs(1);
        let more = (0..100)
            .filter(|_| g.admit(later, scanner, &invite("sip:1@box")) != Admission::Drop)
            .count();
        assert_eq!(more, 5);
    }
}
