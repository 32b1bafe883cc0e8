//! Digest authentication for the client side (RFC 3261 §22, RFC 2617 qop=auth, RFC 8760
//! SHA-256): answering a 401/407 challenge, reusing the nonce with an increasing nonce
//! count, and retrying once on `stale=true`. Pure computation; cnonces come from the
//! caller so results are reproducible.

use crate::error::SipError;
use crate::header::AuthValue;
use crate::message::Method;
use crate::param::Param;
use md5::{Digest as _, Md5};
use sha2::Sha256;

/// A username and password for one realm (or any realm when `realm` is `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestCredentials {
    /// The username.
    pub username: String,
    /// The password.
    pub password: String,
    /// The realm these credentials are for; `None` answers any realm.
    pub realm: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    fn parse(s: Option<&str>) -> Option<Algorithm> {
        match s.map(str::to_ascii_uppercase).as_deref() {
            None | Some("MD5") => Some(Algorithm::Md5),
            Some("SHA-256") => Some(Algorithm::Sha256),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    fn hex(self, data: &str) -> String {
        let bytes: Vec<u8> = match self {
            Algorithm::Md5 => Md5::digest(data.as_bytes()).to_vec(),
            Algorithm::Sha256 => Sha256::digest(data.as_bytes()).to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The digest response (`response=`) for the given inputs.
#[allow(clippy::too_many_arguments)]
fn response_hash(
    alg: Algorithm,
    username: &str,
    realm: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    qop: Option<(&str, &str, &str)>,
) -> String {
    let ha1 = alg.hex(&format!("{username}:{realm}:{password}"));
    let ha2 = alg.hex(&format!("{method}:{uri}"));
    match qop {
        Some((nc, cnonce, qop)) => alg.hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")),
        None => alg.hex(&format!("{ha1}:{nonce}:{ha2}")),
    }
}

/// Server side: whether `credentials` (an Authorization value) answer a challenge we
/// issued, for `method` and the given password. Checks the scheme, algorithm, qop/nc/
/// cnonce when qop is used, and the response hash; the caller checks the nonce is one it
/// issued and fresh, and that `username` and `realm` are the expected ones.
pub fn verify(credentials: &AuthValue, method: &Method, password: &str) -> bool {
    if !credentials.is_digest() {
        return false;
    }
    let Some(alg) = Algorithm::parse(credentials.param("algorithm").as_deref()) else {
        return false;
    };
    let (Some(username), Some(realm), Some(nonce), Some(uri), Some(response)) = (
        credentials.param("username"),
        credentials.param("realm"),
        credentials.param("nonce"),
        credentials.param("uri"),
        credentials.param("response"),
    ) else {
        return false;
    };
    let qop = credentials.param("qop");
    let nc = credentials.param("nc");
    let cnonce = credentials.param("cnonce");
    let qop_parts = match (&qop, &nc, &cnonce) {
        (Some(q), Some(n), Some(c)) if q == "auth" => Some((n.as_str(), c.as_str(), "auth")),
        (None, _, _) => None,
        _ => return false,
    };
    let expected = response_hash(
        alg,
        &username,
        &realm,
        password,
        method.as_str(),
        &uri,
        &nonce,
        qop_parts,
    );
    expected.eq_ignore_ascii_case(&response)
}

/// Client digest state for one peer: the challenge in force and the nonce count.
#[derive(Debug, Clone)]
pub struct DigestSession {
    credentials: DigestCredentials,
    challenge: Option<AuthValue>,
    nonce_count: u32,
    /// Credentials were sent for the current challenge and not yet seen accepted.
    answered: bool,
}

impl DigestSession {
    /// A session with no challenge yet.
    pub fn new(credentials: DigestCredentials) -> Self {
        DigestSession {
            credentials,
            challenge: None,
            nonce_count: 0,
            answered: false,
        }
    }

    /// Takes in a challenge from a 401/407. Errors when it cannot be answered: unknown
    /// scheme or algorithm, wrong realm, or the same credentials were already refused
    /// (a new challenge without `stale=true` after we answered one).
    pub fn challenge(&mut self, challenge: &AuthValue) -> Result<(), SipError> {
        if !challenge.is_digest() {
            return Err(SipError::AuthenticationFailed(
                "challenge scheme is not Digest",
            ));
        }
        Algorithm::parse(challenge.param("algorithm").as_deref()).ok_or(
            SipError::AuthenticationFailed("unsupported digest algorithm"),
        )?;
        let realm = challenge
            .param("realm")
            .ok_or(SipError::AuthenticationFailed("challenge has no realm"))?;
        challenge
            .param("nonce")
            .ok_or(SipError::AuthenticationFailed("challenge has no nonce"))?;
        if self.credentials.realm.as_ref().is_some_and(|r| *r != realm) {
            return Err(SipError::AuthenticationFailed(
                "no credentials for this realm",
            ));
        }
        let stale = challenge
            .param("stale")
            .is_some_and(|s| s.eq_ignore_ascii_case("true"));
        if self.answered && !stale {
            return Err(SipError::AuthenticationFailed("credentials were refused"));
        }
        self.answered = false;
        self.challenge = Some(challenge.clone());
        self.nonce_count = 0;
        Ok(())
    }

    /// Whether a challenge is held (requests can carry credentials).
    pub fn is_ready(&self) -> bool {
        self.challenge.is_some()
    }

    /// Call when a request carrying credentials succeeded, so a later challenge (the
    /// server expiring its nonce) is answered again rather than taken as a refusal.
    pub fn accepted(&mut self) {
        self.answered = false;
    }

    /// The Authorization value for a request, reusing the nonce with the next nonce count.
    pub fn authorize(
        &mut self,
        method: &Method,
        uri: &str,
        cnonce: &str,
    ) -> Result<AuthValue, SipError> {
        let ch = self
            .challenge
            .as_ref()
            .ok_or(SipError::AuthenticationFailed("no challenge to answer"))?;
        let alg = Algorithm::parse(ch.param("algorithm").as_deref()).ok_or(
            SipError::AuthenticationFailed("unsupported digest algorithm"),
        )?;
        let realm = ch.param("realm").unwrap_or_default();
        let nonce = ch.param("nonce").unwrap_or_default();
        let qop_auth = ch
            .param("qop")
            .is_some_and(|q| q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth")));
        self.nonce_count += 1;
        self.answered = true;
        let nc = format!("{:08x}", self.nonce_count);
        let c = &self.credentials;
        let response = response_hash(
            alg,
            &c.username,
            &realm,
            &c.password,
            method.as_str(),
            uri,
            &nonce,
            qop_auth.then_some((nc.as_str(), cnonce, "auth")),
        );
        let q = |s: &str| {
            let mut out = String::new();
            crate::cursor::write_quoted(&mut out, s);
            out
        };
        let mut params = vec![
            Param::new("username", Some(&q(&c.username))),
            Param::new("realm", Some(&q(&realm))),
            Param::new("nonce", Some(&q(&nonce))),
            Param::new("uri", Some(&q(uri))),
            Param::new("response", Some(&q(&response))),
            Param::new("algorithm", Some(alg.name())),
        ];
        if qop_auth {
            params.push(Param::new("qop", Some("auth")));
            params.push(Param::new("nc", Some(&nc)));
            params.push(Param::new("cnonce", Some(&q(cnonce))));
        }
        if let Some(opaque) = ch.param("opaque") {
            params.push(Param::new("opaque", Some(&q(&opaque))));
        }
        Ok(AuthValue {
            scheme: "Digest".into(),
            params,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenge(text: &str) -> AuthValue {
        AuthValue::parse(text).unwrap()
    }

    #[test]
    fn md5_with_qop_auth_matches_rfc_2617() {
        let r = response_hash(
            Algorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            Some(("00000001", "0a4f113b", "auth")),
        );
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn sha256_with_qop_auth_matches_rfc_7616() {
        let r = response_hash(
            Algorithm::Sha256,
            "Mufasa",
            "http-auth@example.org",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            Some((
                "00000001",
                "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
                "auth",
            )),
        );
        assert_eq!(
            r,
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    fn session() -> DigestSession {
        DigestSession::new(DigestCredentials {
            username: "alice".into(),
            password: "secret".into(),
            realm: None,
        })
    }

    #[test]
    fn the_nonce_is_reused_with_an_increasing_count() {
        let mut s = session();
        s.challenge(&challenge(
            r#"Digest realm="carrier", nonce="n1", qop="auth,auth-int", algorithm=SHA-256, opaque="o""#,
        ))
        .unwrap();
        let a1 = s.authorize(&Method::Invite, "sip:1@c", "c1").unwrap();
        let a2 = s.authorize(&Method::Bye, "sip:1@c", "c2").unwrap();
        assert_eq!(a1.param("nc").as_deref(), Some("00000001"));
        assert_eq!(a2.param("nc").as_deref(), Some("00000002"));
        assert_eq!(a1.param("algorithm").as_deref(), Some("SHA-256"));
        assert_eq!(a1.param("opaque").as_deref(), Some("o"));
        // The value serializes into a header that parses back.
        let again = AuthValue::parse(&a1.to_string()).unwrap();
        assert_eq!(again, a1);
    }

    #[test]
    fn a_second_challenge_means_refused_unless_stale() {
        let mut s = session();
        s.challenge(&challenge(r#"Digest realm="r", nonce="n1""#))
            .unwrap();
        s.authorize(&Method::Register, "sip:r", "c").unwrap();
        // The nonce expired: stale=true is answered again with the new nonce.
        s.challenge(&challenge(r#"Digest realm="r", nonce="n2", stale=true"#))
            .unwrap();
        let a = s.authorize(&Method::Register, "sip:r", "c").unwrap();
        assert_eq!(a.param("nonce").as_deref(), Some("n2"));
        // A fresh challenge (not stale) right after our answer: the password is wrong.
        assert_eq!(
            s.challenge(&challenge(r#"Digest realm="r", nonce="n3""#)),
            Err(SipError::AuthenticationFailed("credentials were refused"))
        );
        // Once an answer was accepted, a later challenge is answered again.
        s.accepted();
        s.challenge(&challenge(r#"Digest realm="r", nonce="n4""#))
            .unwrap();
    }

    #[test]
    fn the_server_side_accepts_a_correct_answer_and_nothing_else() {
        let mut s = session();
        s.challenge(&challenge(
            r#"Digest realm="r", nonce="n", qop="auth", algorithm=SHA-256"#,
        ))
        .unwrap();
        let a = s.authorize(&Method::Register, "sip:r", "cn").unwrap();
        assert!(verify(&a, &Method::Register, "secret"));
        assert!(!verify(&a, &Method::Register, "wrong"));
        assert!(
            !verify(&a, &Method::Invite, "secret"),
            "the method is covered"
        );
    }

    #[test]
    fn unknown_algorithms_and_schemes_are_refused() {
        let mut s = session();
        assert!(s
            .challenge(&challenge(
                r#"Digest realm="r", nonce="n", algorithm=SHA-512-256"#
            ))
            .is_err());
        assert!(s.challenge(&challenge(r#"Basic realm="r""#)).is_err());
    }
}
