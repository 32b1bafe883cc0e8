//! Caller-ID presentation per trunk: which number a call presents (the campaign's caller
//! ID, or the trunk's fixed number for carriers that accept only their own DDIs), in which
//! headers (From user, RFC 3325 P-Asserted-Identity, or both), under which domain, and how
//! a withheld number is expressed (RFC 3323 anonymous From + `Privacy: id`). Pure values:
//! the router asks [`Presentation::identity`] for each trunk it tries, so a call failing
//! over presents itself per the next trunk's settings. Owns no call state and never
//! builds messages (the user agent puts [`CallerIdentity`] into the INVITE).

use crate::agent::CallerIdentity;
use crate::error::SipError;
use crate::uri::{Host, SipUri, Uri};

/// The identity a campaign asks to present, checked before it can reach an INVITE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerId {
    /// A number: `+` and 1–15 digits (E.164), or 1–16 digits (national form).
    Number(String),
    /// The campaign withholds its number (written `anonymous`): the From is anonymous
    /// and the request carries `Privacy: id`.
    Withheld,
}

impl CallerId {
    /// Parses a campaign's caller ID. `anonymous` (any case) withholds the number; an
    /// empty value, spaces, letters, punctuation or too many digits are refused with the
    /// reason — nothing malformed is ever sent. (An empty caller ID is the caller's
    /// business: it means "no campaign number", never "withheld".)
    pub fn parse(value: &str) -> Result<CallerId, SipError> {
        let refuse = |reason| SipError::InvalidCallerId {
            value: value.to_owned(),
            reason,
        };
        if value.eq_ignore_ascii_case("anonymous") {
            return Ok(CallerId::Withheld);
        }
        if value.is_empty() {
            return Err(refuse("it is empty"));
        }
        let (plus, digits) = match value.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, value),
        };
        if digits.is_empty() {
            return Err(refuse("`+` must be followed by digits"));
        }
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(refuse(
                "only digits and one leading `+` are allowed (no spaces, letters or punctuation)",
            ));
        }
        if plus && digits.len() > 15 {
            return Err(refuse("an E.164 number has at most 15 digits after `+`"));
        }
        if digits.len() > 16 {
            return Err(refuse("a number has at most 16 digits"));
        }
        Ok(CallerId::Number(value.to_owned()))
    }

    /// The number, unless withheld.
    pub fn number(&self) -> Option<&str> {
        match self {
            CallerId::Number(n) => Some(n),
            CallerId::Withheld => None,
        }
    }
}

/// Where a trunk takes the caller ID from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CallerIdHeader {
    /// The From user part (carriers that do not trust us to assert identities).
    #[default]
    From,
    /// P-Asserted-Identity only; the From user stays our own (`[sip] user`, the account
    /// carriers that authenticate by From expect). For carriers that trust us (RFC 3325).
    Pai,
    /// Both the From user and P-Asserted-Identity.
    Both,
}

impl CallerIdHeader {
    /// Parses `from`, `pai` or `both`.
    pub fn parse(s: &str) -> Option<CallerIdHeader> {
        match s {
            "from" => Some(CallerIdHeader::From),
            "pai" => Some(CallerIdHeader::Pai),
            "both" => Some(CallerIdHeader::Both),
            _ => None,
        }
    }

    fn in_from(self) -> bool {
        matches!(self, CallerIdHeader::From | CallerIdHeader::Both)
    }

    fn in_pai(self) -> bool {
        matches!(self, CallerIdHeader::Pai | CallerIdHeader::Both)
    }
}

/// One trunk's caller-ID settings. The default presents the campaign's number in the From
/// user part, under our own address, without `user=phone`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presentation {
    /// Which headers carry the number.
    pub header: CallerIdHeader,
    /// A fixed number presented instead of the campaign's (a carrier that accepts only its
    /// own DDIs). A withheld campaign stays withheld; the fixed number is then only
    /// asserted (P-Asserted-Identity) when `header` includes it.
    pub fixed_number: Option<String>,
    /// The host part of From and P-Asserted-Identity; `None`: From carries our address
    /// and P-Asserted-Identity the trunk's domain.
    pub from_domain: Option<Host>,
    /// Mark numbers with `;user=phone` (RFC 3261 §19.1.1) for carriers that want it.
    pub user_phone: bool,
}

impl Presentation {
    /// What a call with `caller` presents on a trunk whose domain is `trunk_domain`.
    /// `caller` `None`: the campaign gave no number; the fixed number (if any) is used,
    /// else the From stays our own user — never anonymous.
    pub fn identity(&self, caller: Option<&CallerId>, trunk_domain: &str) -> CallerIdentity {
        let withheld = caller == Some(&CallerId::Withheld);
        let number = self
            .fixed_number
            .as_deref()
            .or_else(|| caller.and_then(CallerId::number));
        let pai_host = self
            .from_domain
            .clone()
            .or_else(|| Host::parse(trunk_domain).ok());
        let asserted = match (number, pai_host) {
            (Some(n), Some(host)) if self.header.in_pai() => Some(self.number_uri(n, host)),
            _ => None,
        };
        if withheld {
            return CallerIdentity {
                display_name: Some("Anonymous".into()),
                user: Some("anonymous".into()),
                host: Some(Host::Name("anonymous.invalid".into())),
                user_phone: false,
                asserted,
                privacy_id: true,
            };
        }
        CallerIdentity {
            display_name: None,
            user: number.filter(|_| self.header.in_from()).map(str::to_owned),
            host: self.from_domain.clone(),
            user_phone: self.user_phone && number.is_some() && self.header.in_from(),
            asserted,
            privacy_id: false,
        }
    }

    fn number_uri(&self, number: &str, host: Host) -> Uri {
        let mut uri = SipUri::new(Some(number), host, None);
        if self.user_phone {
            uri.params
                .push(crate::param::Param::new("user", Some("phone")));
        }
        Uri::Sip(uri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(value: &str) -> String {
        match CallerId::parse(value) {
            Err(e @ SipError::InvalidCallerId { .. }) => e.to_string(),
            other => panic!("{value:?} was not refused: {other:?}"),
        }
    }

    #[test]
    fn e164_national_and_anonymous_caller_ids_are_accepted() {
        assert_eq!(
            CallerId::parse("+442079460000").unwrap(),
            CallerId::Number("+442079460000".into())
        );
        assert_eq!(
            CallerId::parse("02079460000").unwrap(),
            CallerId::Number("02079460000".into())
        );
        assert_eq!(
            CallerId::parse("+123456789012345").unwrap().number(),
            Some("+123456789012345")
        );
        assert_eq!(CallerId::parse("Anonymous").unwrap(), CallerId::Withheld);
    }

    #[test]
    fn malformed_caller_ids_are_refused_naming_the_value_and_the_fault() {
        assert!(refused("+44 20 7946 0000").contains("no spaces, letters"));
        assert!(refused("+44 20 7946 0000").contains("`+44 20 7946 0000`"));
        assert!(refused("CALLGATE").contains("no spaces, letters"));
        assert!(refused("+4420;user=x").contains("no spaces, letters"));
        assert!(refused("+1234567890123456").contains("at most 15 digits"));
        assert!(refused("12345678901234567").contains("at most 16 digits"));
        assert!(refused("+").contains("followed by digits"));
        assert!(refused("").contains("empty"));
    }

    #[test]
    fn the_default_presents_the_campaign_number_as_the_from_user_only() {
        let caller = CallerId::parse("+442079460000").unwrap();
        let id = Presentation::default().identity(Some(&caller), "carrier.example");
        assert_eq!(id.user.as_deref(), Some("+442079460000"));
        assert_eq!(id.host, None);
        assert_eq!(id.asserted, None);
        assert!(!id.privacy_id && !id.user_phone);
    }

    #[test]
    fn pai_asserts_the_number_under_the_trunk_domain_and_leaves_the_from_user_ours() {
        let caller = CallerId::parse("+442079460000").unwrap();
        let p = Presentation {
            header: CallerIdHeader::Pai,
            user_phone: true,
            ..Presentation::default()
        };
        let id = p.identity(Some(&caller), "carrier.example");
        assert_eq!(id.user, None);
        assert!(!id.user_phone);
        assert_eq!(
            id.asserted.unwrap().to_string(),
            "sip:+442079460000@carrier.example;user=phone"
        );
    }

    #[test]
    fn both_with_a_from_domain_and_a_fixed_number_present_the_fixed_number_in_both() {
        let caller = CallerId::parse("+442079460000").unwrap();
        let p = Presentation {
            header: CallerIdHeader::Both,
            fixed_number: Some("+441134960000".into()),
            from_domain: Some(Host::Name("callgate.example".into())),
            user_phone: false,
        };
        let id = p.identity(Some(&caller), "carrier.example");
        assert_eq!(id.user.as_deref(), Some("+441134960000"));
        assert_eq!(id.host, Some(Host::Name("callgate.example".into())));
        assert_eq!(
            id.asserted.unwrap().to_string(),
            "sip:+441134960000@callgate.example"
        );
    }

    #[test]
    fn a_withheld_number_is_anonymous_with_privacy_id_and_asserted_only_when_configured() {
        let from_only = Presentation {
            fixed_number: Some("+441134960000".into()),
            ..Presentation::default()
        };
        let id = from_only.identity(Some(&CallerId::Withheld), "carrier.example");
        assert_eq!(id.user.as_deref(), Some("anonymous"));
        assert_eq!(id.host, Some(Host::Name("anonymous.invalid".into())));
        assert_eq!(id.display_name.as_deref(), Some("Anonymous"));
        assert!(id.privacy_id);
        assert_eq!(id.asserted, None);
        let pai = Presentation {
            header: CallerIdHeader::Both,
            ..from_only
        };
        let id = pai.identity(Some(&CallerId::Withheld), "10.0.0.1");
        assert!(id.privacy_id);
        assert_eq!(
            id.asserted.unwrap().to_string(),
            "sip:+441134960000@10.0.0.1"
        );
    }

    #[test]
    fn no_campaign_number_is_never_anonymous() {
        let id = Presentation::default().identity(None, "carrier.example");
        assert_eq!(id.user, None);
        assert!(!id.privacy_id);
        assert_eq!(id.display_name, None);
        let fixed = Presentation {
            fixed_number: Some("+441134960000".into()),
            ..Presentation::default()
        };
        assert_eq!(
            fixed.identity(None, "carrier.example").user.as_deref(),
            Some("+441134960000")
        );
    }
}
