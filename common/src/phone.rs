//! Validated E.164 phone numbers.
//!
//! A [`PhoneNumber`] is a country calling code plus a national significant number, checked
//! against the ITU numbering plan's structure. Parsing accepts the forms people type
//! (`+44 20 7946 0958`, `(415) 555-0134` with a default region, `0044...`, `011...` from a
//! NANP region) and refuses anything else with a [`PhoneError`] that says what was wrong.
//!
//! Privacy: `Debug` and `Display` print the **masked** form (`+86 138****1234`). The full
//! number is only available through [`PhoneNumber::e164`], so it cannot reach a log line by
//! accident through `{}` or `{:?}`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Why a phone number was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PhoneError {
    /// Nothing but separators.
    #[error("phone number is empty")]
    Empty,
    /// A character that is neither a digit nor a separator (` `, `-`, `.`, `(`, `)`, `/`).
    #[error("phone number has an unexpected character {0:?}")]
    BadCharacter(char),
    /// A `+` anywhere but at the start.
    #[error("phone number has a `+` that is not at the start")]
    MisplacedPlus,
    /// A national-format number without a default region to interpret it.
    #[error("phone number has no country code and no default region was given")]
    NoCountry,
    /// The default region is not one this build knows.
    #[error("unknown region `{0}`")]
    UnknownRegion(String),
    /// Country code 0, or one the ITU has not assigned as a prefix.
    #[error("phone number starts with an invalid country code")]
    BadCountryCode,
    /// Too few digits after the country code.
    #[error("phone number is too short ({digits} digits after country code {cc})")]
    TooShort { cc: u16, digits: usize },
    /// More than 15 digits in all (E.164's limit).
    #[error("phone number is too long ({digits} digits; E.164 allows 15)")]
    TooLong { digits: usize },
    /// Fails the region's own plan (e.g. a NANP area code starting with 0 or 1).
    #[error("phone number does not fit the numbering plan of +{cc}: {reason}")]
    NotInPlan { cc: u16, reason: &'static str },
}

/// A region's dialling facts: ISO 3166 alpha-2, calling code, national trunk prefix.
struct Region {
    iso: &'static str,
    cc: u16,
    trunk_prefix: &'static str,
}

/// Regions usable as a default country for national-format numbers. A number written with
/// its country code parses whatever its region, as long as the code is a valid ITU prefix.
const REGIONS: &[Region] = &[
    Region {
        iso: "US",
        cc: 1,
        trunk_prefix: "1",
    },
    Region {
        iso: "CA",
        cc: 1,
        trunk_prefix: "1",
    },
    Region {
        iso: "GB",
        cc: 44,
        trunk_prefix: "0",
    },
    Region {
        iso: "IE",
        cc: 353,
        trunk_prefix: "0",
    },
    Region {
        iso: "FR",
        cc: 33,
        trunk_prefix: "0",
    },
    Region {
        iso: "DE",
        cc: 49,
        trunk_prefix: "0",
    },
    Region {
        iso: "NL",
        cc: 31,
        trunk_prefix: "0",
    },
    Region {
        iso: "BE",
        cc: 32,
        trunk_prefix: "0",
    },
    Region {
        iso: "ES",
        cc: 34,
        trunk_prefix: "",
    },
    Region {
        iso: "IT",
        cc: 39,
        trunk_prefix: "",
    },
    Region {
        iso: "PT",
        cc: 351,
        trunk_prefix: "",
    },
    Region {
        iso: "CH",
        cc: 41,
        trunk_prefix: "0",
    },
    Region {
        iso: "AT",
        cc: 43,
        trunk_prefix: "0",
    },
    Region {
        iso: "SE",
        cc: 46,
        trunk_prefix: "0",
    },
    Region {
        iso: "NO",
        cc: 47,
        trunk_prefix: "",
    },
    Region {
        iso: "DK",
        cc: 45,
        trunk_prefix: "",
    },
    Region {
        iso: "FI",
        cc: 358,
        trunk_prefix: "0",
    },
    Region {
        iso: "PL",
        cc: 48,
        trunk_prefix: "",
    },
    Region {
        iso: "CN",
        cc: 86,
        trunk_prefix: "0",
    },
    Region {
        iso: "HK",
        cc: 852,
        trunk_prefix: "",
    },
    Region {
        iso: "TW",
        cc: 886,
        trunk_prefix: "0",
    },
    Region {
        iso: "JP",
        cc: 81,
        trunk_prefix: "0",
    },
    Region {
        iso: "KR",
        cc: 82,
        trunk_prefix: "0",
    },
    Region {
        iso: "SG",
        cc: 65,
        trunk_prefix: "",
    },
    Region {
        iso: "MY",
        cc: 60,
        trunk_prefix: "0",
    },
    Region {
        iso: "TH",
        cc: 66,
        trunk_prefix: "0",
    },
    Region {
        iso: "VN",
        cc: 84,
        trunk_prefix: "0",
    },
    Region {
        iso: "PH",
        cc: 63,
        trunk_prefix: "0",
    },
    Region {
        iso: "ID",
        cc: 62,
        trunk_prefix: "0",
    },
    Region {
        iso: "IN",
        cc: 91,
        trunk_prefix: "0",
    },
    Region {
        iso: "AU",
        cc: 61,
        trunk_prefix: "0",
    },
    Region {
        iso: "NZ",
        cc: 64,
        trunk_prefix: "0",
    },
    Region {
        iso: "BR",
        cc: 55,
        trunk_prefix: "0",
    },
    Region {
        iso: "MX",
        cc: 52,
        trunk_prefix: "",
    },
    Region {
        iso: "AR",
        cc: 54,
        trunk_prefix: "0",
    },
    Region {
        iso: "ZA",
        cc: 27,
        trunk_prefix: "0",
    },
    Region {
        iso: "AE",
        cc: 971,
        trunk_prefix: "0",
    },
    Region {
        iso: "RU",
        cc: 7,
        trunk_prefix: "8",
    },
    Region {
        iso: "TR",
        cc: 90,
        trunk_prefix: "0",
    },
];

/// The two-digit country codes of the ITU plan. `1` and `7` are the only one-digit codes;
/// every other assigned code has three digits. Codes are prefix-free, so this decides how
/// many leading digits of an international number are its country code.
const TWO_DIGIT_CODES: &[u16] = &[
    20, 27, 30, 31, 32, 33, 34, 36, 39, 40, 41, 43, 44, 45, 46, 47, 48, 49, 51, 52, 53, 54, 55, 56,
    57, 58, 60, 61, 62, 63, 64, 65, 66, 81, 82, 84, 86, 90, 91, 92, 93, 94, 95, 98,
];

/// A valid international number. See the module doc for its privacy rules.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhoneNumber {
    cc: u16,
    /// National significant number: digits only, no trunk prefix.
    nsn: String,
}

impl PhoneNumber {
    /// Parses `input`, reading a national-format number as belonging to `default_region`
    /// (ISO 3166 alpha-2, e.g. `"US"`, `"CN"`).
    pub fn parse(input: &str, default_region: Option<&str>) -> Result<Self, PhoneError> {
        let mut digits = String::with_capacity(input.len());
        let mut plus = false;
        for (i, ch) in input.trim().char_indices() {
            match ch {
                '0'..='9' => digits.push(ch),
                '+' if i == 0 => plus = true,
                '+' => return Err(PhoneError::MisplacedPlus),
                ' ' | '-' | '.' | '(' | ')' | '/' | '\u{a0}' => {}
                other => return Err(PhoneError::BadCharacter(other)),
            }
            if digits.len() > 32 {
                return Err(PhoneError::TooLong {
                    digits: digits.len(),
                });
            }
        }
        if digits.is_empty() {
            return Err(PhoneError::Empty);
        }
        let region = match default_region {
            Some(iso) => Some(
                REGIONS
                    .iter()
                    .find(|r| r.iso.eq_ignore_ascii_case(iso))
                    .ok_or_else(|| PhoneError::UnknownRegion(iso.chars().take(8).collect()))?,
            ),
            None => None,
        };
        let international = if plus {
            Some(digits.as_str())
        } else if let Some(rest) = digits.strip_prefix("00") {
            Some(rest)
        } else if let (Some(rest), Some(1)) = (digits.strip_prefix("011"), region.map(|r| r.cc)) {
            Some(rest)
        } else {
            None
        };
        match international {
            Some(intl) => Self::from_international_digits(intl),
            None => {
                let region = region.ok_or(PhoneError::NoCountry)?;
                let nsn = if region.trunk_prefix.is_empty() {
                    digits.as_str()
                } else {
                    // The trunk prefix is optional for NANP ("1 415 ..." and "415 ...").
                    match digits.strip_prefix(region.trunk_prefix) {
                        Some(rest) if region.cc != 1 || digits.len() == 11 => rest,
                        _ => digits.as_str(),
                    }
                };
                Self::checked(region.cc, nsn)
            }
        }
    }

    fn from_international_digits(d: &str) -> Result<Self, PhoneError> {
        let first = d.as_bytes().first().copied().ok_or(PhoneError::Empty)?;
        let cc_len = match first {
            b'0' => return Err(PhoneError::BadCountryCode),
            b'1' | b'7' => 1,
            _ => {
                let two: u16 = d.get(..2).and_then(|s| s.parse().ok()).unwrap_or(0);
                if TWO_DIGIT_CODES.contains(&two) {
                    2
                } else {
                    3
                }
            }
        };
        if d.len() <= cc_len {
            return Err(PhoneError::TooShort { cc: 0, digits: 0 });
        }
        let cc: u16 = d[..cc_len]
            .parse()
            .map_err(|_| PhoneError::BadCountryCode)?;
        Self::checked(cc, &d[cc_len..])
    }

    fn checked(cc: u16, nsn: &str) -> Result<Self, PhoneError> {
        let cc_digits = cc.to_string().len();
        let total = cc_digits + nsn.len();
        if total > 15 {
            return Err(PhoneError::TooLong { digits: total });
        }
        if nsn.len() < 4 {
            return Err(PhoneError::TooShort {
                cc,
                digits: nsn.len(),
            });
        }
        if cc == 1 {
            let b = nsn.as_bytes();
            if nsn.len() != 10 {
                return Err(PhoneError::NotInPlan {
                    cc,
                    reason: "NANP numbers have 10 digits",
                });
            }
            if b[0] < b'2' || b[3] < b'2' {
                return Err(PhoneError::NotInPlan {
                    cc,
                    reason: "NANP area and exchange codes start with 2-9",
                });
            }
        }
        Ok(PhoneNumber {
            cc,
            nsn: nsn.to_string(),
        })
    }

    /// The full number in E.164 form (`+8613812341234`). Use only where the full number is
    /// needed (dialling, storage); never in logs.
    pub fn e164(&self) -> String {
        format!("+{}{}", self.cc, self.nsn)
    }

    /// The country calling code (`86` for China, `1` for NANP).
    pub fn country_code(&self) -> u16 {
        self.cc
    }

    /// The national significant number's digits.
    pub fn national_digits(&self) -> &str {
        &self.nsn
    }

    /// The masked form for display: `+86 138****1234`. Short numbers keep fewer digits.
    pub fn masked(&self) -> String {
        let n = self.nsn.len();
        let (head, tail) = if n >= 8 { (3, 4) } else { (1, 2) };
        format!(
            "+{} {}{}{}",
            self.cc,
            &self.nsn[..head],
            "*".repeat(n - head - tail),
            &self.nsn[n - tail..]
        )
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", self.masked())
    }
}

impl FromStr for PhoneNumber {
    type Err = PhoneError;
    /// Parses a number written with its country code (`+...` or `00...`).
    fn from_str(s: &str) -> Result<Self, PhoneError> {
        PhoneNumber::parse(s, None)
    }
}

impl Serialize for PhoneNumber {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.e164())
    }
}

impl<'de> Deserialize<'de> for PhoneNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PhoneNumber::parse(&s, None).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_international_and_national_forms_to_the_same_number() {
        let a = PhoneNumber::parse("+86 138 1234 1234", None).unwrap();
        let b = PhoneNumber::parse("0086-13812341234", None).unwrap();
        let c = PhoneNumber::parse("13812341234", Some("CN")).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.e164(), "+8613812341234");
        assert_eq!(a.country_code(), 86);
    }

    #[test]
    fn strips_national_trunk_prefixes() {
        let uk = PhoneNumber::parse("020 7946 0958", Some("gb")).unwrap();
        assert_eq!(uk.e164(), "+442079460958");
        let us = PhoneNumber::parse("1 (415) 555-0134", Some("US")).unwrap();
        assert_eq!(us.e164(), "+14155550134");
        let us2 = PhoneNumber::parse("(415) 555-0134", Some("US")).unwrap();
        assert_eq!(us, us2);
        let from_us = PhoneNumber::parse("011 44 20 7946 0958", Some("US")).unwrap();
        assert_eq!(from_us, uk);
    }

    #[test]
    fn country_code_length_follows_the_itu_plan() {
        assert_eq!(
            "+74951234567"
                .parse::<PhoneNumber>()
                .unwrap()
                .country_code(),
            7
        );
        assert_eq!(
            "+4930123456".parse::<PhoneNumber>().unwrap().country_code(),
            49
        );
        assert_eq!(
            "+353861234567"
                .parse::<PhoneNumber>()
                .unwrap()
                .country_code(),
            353
        );
    }

    #[test]
    fn masks_in_display_and_debug_and_never_shows_the_full_number() {
        let n = PhoneNumber::parse("+8613812341234", None).unwrap();
        assert_eq!(n.to_string(), "+86 138****1234");
        let dbg = format!("{n:?}");
        assert!(!dbg.contains("13812341234"), "{dbg}");
        assert!(dbg.contains("138****1234"), "{dbg}");
    }

    #[test]
    fn refuses_bad_input_with_a_reason() {
        assert_eq!(PhoneNumber::parse("", None), Err(PhoneError::Empty));
        assert_eq!(PhoneNumber::parse(" - ", None), Err(PhoneError::Empty));
        assert_eq!(
            PhoneNumber::parse("+1 800 FLOWERS", None),
            Err(PhoneError::BadCharacter('F'))
        );
        assert_eq!(
            PhoneNumber::parse("12+34", None),
            Err(PhoneError::MisplacedPlus)
        );
        assert_eq!(
            PhoneNumber::parse("4155550134", None),
            Err(PhoneError::NoCountry)
        );
        assert!(matches!(
            PhoneNumber::parse("4155550134", Some("XX")),
            Err(PhoneError::UnknownRegion(_))
        ));
        assert_eq!(
            PhoneNumber::parse("+0123456", None),
            Err(PhoneError::BadCountryCode)
        );
        assert!(matches!(
            PhoneNumber::parse("+1234567890123456", None),
            Err(PhoneError::TooLong { .. })
        ));
        assert!(matches!(
            PhoneNumber::parse("+44123", None),
            Err(PhoneError::TooShort { .. })
        ));
        assert!(matches!(
            PhoneNumber::parse("+1 015 555 0134", None),
            Err(PhoneError::NotInPlan { cc: 1, .. })
        ));
    }

    #[test]
    fn serde_carries_the_full_number_and_revalidates() {
        let n = PhoneNumber::parse("+442079460958", None).unwrap();
        let bytes = postcard::to_stdvec(&n).unwrap();
        assert_eq!(postcard::from_bytes::<PhoneNumber>(&bytes).unwrap(), n);
        let bad = postcard::to_stdvec(&"+0".to_string()).unwrap();
        assert!(postcard::from_bytes::<PhoneNumber>(&bad).is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,40}", region in proptest::option::of("[A-Z]{2}")) {
            let _ = PhoneNumber::parse(&s, region.as_deref());
        }

        #[test]
        fn e164_round_trips(cc in prop_oneof![Just("44"), Just("86"), Just("49"), Just("353")],
                            nsn in "[1-9][0-9]{7,9}") {
            let n = PhoneNumber::parse(&format!("+{cc}{nsn}"), None).unwrap();
            prop_assert_eq!(PhoneNumber::parse(&n.e164(), None).unwrap(), n.clone());
            prop_assert!(!n.to_string().contains(&nsn));
        }
    }
}
