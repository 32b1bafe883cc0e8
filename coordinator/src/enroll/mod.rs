//! # enroll — the organisation CA and appliance identities (issue 5)
//!
//! Owns: the organisation CA ([`pki`], files under `{data_dir}/pki/`), signing appliances'
//! CSRs (their keys are generated on the boxes and never seen here), the `appliances`
//! table's identity columns and revocation ([`registry`]).
//!
//! Must not: generate or store an appliance's private key, or issue a certificate whose
//! subject is not the registered appliance name.

pub mod http;
pub mod pki;
pub mod registry;

use std::path::PathBuf;

/// Why an enrollment or certificate operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnrollError {
    /// A CA or key file could not be read or written.
    #[error("PKI file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    /// rcgen refused (bad CSR, bad key, signing failure).
    #[error("certificate: {0}")]
    Certificate(String),
    /// The CSR asks for a subject other than the appliance it is for.
    #[error("the CSR's subject `{got}` is not the appliance `{expected}`")]
    WrongSubject { expected: String, got: String },
    /// No such appliance is registered.
    #[error("no appliance `{0}` is registered")]
    UnknownAppliance(String),
    /// The appliance is already enrolled; revoke it first to enroll a replacement box.
    #[error("appliance `{0}` is already enrolled")]
    AlreadyEnrolled(String),
    /// The appliance was revoked.
    #[error("appliance `{0}` is revoked")]
    Revoked(String),
    /// No claim code matches (mistyped, or never issued).
    #[error("the claim code is not valid")]
    ClaimUnknown,
    /// The claim code was already used once.
    #[error("the claim code was already used")]
    ClaimUsed,
    /// The claim code is over 24 hours old.
    #[error("the claim code has expired; ask HQ for a new one")]
    ClaimExpired,
    /// The appliance name is not a valid id.
    #[error(transparent)]
    BadName(#[from] callgate_common::ids::IdError),
    /// The database refused.
    #[error("enrollment store: {0}")]
    Store(#[from] sqlx::Error),
}
