//! The registrar for the branch's SIP phones (RFC 3261 §10.3): accounts with digest
//! authentication (SHA-256 and MD5 challenges, nonces we issued and that are fresh,
//! nonce counts that only go up), bindings with expiry and refresh, several contacts per
//! account, `*` removal, 423 for too-brief intervals. Each binding remembers the address
//! the REGISTER came from, so calls reach a phone behind NAT over the flow it keeps open.
//! Pure state; the nonce text and time come from the caller.

use crate::digest;
use crate::header::{AuthValue, Contact, Header, NameAddr, Transport};
use crate::message::{response_to, Method, Request, Response};
use crate::param::Param;
use crate::uri::Uri;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A phone account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneAccount {
    /// The user part of the AoR and the digest username.
    pub username: String,
    /// The digest password.
    pub password: String,
}

/// Registrar limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrarConfig {
    /// Digest realm.
    pub realm: String,
    /// Shortest binding accepted (423 below it).
    pub min_expires: u32,
    /// Longest binding granted.
    pub max_expires: u32,
    /// Granted when the phone asks for nothing.
    pub default_expires: u32,
    /// Contacts per account; the oldest is dropped beyond it.
    pub max_contacts: usize,
    /// How long a nonce we issued stays valid.
    pub nonce_lifetime: Duration,
    /// Digest algorithms challenged, in order of preference (`"SHA-256"`, `"MD5"`); older
    /// phones only understand MD5 and may pick the first challenge they see.
    pub algorithms: Vec<String>,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            realm: "callgate".into(),
            min_expires: 60,
            max_expires: 3600,
            default_expires: 600,
            max_contacts: 5,
            nonce_lifetime: Duration::from_secs(300),
            algorithms: vec!["SHA-256".into(), "MD5".into()],
        }
    }
}

/// One registered contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The Contact URI.
    pub contact: Uri,
    /// Where the REGISTER came from: where requests to the phone are sent.
    pub source: SocketAddr,
    /// When it lapses.
    pub expires_at: Instant,
    call_id: String,
    cseq: u32,
    /// Registered over TCP or TLS: the binding is only good while that connection is.
    stream: bool,
}

/// A binding as it is kept across a restart ([`Registrar::bindings_to_keep`],
/// [`Registrar::restore`]): its lifetime is what is left of it, since the clock it was
/// granted on does not survive the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBinding {
    /// The account (AoR user).
    pub account: String,
    /// The Contact URI, as text.
    pub contact: String,
    /// Where the REGISTER came from.
    pub source: SocketAddr,
    /// What is left of the binding.
    pub remaining: Duration,
    /// The REGISTER's Call-ID and CSeq (a later one from the same phone must be newer).
    pub call_id: String,
    /// See `call_id`.
    pub cseq: u32,
}

#[derive(Debug, Clone)]
struct NonceState {
    issued: Instant,
    last_nc: u32,
}

/// The registrar's state.
#[derive(Debug, Clone)]
pub struct Registrar {
    cfg: RegistrarConfig,
    accounts: HashMap<String, PhoneAccount>,
    bindings: HashMap<String, Vec<Binding>>,
    nonces: HashMap<String, NonceState>,
    /// Counts changes to the bindings, so a driver keeping them knows when to write.
    changes: u64,
}

enum AuthCheck {
    Ok,
    /// Challenge again; `stale` when the answer was right but the nonce too old/unknown.
    Challenge {
        stale: bool,
    },
}

impl Registrar {
    /// A registrar with these accounts.
    pub fn new(cfg: RegistrarConfig, accounts: Vec<PhoneAccount>) -> Self {
        Registrar {
            cfg,
            accounts: accounts
                .into_iter()
                .map(|a| (a.username.clone(), a))
                .collect(),
            bindings: HashMap::new(),
            nonces: HashMap::new(),
            changes: 0,
        }
    }

    /// How many times the bindings changed (registered, refreshed, removed, lapsed, or
    /// dropped with their account) since this registrar was made.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// The live bindings worth keeping across a restart, oldest account first. Bindings
    /// made over TCP or TLS are left out: their connection ends with the process, so the
    /// phone must register again over a new one.
    pub fn bindings_to_keep(&self, now: Instant) -> Vec<StoredBinding> {
        let mut kept: Vec<StoredBinding> = self
            .bindings
            .iter()
            .flat_map(|(account, list)| {
                list.iter()
                    .filter(|b| !b.stream && b.expires_at > now)
                    .map(move |b| StoredBinding {
                        account: account.clone(),
                        contact: b.contact.to_string(),
                        source: b.source,
                        remaining: b.expires_at - now,
                        call_id: b.call_id.clone(),
                        cseq: b.cseq,
                    })
            })
            .collect();
        kept.sort_by(|a, b| (&a.account, &a.contact).cmp(&(&b.account, &b.contact)));
        kept
    }

    /// Takes back bindings kept by [`Registrar::bindings_to_keep`] before a restart, as if
    /// their phones had just registered for what was left of them. A binding whose account
    /// is no longer configured, that has lapsed, whose contact does not parse, or beyond
    /// the account's contact limit is refused; each refusal is returned with why.
    pub fn restore(
        &mut self,
        now: Instant,
        kept: Vec<StoredBinding>,
    ) -> Vec<(StoredBinding, &'static str)> {
        let mut refused = Vec::new();
        for b in kept {
            if !self.accounts.contains_key(&b.account) {
                refused.push((b, "no such phone account now"));
                continue;
            }
            if b.remaining.is_zero() {
                refused.push((b, "lapsed"));
                continue;
            }
            let Ok(contact) = Uri::parse(&b.contact) else {
                refused.push((b, "contact is not a SIP URI"));
                continue;
            };
            let list = self.bindings.entry(b.account.clone()).or_default();
            if list.iter().any(|x| x.contact.to_string() == b.contact) {
                refused.push((b, "contact bound twice"));
                continue;
            }
            if list.len() >= self.cfg.max_contacts {
                refused.push((b, "more contacts than the account may have"));
                continue;
            }
            let granted = b
                .remaining
                .min(Duration::from_secs(u64::from(self.cfg.max_expires)));
            list.push(Binding {
                contact,
                source: b.source,
                expires_at: now + granted,
                call_id: b.call_id,
                cseq: b.cseq,
                stream: false,
            });
            self.changes += 1;
        }
        refused
    }

    fn check_auth(&mut self, now: Instant, req: &Request, account: &PhoneAccount) -> AuthCheck {
        let Some(cred) = req.headers.authorization().find(|a| a.is_digest()) else {
            return AuthCheck::Challenge { stale: false };
        };
        let user_ok = cred.param("username").as_deref() == Some(account.username.as_str())
            && cred.param("realm").as_deref() == Some(self.cfg.realm.as_str());
        if !user_ok || !digest::verify(cred, &req.method, &account.password) {
            return AuthCheck::Challenge { stale: false };
        }
        let nonce = cred.param("nonce").unwrap_or_default();
        let lifetime = self.cfg.nonce_lifetime;
        let nc = cred
            .param("nc")
            .and_then(|n| u32::from_str_radix(&n, 16).ok())
            .unwrap_or(0);
        match self.nonces.get_mut(&nonce) {
            Some(st) if now.duration_since(st.issued) < lifetime => {
                if cred.param("qop").is_some() {
                    if nc <= st.last_nc {
                        // A replayed answer.
                        return AuthCheck::Challenge { stale: false };
                    }
                    st.last_nc = nc;
                }
                AuthCheck::Ok
            }
            _ => AuthCheck::Challenge { stale: true },
        }
    }

    fn challenge(&mut self, now: Instant, req: &Request, nonce: &str, stale: bool) -> Response {
        self.nonces
            .retain(|_, st| now.duration_since(st.issued) < self.cfg.nonce_lifetime);
        self.nonces.insert(
            nonce.to_owned(),
            NonceState {
                issued: now,
                last_nc: 0,
            },
        );
        let mut r = response_to(req, 401, "Unauthorized", Some(nonce));
        for alg in self.cfg.algorithms.clone() {
            let mut params = vec![
                Param::new("realm", Some(&format!("\"{}\"", self.cfg.realm))),
                Param::new("nonce", Some(&format!("\"{nonce}\""))),
                Param::new("qop", Some("\"auth\"")),
                Param::new("algorithm", Some(&alg)),
            ];
            if stale {
                params.push(Param::new("stale", Some("true")));
            }
            r.headers.push(Header::WwwAuthenticate(AuthValue {
                scheme: "Digest".into(),
                params,
            }));
        }
        r
    }

    /// Handles a REGISTER from `source`. `nonce` is fresh random text the caller supplies
    /// (used if a challenge is needed; also used as the To tag).
    pub fn handle_register(
        &mut self,
        now: Instant,
        source: SocketAddr,
        req: &Request,
        nonce: &str,
    ) -> Response {
        debug_assert_eq!(req.method, Method::Register);
        let user = req
            .headers
            .to()
            .and_then(|t| t.uri.as_sip())
            .and_then(|u| u.user.clone())
            .unwrap_or_default();
        let Some(account) = self.accounts.get(&user).cloned() else {
            return response_to(req, 404, "Not Found", Some(nonce));
        };
        if let AuthCheck::Challenge { stale } = self.check_auth(now, req, &account) {
            return self.challenge(now, req, nonce, stale);
        }
        let header_expires = req.headers.expires().copied();
        let call_id = req.headers.call_id().cloned().unwrap_or_default();
        let cseq = req.headers.cseq().map_or(0, |c| c.seq);
        let contacts: Vec<&Contact> = req.headers.contacts().collect();
        let stream = req
            .headers
            .top_via()
            .is_some_and(|v| matches!(v.transport, Transport::Tcp | Transport::Tls));
        let before = self.bindings.get(&user).cloned().unwrap_or_default();
        let list = self.bindings.entry(user.clone()).or_default();
        if contacts.iter().any(|c| matches!(c, Contact::Wildcard)) {
            if contacts.len() != 1 || header_expires != Some(0) {
                return response_to(
                    req,
                    400,
                    "Bad Request (`*` needs Expires: 0 alone)",
                    Some(nonce),
                );
            }
            list.clear();
        }
        for c in contacts {
            let Contact::Address(a) = c else { continue };
            let asked = a
                .param("expires")
                .flatten()
                .and_then(|e| e.parse::<u32>().ok())
                .or(header_expires)
                .unwrap_or(self.cfg.default_expires);
            if asked > 0 && asked < self.cfg.min_expires {
                let mut r = response_to(req, 423, "Interval Too Brief", Some(nonce));
                r.headers.push(Header::Other(crate::header::OtherHeader {
                    name: "Min-Expires".into(),
                    value: self.cfg.min_expires.to_string().into_bytes(),
                }));
                return r;
            }
            let key = a.uri.to_string();
            if let Some(existing) = list.iter().find(|b| b.contact.to_string() == key) {
                if existing.call_id == call_id && existing.cseq >= cseq {
                    // An out-of-order or replayed REGISTER: leave the binding as it is.
                    continue;
                }
            }
            list.retain(|b| b.contact.to_string() != key);
            if asked == 0 {
                continue;
            }
            let granted = asked.min(self.cfg.max_expires);
            list.push(Binding {
                contact: a.uri.clone(),
                source,
                expires_at: now + Duration::from_secs(u64::from(granted)),
                call_id: call_id.clone(),
                cseq,
                stream,
            });
            if list.len() > self.cfg.max_contacts {
                list.remove(0);
            }
        }
        let mut ok = response_to(req, 200, "OK", Some(nonce));
        for b in list.iter() {
            let mut na = NameAddr::new(b.contact.clone());
            let left = b.expires_at.saturating_duration_since(now).as_secs();
            na.params
                .push(Param::new("expires", Some(&left.to_string())));
            ok.headers.push(Header::Contact(Contact::Address(na)));
        }
        if *list != before {
            self.changes += 1;
        }
        if list.is_empty() {
            self.bindings.remove(&user);
        }
        ok
    }

    /// Replaces the accounts (a reload of `[[sip.phones]]`): an account kept by name keeps
    /// its bindings (a changed password applies from its next REGISTER), a removed account's
    /// bindings are dropped at once, a new account can register straight away. Returns the
    /// names of the accounts whose bindings were dropped.
    pub fn replace_accounts(&mut self, accounts: Vec<PhoneAccount>) -> Vec<String> {
        self.accounts = accounts
            .into_iter()
            .map(|a| (a.username.clone(), a))
            .collect();
        let mut dropped: Vec<String> = self
            .bindings
            .keys()
            .filter(|user| !self.accounts.contains_key(*user))
            .cloned()
            .collect();
        dropped.sort();
        self.bindings
            .retain(|user, _| self.accounts.contains_key(user));
        if !dropped.is_empty() {
            self.changes += 1;
        }
        dropped
    }

    /// The live bindings of an account.
    pub fn lookup(&self, now: Instant, user: &str) -> Vec<&Binding> {
        self.bindings
            .get(user)
            .map(|l| l.iter().filter(|b| b.expires_at > now).collect())
            .unwrap_or_default()
    }

    /// Removes lapsed bindings; returns `(account, contact)` for each.
    pub fn expire(&mut self, now: Instant) -> Vec<(String, Uri)> {
        let mut gone = Vec::new();
        for (user, list) in &mut self.bindings {
            list.retain(|b| {
                let live = b.expires_at > now;
                if !live {
                    gone.push((user.clone(), b.contact.clone()));
                }
                live
            });
        }
        self.bindings.retain(|_, l| !l.is_empty());
        if !gone.is_empty() {
            self.changes += 1;
        }
        gone
    }

    /// The next binding expiry.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.bindings.values().flatten().map(|b| b.expires_at).min()
    }

    /// Source addresses of every live binding (for the inbound gate).
    pub fn sources(&self, now: Instant) -> Vec<std::net::IpAddr> {
        self.bindings
            .values()
            .flatten()
            .filter(|b| b.expires_at > now)
            .map(|b| b.source.ip())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::{DigestCredentials, DigestSession};
    use crate::header::{CSeq, Transport, Via};
    use crate::message::Headers;
    use crate::uri::Host;

    fn register(contacts: &[&str], expires: Option<u32>, seq: u32) -> Request {
        let mut h = Headers::default();
        h.push(Header::Via(Via::new(
            Transport::Udp,
            Host::V4("10.1.1.5".parse().unwrap()),
            Some(5060),
            &format!("z9hG4bKr{seq}"),
        )));
        let aor = Uri::parse("sip:desk1@box.local").unwrap();
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
            if *c == "*" {
                h.push(Header::Contact(Contact::Wildcard));
            } else {
                h.push(Header::Contact(Contact::Address(NameAddr::new(
                    Uri::parse(c).unwrap(),
                ))));
            }
        }
        if let Some(e) = expires {
            h.push(Header::Expires(e));
        }
        Request {
            method: Method::Register,
            uri: Uri::parse("sip:box.local").unwrap(),
            headers: h,
            body: Vec::new(),
        }
    }

    fn registrar() -> Registrar {
        Registrar::new(
            RegistrarConfig::default(),
            vec![PhoneAccount {
                username: "desk1".into(),
                password: "pw1".into(),
            }],
        )
    }

    /// Sends `req`, answers the challenge with `password`, returns the final response.
    fn authed(
        r: &mut Registrar,
        now: Instant,
        session: &mut DigestSession,
        mut req: Request,
    ) -> Response {
        let src: SocketAddr = "203.0.113.9:40000".parse().unwrap();
        if session.is_ready() {
            let a = session
                .authorize(&Method::Register, "sip:box.local", "c1")
                .unwrap();
            req.headers.push(Header::Authorization(a));
            let resp = r.handle_register(now, src, &req, "n-again");
            if resp.status != 401 {
                return resp;
            }
            req.headers
                .0
                .retain(|h| !matches!(h, Header::Authorization(_)));
        }
        let challenge = r.handle_register(now, src, &req, "nonce1");
        assert_eq!(challenge.status, 401);
        assert_eq!(
            challenge.headers.www_authenticate().count(),
            2,
            "SHA-256 and MD5"
        );
        session
            .challenge(challenge.headers.www_authenticate().next().unwrap())
            .unwrap();
        let a = session
            .authorize(&Method::Register, "sip:box.local", "c1")
            .unwrap();
        req.headers.push(Header::Authorization(a));
        r.handle_register(now, src, &req, "nonce2")
    }

    fn session(pw: &str) -> DigestSession {
        DigestSession::new(DigestCredentials {
            username: "desk1".into(),
            password: pw.into(),
            realm: None,
        })
    }

    #[test]
    fn a_phone_registers_with_digest_and_is_found_at_its_nat_source() {
        let mut r = registrar();
        let now = Instant::now();
        let mut s = session("pw1");
        let resp = authed(
            &mut r,
            now,
            &mut s,
            register(&["sip:desk1@10.1.1.5:5060"], Some(120), 1),
        );
        assert_eq!(resp.status, 200);
        let b = r.lookup(now, "desk1");
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].source, "203.0.113.9:40000".parse().unwrap());
        let Some(Contact::Address(c)) = resp.headers.contacts().next() else {
            panic!()
        };
        assert_eq!(c.param("expires"), Some(Some("120")));
        // Refresh with the nonce reused (nc=2): no new challenge needed.
        let resp = authed(
            &mut r,
            now + Duration::from_secs(60),
            &mut s,
            register(&["sip:desk1@10.1.1.5:5060"], Some(120), 2),
        );
        assert_eq!(resp.status, 200);
        // Expiry: gone 120 s after the refresh.
        assert_eq!(r.expire(now + Duration::from_secs(179)).len(), 0);
        assert_eq!(r.expire(now + Duration::from_secs(181)).len(), 1);
        assert!(r.lookup(now + Duration::from_secs(181), "desk1").is_empty());
    }

    #[test]
    fn a_wrong_password_or_a_replayed_answer_is_challenged_again() {
        let mut r = registrar();
        let now = Instant::now();
        let src: SocketAddr = "203.0.113.9:40000".parse().unwrap();
        let mut s = session("wrong");
        let resp = authed(
            &mut r,
            now,
            &mut s,
            register(&["sip:desk1@10.1.1.5"], Some(120), 1),
        );
        assert_eq!(resp.status, 401);
        assert!(r.lookup(now, "desk1").is_empty());
        // Replay: the same Authorization (same nc) twice.
        let mut good = session("pw1");
        let mut req = register(&["sip:desk1@10.1.1.5"], Some(120), 3);
        let ch = r.handle_register(now, src, &req, "nonceX");
        good.challenge(ch.headers.www_authenticate().next().unwrap())
            .unwrap();
        req.headers.push(Header::Authorization(
            good.authorize(&Method::Register, "sip:box.local", "c")
                .unwrap(),
        ));
        assert_eq!(r.handle_register(now, src, &req, "n").status, 200);
        assert_eq!(
            r.handle_register(now, src, &req, "n").status,
            401,
            "nc did not go up"
        );
    }

    #[test]
    fn several_contacts_star_removal_and_too_brief_intervals() {
        let mut r = registrar();
        let now = Instant::now();
        let mut s = session("pw1");
        let resp = authed(
            &mut r,
            now,
            &mut s,
            register(&["sip:desk1@10.1.1.5", "sip:desk1@10.1.1.6"], Some(300), 1),
        );
        assert_eq!(resp.status, 200);
        assert_eq!(r.lookup(now, "desk1").len(), 2);
        let resp = authed(
            &mut r,
            now,
            &mut s,
            register(&["sip:desk1@10.1.1.7"], Some(30), 2),
        );
        assert_eq!(resp.status, 423);
        assert_eq!(resp.headers.get("Min-Expires").as_deref(), Some("60"));
        let resp = authed(&mut r, now, &mut s, register(&["*"], Some(0), 3));
        assert_eq!(resp.status, 200);
        assert!(r.lookup(now, "desk1").is_empty());
    }

    #[test]
    fn replacing_the_accounts_keeps_kept_bindings_drops_removed_ones_and_admits_new_ones() {
        let mut r = Registrar::new(
            RegistrarConfig::default(),
            vec![
                PhoneAccount {
                    username: "desk1".into(),
                    password: "pw1".into(),
                },
                PhoneAccount {
                    username: "desk2".into(),
                    password: "pw2".into(),
                },
            ],
        );
        let now = Instant::now();
        let mut s = session("pw1");
        let resp = authed(
            &mut r,
            now,
            &mut s,
            register(&["sip:desk1@10.1.1.5"], Some(300), 1),
        );
        assert_eq!(resp.status, 200);
        // desk2 is bound too (its own REGISTER, by hand: the helper speaks for desk1).
        r.bindings.insert(
            "desk2".into(),
            vec![Binding {
                contact: Uri::parse("sip:desk2@10.1.1.6").unwrap(),
                source: "203.0.113.10:5060".parse().unwrap(),
                expires_at: now + Duration::from_secs(300),
                call_id: "reg-desk2".into(),
                cseq: 1,
                stream: false,
            }],
        );
        let dropped = r.replace_accounts(vec![
            PhoneAccount {
                username: "desk1".into(),
                password: "pw1-new".into(),
            },
            PhoneAccount {
                username: "desk3".into(),
                password: "pw3".into(),
            },
        ]);
        assert_eq!(dropped, vec!["desk2".to_string()]);
        assert_eq!(
            r.lookup(now, "desk1").len(),
            1,
            "kept account keeps its binding"
        );
        assert!(r.lookup(now, "desk2").is_empty(), "removed account unbound");
        assert_eq!(
            r.sources(now),
            vec!["203.0.113.9".parse::<std::net::IpAddr>().unwrap()]
        );
        // The removed account is now unknown; the new one is challenged (it exists).
        let src: SocketAddr = "203.0.113.10:5060".parse().unwrap();
        let mut gone = register(&["sip:desk2@10.1.1.6"], Some(300), 2);
        if let Some(t) = gone.headers.to_mut() {
            t.uri = Uri::parse("sip:desk2@box.local").unwrap();
        }
        assert_eq!(r.handle_register(now, src, &gone, "n").status, 404);
        let mut fresh = register(&["sip:desk3@10.1.1.7"], Some(300), 1);
        if let Some(t) = fresh.headers.to_mut() {
            t.uri = Uri::parse("sip:desk3@box.local").unwrap();
        }
        assert_eq!(r.handle_register(now, src, &fresh, "n").status, 401);
        // The kept account's next REGISTER needs the new password.
        let mut old = session("pw1");
        let resp = authed(
            &mut r,
            now,
            &mut old,
            register(&["sip:desk1@10.1.1.5"], Some(300), 3),
        );
        assert_eq!(resp.status, 401, "the old password no longer works");
        let mut new = session("pw1-new");
        let resp = authed(
            &mut r,
            now,
            &mut new,
            register(&["sip:desk1@10.1.1.5"], Some(300), 4),
        );
        assert_eq!(resp.status, 200);
    }

    #[test]
    fn unknown_accounts_get_404() {
        let mut r = registrar();
        let mut req = register(&["sip:x@10.0.0.1"], None, 1);
        if let Some(t) = req.headers.to_mut() {
            t.uri = Uri::parse("sip:nobody@box.local").unwrap();
        }
        let resp = r.handle_register(Instant::now(), "10.0.0.1:5060".parse().unwrap(), &req, "n");
        assert_eq!(resp.status, 404);
    }

    #[test]
    fn bindings_kept_across_a_restart_come_back_with_what_was_left_of_them() {
        let mut r = registrar();
        let t0 = Instant::now();
        assert_eq!(r.changes(), 0);
        let resp = authed(
            &mut r,
            t0,
            &mut session("pw1"),
            register(&["sip:desk1@10.1.1.5"], Some(300), 1),
        );
        assert_eq!(resp.status, 200);
        assert_eq!(r.changes(), 1, "a new binding is a change");
        let later = t0 + Duration::from_secs(100);
        let kept = r.bindings_to_keep(later);
        assert_eq!(
            kept,
            vec![StoredBinding {
                account: "desk1".into(),
                contact: "sip:desk1@10.1.1.5".into(),
                source: "203.0.113.9:40000".parse().unwrap(),
                remaining: Duration::from_secs(200),
                call_id: "reg-desk1".into(),
                cseq: 1,
            }]
        );

        // A new process: its own clock, the same accounts.
        let mut fresh = registrar();
        let t1 = Instant::now() + Duration::from_secs(5);
        assert!(fresh.restore(t1, kept).is_empty());
        assert_eq!(fresh.changes(), 1);
        let bound = fresh.lookup(t1 + Duration::from_secs(199), "desk1");
        assert_eq!(bound.len(), 1);
        assert_eq!(bound[0].source, "203.0.113.9:40000".parse().unwrap());
        assert!(fresh
            .lookup(t1 + Duration::from_secs(201), "desk1")
            .is_empty());
        // The phone's next REGISTER (same Call-ID, higher CSeq) refreshes it as usual, and
        // a replay of the old one leaves it alone.
        assert_eq!(
            fresh.sources(t1),
            vec!["203.0.113.9".parse::<std::net::IpAddr>().unwrap()]
        );
        let replay = authed(
            &mut fresh,
            t1,
            &mut session("pw1"),
            register(&["sip:desk1@10.1.1.5"], Some(600), 1),
        );
        assert_eq!(replay.status, 200);
        assert!(fresh
            .lookup(t1 + Duration::from_secs(201), "desk1")
            .is_empty());
        assert_eq!(fresh.changes(), 1, "a replay changes nothing");
    }

    #[test]
    fn a_kept_binding_is_refused_with_its_reason_and_stream_bindings_are_not_kept() {
        let mut r = registrar();
        let now = Instant::now();
        let mut over_tcp = register(&["sip:desk1@10.1.1.5;transport=tcp"], Some(300), 1);
        over_tcp.headers.top_via_mut().unwrap().transport = Transport::Tcp;
        assert_eq!(
            authed(&mut r, now, &mut session("pw1"), over_tcp).status,
            200
        );
        assert_eq!(r.lookup(now, "desk1").len(), 1);
        assert!(
            r.bindings_to_keep(now).is_empty(),
            "its connection ends with the process"
        );

        let kept = |account: &str, contact: &str, secs: u64| StoredBinding {
            account: account.into(),
            contact: contact.into(),
            source: "203.0.113.9:40000".parse().unwrap(),
            remaining: Duration::from_secs(secs),
            call_id: "c".into(),
            cseq: 1,
        };
        let mut fresh = registrar();
        let refused = fresh.restore(
            now,
            vec![
                kept("desk9", "sip:desk9@10.1.1.9", 100),
                kept("desk1", "sip:desk1@10.1.1.5", 0),
                kept("desk1", "not a uri", 100),
                kept("desk1", "sip:desk1@10.1.1.7", 100_000),
            ],
        );
        let reasons: Vec<(&str, &str)> = refused
            .iter()
            .map(|(b, why)| (b.account.as_str(), *why))
            .collect();
        assert_eq!(
            reasons,
            vec![
                ("desk9", "no such phone account now"),
                ("desk1", "lapsed"),
                ("desk1", "contact is not a SIP URI"),
            ]
        );
        let bound = fresh.lookup(now, "desk1");
        assert_eq!(bound.len(), 1);
        assert_eq!(
            bound[0].expires_at,
            now + Duration::from_secs(3600),
            "never longer than the registrar grants"
        );
    }
}
