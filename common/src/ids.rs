//! Typed identifiers. Each id is its own type so that a `CampaignId` can never be passed where
//! a `ContactId` is expected.
//!
//! - Ids the coordinator's database assigns are `u64` newtypes.
//! - Ids the appliance mints offline (calls, attempts) are UUIDv7, sortable by creation time.
//! - Names chosen by people and used inside MQTT topics or config keys (appliances, trunks)
//!   are validated strings: lowercase ASCII letters, digits and `-`, 1 to 63 characters, so
//!   they can never smuggle a `/`, `+` or `#` into a topic.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Why a textual id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The id was empty.
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    /// Longer than 63 characters.
    #[error("{kind} `{value}` is longer than 63 characters")]
    TooLong { kind: &'static str, value: String },
    /// A character outside `a-z`, `0-9` and `-`, or a leading/trailing `-`.
    #[error("{kind} `{value}` may only hold a-z, 0-9 and inner `-`")]
    BadCharacter { kind: &'static str, value: String },
    /// Not a number, for numeric ids.
    #[error("{kind} `{value}` is not a whole number")]
    NotANumber { kind: &'static str, value: String },
    /// Not a UUID, for minted ids.
    #[error("{kind} `{value}` is not a UUID")]
    NotAUuid { kind: &'static str, value: String },
}

macro_rules! numeric_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                s.parse::<u64>().map($name).map_err(|_| IdError::NotANumber {
                    kind: $kind,
                    value: s.chars().take(64).collect(),
                })
            }
        }
    };
}

numeric_id!(
    /// A campaign, assigned by the coordinator.
    CampaignId, "campaign id"
);
numeric_id!(
    /// A contact (one person/number in a contact list), assigned by the coordinator.
    ContactId, "contact id"
);
numeric_id!(
    /// An agent, assigned by the coordinator and synced to the agent's branch appliance.
    AgentId, "agent id"
);
numeric_id!(
    /// An agent group (skill group), assigned by the coordinator.
    AgentGroupId, "agent group id"
);
numeric_id!(
    /// A contact lease: a batch of contacts held by one appliance until it expires.
    LeaseId, "lease id"
);
numeric_id!(
    /// A robot script, assigned by the coordinator.
    ScriptId, "script id"
);

macro_rules! minted_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub uuid::Uuid);

        impl $name {
            /// A new id ordered by its creation time (UUIDv7).
            pub fn new_v7() -> Self {
                $name(uuid::Uuid::now_v7())
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                uuid::Uuid::parse_str(s).map($name).map_err(|_| IdError::NotAUuid {
                    kind: $kind,
                    value: s.chars().take(64).collect(),
                })
            }
        }
    };
}

minted_id!(
    /// One call through the appliance (all its legs), minted on the appliance.
    CallId, "call id"
);
minted_id!(
    /// One dial attempt to a contact, minted on the appliance.
    AttemptId, "attempt id"
);

fn validate_name(kind: &'static str, s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if s.len() > 63 {
        return Err(IdError::TooLong {
            kind,
            value: s.chars().take(64).collect(),
        });
    }
    let ok_chars = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok_chars || s.starts_with('-') || s.ends_with('-') {
        return Err(IdError::BadCharacter {
            kind,
            value: s.to_string(),
        });
    }
    Ok(())
}

macro_rules! name_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps a name.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                validate_name($kind, &s)?;
                Ok($name(s))
            }
            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                $name::new(s)
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_id!(
    /// An appliance: the subject of its certificate, and the middle of its MQTT topics.
    ApplianceId, "appliance id"
);
name_id!(
    /// A carrier trunk, named in the appliance's config.
    TrunkId, "trunk id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appliance_id_refuses_topic_wildcards_and_separators() {
        for bad in [
            "",
            "a/b",
            "a+b",
            "a#",
            "Upper",
            "-lead",
            "trail-",
            &"x".repeat(64),
        ] {
            assert!(ApplianceId::new(bad).is_err(), "{bad:?} must be refused");
        }
        assert_eq!(ApplianceId::new("branch-42").unwrap().as_str(), "branch-42");
    }

    #[test]
    fn name_ids_validate_when_deserialized() {
        let bytes = postcard::to_stdvec(&"a/b".to_string()).unwrap();
        assert!(postcard::from_bytes::<ApplianceId>(&bytes).is_err());
        let bytes = postcard::to_stdvec(&"ok-1".to_string()).unwrap();
        assert_eq!(
            postcard::from_bytes::<ApplianceId>(&bytes)
                .unwrap()
                .as_str(),
            "ok-1"
        );
    }

    #[test]
    fn numeric_ids_parse_and_name_their_kind_on_error() {
        assert_eq!("17".parse::<CampaignId>().unwrap(), CampaignId(17));
        let err = "x7".parse::<ContactId>().unwrap_err().to_string();
        assert!(err.contains("contact id"), "{err}");
    }

    #[test]
    fn minted_ids_sort_by_creation() {
        let a = CallId::new_v7();
        let b = CallId::new_v7();
        assert!(a <= b);
        assert_eq!(a.to_string().parse::<CallId>().unwrap(), a);
    }
}
