//! The trunk and phone editor (`/trunks`): each trunk and each desk phone is edited in its
//! own form, checked field by field (an error names the field and is shown beside it), then
//! the whole `[sip]` section as it would become is validated the way the daemon validates
//! its config. Only then is it written — as a config overlay, `<data_dir>/sip-overlay.toml`
//! ([`OVERLAY_FILE`]), which replaces the config file's `[[sip.trunks]]` and
//! `[[sip.phones]]` lists at every start ([`apply_overlay`]) — and handed to the running
//! engine ([`SipControls`]): the trunks to the trunk router
//! ([`crate::sip::udp::TrunkControl::replace_trunks`], which keeps calls in progress), their
//! limits to the dialer's pacer, their addresses to the agents' SIP side as its inbound
//! allowed sources, and the phones to its registrar
//! ([`crate::sip::udp::AgentSipControl::replace_accounts`]: a new phone can register at
//! once, a removed one is refused). Every change is logged with the user and what changed
//! (passwords never).
//!
//! A trunk is reached at its `address` (IP:port) or its `host` (a name or IP with an
//! optional `:port`, resolved when the form is saved as the daemon resolves it at load),
//! over its `transport` (udp, tcp or tls; TLS checks the carrier against `[sip.tls]`'s
//! roots, so a box without usable ones refuses it on the transport field). What the form
//! does not show (the TLS server name, carrier registration, caller-ID presentation) is
//! kept as stored.
//!
//! Must not: write the config file itself, touch calls in progress, or log secrets.

use super::pages::{render, require_form_session, require_session, Guarded, PageFrame};
use super::WebState;
use crate::sip::config::{PhoneConfig, SipConfig, SipConfigError, SipSettings, TrunkConfig};
use crate::sip::udp::{AgentSipControl, TrunkControl};
use askama::Template;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The overlay's file name in the data directory.
pub const OVERLAY_FILE: &str = "sip-overlay.toml";

/// What the UI changed in `[sip]`: these lists replace the config file's.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipOverlay {
    /// Replaces `[[sip.trunks]]`.
    #[serde(default)]
    pub trunks: Vec<TrunkConfig>,
    /// Replaces `[[sip.phones]]`.
    #[serde(default)]
    pub phones: Vec<PhoneConfig>,
}

/// Why the overlay could not be read, used or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OverlayError {
    /// The file exists but could not be read.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file does not parse or has unknown keys.
    #[error("{path}: {reason}")]
    Syntax { path: PathBuf, reason: String },
    /// The `[sip]` section with the overlay applied does not validate; names the key.
    #[error("{path}: {source}")]
    Invalid {
        path: PathBuf,
        #[source]
        source: SipConfigError,
    },
    /// There is no `[sip]` section to apply it to.
    #[error("{path}: the config has no [sip] section to apply it to")]
    NoSip { path: PathBuf },
    /// Writing the new overlay failed; the old one stays.
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl SipOverlay {
    /// Where the overlay lives.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(OVERLAY_FILE)
    }

    /// The overlay in `data_dir`, if one was written.
    pub fn load(data_dir: &Path) -> Result<Option<SipOverlay>, OverlayError> {
        let path = Self::path(data_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(OverlayError::Read { path, source }),
        };
        toml::from_str(&text)
            .map(Some)
            .map_err(|e| OverlayError::Syntax {
                path,
                reason: e.to_string(),
            })
    }

    /// `sip` with the overlay's lists in place of its own.
    pub fn apply_to(&self, sip: &SipConfig) -> SipConfig {
        SipConfig {
            trunks: self.trunks.clone(),
            phones: self.phones.clone(),
            ..sip.clone()
        }
    }

    /// Writes the overlay atomically (temp file, fsync, rename), readable by the owner only:
    /// it holds the trunks' and phones' passwords.
    pub fn write(&self, data_dir: &Path) -> Result<(), OverlayError> {
        let path = Self::path(data_dir);
        let tmp = data_dir.join(format!("{OVERLAY_FILE}.tmp"));
        let err = |source| OverlayError::Write {
            path: path.clone(),
            source,
        };
        let text = toml::to_string(self)
            .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut file = opts.open(&tmp).map_err(err)?;
        file.write_all(
            b"# Written by the local web UI (trunks and phones page). These lists replace\n\
              # [[sip.trunks]] and [[sip.phones]] of the config file at every start.\n",
        )
        .map_err(err)?;
        file.write_all(text.as_bytes()).map_err(err)?;
        file.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)?;
        if let Ok(dir) = std::fs::File::open(data_dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

/// Applies the overlay in the data directory to a loaded config (the daemon calls this at
/// start). An overlay that cannot be read or no longer validates against the config file is
/// refused with the reason logged, and the config file's lists stay in force.
pub fn apply_overlay(config: &mut crate::config::ValidConfig) {
    match overlaid(config) {
        Ok(None) => {}
        Ok(Some((raw, settings))) => {
            tracing::info!(
                path = %SipOverlay::path(&config.raw.appliance.data_dir).display(),
                trunks = raw.trunks.len(),
                phones = raw.phones.len(),
                "trunks and phones from the web UI's overlay in force"
            );
            config.raw.sip = Some(raw);
            config.sip = Some(settings);
        }
        Err(e) => tracing::error!(
            error = %e,
            "the web UI's SIP overlay is refused; the config file's trunks and phones stay"
        ),
    }
}

fn overlaid(
    config: &crate::config::ValidConfig,
) -> Result<Option<(SipConfig, SipSettings)>, OverlayError> {
    let data_dir = &config.raw.appliance.data_dir;
    let Some(overlay) = SipOverlay::load(data_dir)? else {
        return Ok(None);
    };
    let path = SipOverlay::path(data_dir);
    let Some(sip) = &config.raw.sip else {
        return Err(OverlayError::NoSip { path });
    };
    let raw = overlay.apply_to(sip);
    let settings = raw
        .validate()
        .map_err(|source| OverlayError::Invalid { path, source })?;
    Ok(Some((raw, settings)))
}

/// The running engine's parts an edit is handed to; each is `None` when that part does not
/// run on this box.
#[derive(Debug, Clone, Default)]
pub struct SipControls {
    /// The trunk router: calls out go by the new trunks.
    pub trunks: Option<TrunkControl>,
    /// The agents' SIP side: its registrar (phones) and inbound gate (trunk addresses).
    pub agents: Option<AgentSipControl>,
    /// The dialer: its pacer plans with the trunks' new limits.
    pub dialer: Option<crate::dialer::driver::DialerControl>,
}

/// The editor's state: the `[sip]` section in force, its engine settings, and the running
/// engine to hand changes to.
pub struct SipEditor {
    data_dir: PathBuf,
    current: tokio::sync::Mutex<SipConfig>,
    settings: std::sync::RwLock<SipSettings>,
    control: SipControls,
}

impl SipEditor {
    /// An editor over `sip` (the section in force, overlay applied).
    pub fn new(
        data_dir: &Path,
        sip: SipConfig,
        control: SipControls,
    ) -> Result<SipEditor, SipConfigError> {
        let settings = sip.validate()?;
        Ok(SipEditor {
            data_dir: data_dir.to_path_buf(),
            current: tokio::sync::Mutex::new(sip),
            settings: std::sync::RwLock::new(settings),
            control,
        })
    }

    /// The engine settings in force now.
    pub fn settings(&self) -> SipSettings {
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Errors found in one trunk or phone form, by field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors {
    /// `(field, message)`, in form order.
    pub fields: Vec<(&'static str, String)>,
    /// A problem that is not one field's (e.g. a route still names a removed trunk).
    pub general: Option<String>,
}

impl FieldErrors {
    fn add(&mut self, field: &'static str, message: impl Into<String>) {
        self.fields.push((field, message.into()));
    }
    fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.general.is_none()
    }
    fn of(&self, field: &str) -> Option<String> {
        self.fields
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, m)| m.clone())
    }
    /// One line for the page's banner: every message.
    fn summary(&self) -> String {
        let mut parts: Vec<String> = self.fields.iter().map(|(_, m)| m.clone()).collect();
        parts.extend(self.general.clone());
        format!("Nothing was changed. {}", parts.join(" "))
    }
}

/// The trunk form (every value as typed).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TrunkForm {
    #[serde(default)]
    csrf: String,
    /// The trunk's name before the edit; empty for a new trunk.
    #[serde(default)]
    pub original: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub address: String,
    /// The carrier's host name (or IP) with an optional `:port`, instead of `address`.
    /// Absent from the post (an older page): the stored host stays.
    #[serde(default)]
    pub host: Option<String>,
    /// `udp`, `tcp` or `tls`. Absent from the post: the stored transport stays.
    #[serde(default)]
    pub transport: Option<String>,
    #[serde(default)]
    pub domain: String,
    #[serde(default)]
    pub username: String,
    /// Empty keeps the stored password.
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub max_channels: String,
    #[serde(default)]
    pub max_cps: String,
    #[serde(default)]
    pub priority: String,
    #[serde(default)]
    pub weight: String,
}

/// A trunk's host as the form shows it: `host`, with the stored `port` folded in.
fn stored_host(t: &TrunkConfig) -> String {
    let Some(host) = &t.host else {
        return String::new();
    };
    match (t.port, callgate_sip_net::SipTarget::parse(host)) {
        (Some(port), Ok(target)) if target.port.is_none() => {
            if target.host.contains(':') {
                format!("[{}]:{port}", target.host)
            } else {
                format!("{}:{port}", target.host)
            }
        }
        _ => host.clone(),
    }
}

/// A trunk's transport as the form shows it.
fn stored_transport(t: &TrunkConfig) -> String {
    t.transport.clone().unwrap_or_else(|| "udp".into())
}

/// Where a trunk points, for the audit line: its address or its host.
fn target_of(t: &TrunkConfig) -> String {
    if t.address.is_empty() {
        stored_host(t)
    } else {
        t.address.clone()
    }
}

fn is_token(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b))
}

fn number(
    errors: &mut FieldErrors,
    field: &'static str,
    label: &str,
    value: &str,
    range: std::ops::RangeInclusive<u32>,
) -> u32 {
    match value.trim().parse::<u32>() {
        Ok(n) if range.contains(&n) => n,
        _ => {
            errors.add(
                field,
                format!(
                    "{label}: a whole number from {} to {} (got `{}`).",
                    range.start(),
                    range.end(),
                    value.trim()
                ),
            );
            0
        }
    }
}

/// Checks a trunk form against the trunks in force; the trunk it describes, or the errors by
/// field.
pub fn check_trunk(form: &TrunkForm, trunks: &[TrunkConfig]) -> Result<TrunkConfig, FieldErrors> {
    let mut errors = FieldErrors::default();
    let original = form.original.trim();
    let before = trunks.iter().find(|t| t.name == original);
    if !original.is_empty() && before.is_none() {
        errors.general = Some(format!(
            "No trunk is named `{original}` any more: reload the page."
        ));
    }
    let name = form.name.trim();
    if !is_token(name, 40) {
        errors.add(
            "name",
            "Name: 1 to 40 letters, digits or `-_.+` (no spaces).",
        );
    } else if name != original && trunks.iter().any(|t| t.name == name) {
        errors.add("name", format!("Name: `{name}` is used by another trunk."));
    }
    let address = form.address.trim();
    let host = match &form.host {
        Some(h) => h.trim().to_string(),
        None => before.map(stored_host).unwrap_or_default(),
    };
    match (address.is_empty(), host.is_empty()) {
        (true, true) => errors.add(
            "address",
            "Address: the carrier's IP:port, e.g. 192.0.2.10:5060, or a host name in Host.",
        ),
        (false, false) => errors.add(
            "host",
            format!(
                "Host: give a host name or an address, not both (got `{host}` and \
                 `{address}`); clear one."
            ),
        ),
        (false, true) => match address.parse::<std::net::SocketAddr>() {
            Ok(a) if a.port() != 0 => {}
            _ => errors.add(
                "address",
                format!(
                    "Address: the carrier's IP:port, e.g. 192.0.2.10:5060 (got `{address}`; \
                     put a host name in Host)."
                ),
            ),
        },
        (true, false) => {
            if let Err(e) = callgate_sip_net::SipTarget::parse(&host) {
                errors.add(
                    "host",
                    format!("Host: a host name or IP with an optional :port ({e})."),
                );
            }
        }
    }
    let transport = match &form.transport {
        None => before.and_then(|t| t.transport.clone()),
        Some(t) => match t.trim().to_ascii_lowercase().as_str() {
            "" | "udp" => None,
            "tcp" => Some("tcp".to_string()),
            "tls" => Some("tls".to_string()),
            _ => {
                errors.add(
                    "transport",
                    format!("Transport: udp, tcp or tls (got `{}`).", t.trim()),
                );
                None
            }
        },
    };
    let domain = form.domain.trim();
    if !domain.is_empty()
        && (domain.len() > 253
            || !domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b)))
    {
        errors.add(
            "domain",
            "Domain: a host name or IP for the Request-URI, or empty for the address's IP.",
        );
    }
    let username = form.username.trim();
    let password = if username.is_empty() {
        if !form.password.is_empty() {
            errors.add("username", "Username: required when a password is given.");
        }
        None
    } else {
        if !is_token(username, 64) {
            errors.add(
                "username",
                "Username: 1 to 64 letters, digits or `-_.+` (no spaces).",
            );
        }
        if form.password.is_empty() {
            match before.and_then(|t| t.password.clone()) {
                Some(kept) => Some(kept),
                None => {
                    errors.add("password", "Password: required with a username.");
                    None
                }
            }
        } else {
            Some(form.password.clone())
        }
    };
    let max_channels = number(
        &mut errors,
        "max_channels",
        "Channels",
        &form.max_channels,
        1..=10_000,
    );
    let max_cps = number(
        &mut errors,
        "max_cps",
        "Calls per second",
        &form.max_cps,
        1..=1_000,
    );
    let priority = number(
        &mut errors,
        "priority",
        "Priority",
        &form.priority,
        0..=1_000,
    );
    let weight = number(&mut errors, "weight", "Weight", &form.weight, 1..=1_000);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(TrunkConfig {
        name: name.to_string(),
        address: address.to_string(),
        domain: (!domain.is_empty()).then(|| domain.to_string()),
        username: (!username.is_empty()).then(|| username.to_string()),
        password,
        max_channels,
        max_cps,
        priority,
        weight,
        // A stored `port` is shown in the host field (`host:port`) and saved there.
        host: (!host.is_empty()).then_some(host),
        port: None,
        transport,
        // Set in the config file; an edit keeps them.
        tls_server_name: before.and_then(|t| t.tls_server_name.clone()),
        register_expires_s: before.and_then(|t| t.register_expires_s),
        // Caller-ID presentation is set in the config file; an edit keeps it.
        caller_id_header: before.and_then(|t| t.caller_id_header.clone()),
        caller_id_override: before.and_then(|t| t.caller_id_override.clone()),
        caller_id_user_phone: before.and_then(|t| t.caller_id_user_phone),
        from_domain: before.and_then(|t| t.from_domain.clone()),
    })
}

/// What changed between two versions of a trunk, for the audit log (never a password).
pub fn trunk_changes(before: Option<&TrunkConfig>, after: Option<&TrunkConfig>) -> String {
    match (before, after) {
        (None, None) => "nothing".into(),
        (None, Some(t)) => format!(
            "added {} at {} over {} ({} channels, {} cps, priority {}, weight {}{})",
            t.name,
            target_of(t),
            stored_transport(t),
            t.max_channels,
            t.max_cps,
            t.priority,
            t.weight,
            if t.username.is_some() {
                ", with credentials"
            } else {
                ""
            }
        ),
        (Some(t), None) => format!("removed {} ({})", t.name, target_of(t)),
        (Some(b), Some(a)) => {
            let mut out = Vec::new();
            let mut diff = |what: &str, x: String, y: String| {
                if x != y {
                    out.push(format!("{what} {x} -> {y}"));
                }
            };
            diff("name", b.name.clone(), a.name.clone());
            diff("address", b.address.clone(), a.address.clone());
            diff("host", stored_host(b), stored_host(a));
            diff("transport", stored_transport(b), stored_transport(a));
            diff(
                "domain",
                b.domain.clone().unwrap_or_default(),
                a.domain.clone().unwrap_or_default(),
            );
            diff(
                "username",
                b.username.clone().unwrap_or_default(),
                a.username.clone().unwrap_or_default(),
            );
            diff(
                "max_channels",
                b.max_channels.to_string(),
                a.max_channels.to_string(),
            );
            diff("max_cps", b.max_cps.to_string(), a.max_cps.to_string());
            diff("priority", b.priority.to_string(), a.priority.to_string());
            diff("weight", b.weight.to_string(), a.weight.to_string());
            if b.password != a.password {
                out.push("password changed".into());
            }
            if out.is_empty() {
                format!("{}: nothing changed", a.name)
            } else {
                format!("{}: {}", b.name, out.join(", "))
            }
        }
    }
}

/// The phone form.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PhoneForm {
    #[serde(default)]
    csrf: String,
    /// The phone's username before the edit; empty for a new phone.
    #[serde(default)]
    pub original: String,
    #[serde(default)]
    pub username: String,
    /// Empty keeps the stored password.
    #[serde(default)]
    pub password: String,
}

/// Checks a phone form against the phones in force.
pub fn check_phone(form: &PhoneForm, phones: &[PhoneConfig]) -> Result<PhoneConfig, FieldErrors> {
    let mut errors = FieldErrors::default();
    let original = form.original.trim();
    let before = phones.iter().find(|p| p.username == original);
    if !original.is_empty() && before.is_none() {
        errors.general = Some(format!(
            "No phone is named `{original}` any more: reload the page."
        ));
    }
    let username = form.username.trim();
    if !is_token(username, 64) {
        errors.add(
            "username",
            "Username: 1 to 64 letters, digits or `-_.+` (no spaces).",
        );
    } else if username != original && phones.iter().any(|p| p.username == username) {
        errors.add(
            "username",
            format!("Username: `{username}` is used by another phone."),
        );
    }
    let password = if form.password.is_empty() {
        match before {
            Some(p) => p.password.clone(),
            None => {
                errors.add("password", "Password: at least 8 characters.");
                String::new()
            }
        }
    } else {
        if form.password.len() < 8 {
            errors.add("password", "Password: at least 8 characters.");
        }
        form.password.clone()
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(PhoneConfig {
        username: username.to_string(),
        password,
    })
}

/// The `[sip]` section with the trunk form applied (the trunk and its index), checked field
/// by field and then whole as the daemon checks its config (host names are resolved);
/// otherwise the errors by field. `current` is left as it was.
pub fn trunk_candidate(
    form: &TrunkForm,
    current: &SipConfig,
) -> Result<(SipConfig, usize), FieldErrors> {
    let trunk = check_trunk(form, &current.trunks)?;
    let tls = trunk.transport.as_deref() == Some("tls");
    let mut candidate = current.clone();
    let index = upsert(&mut candidate.trunks, &form.original, |t| &t.name, trunk);
    match candidate.validate() {
        Ok(_) => Ok((candidate, index)),
        // The section was valid before: a TLS trust problem now is this trunk's TLS.
        Err(SipConfigError::Invalid { key, reason }) if tls && key.starts_with("sip.tls.") => {
            let mut errors = FieldErrors::default();
            errors.add(
                "transport",
                format!(
                    "Transport: TLS needs the carrier's certificate authority trusted, and \
                     {key}: {reason} (fix [sip.tls] in the config file, or choose tcp or udp)."
                ),
            );
            Err(errors)
        }
        Err(e) => Err(place_config_error(e, "trunks", index)),
    }
}

/// A `sip.trunks[i].field` or `sip.phones[i].field` key from the daemon's validation,
/// placed on the form's field when it is the edited entry's.
fn place_config_error(e: SipConfigError, list: &str, index: usize) -> FieldErrors {
    let mut errors = FieldErrors::default();
    if let SipConfigError::Invalid { key, reason } = &e {
        let prefix = format!("sip.{list}[{index}].");
        if let Some(field) = key.strip_prefix(&prefix) {
            let field: &'static str = match field {
                "name" => "name",
                "address" => "address",
                "host" | "port" => "host",
                "transport" => "transport",
                "username" => "username",
                "password" => "password",
                "max_channels" => "max_channels",
                "max_cps" => "max_cps",
                "weight" => "weight",
                _ => "",
            };
            if !field.is_empty() {
                errors.add(field, format!("{key}: {reason}"));
                return errors;
            }
        }
    }
    errors.general = Some(format!("The [sip] section would not be valid: {e}."));
    errors
}

/// One input of a form row.
pub(super) struct Field {
    name: &'static str,
    label: &'static str,
    value: String,
    kind: &'static str,
    error: Option<String>,
}

/// One trunk's or phone's form.
pub(super) struct Row {
    /// The entry's name before the edit (empty: the "add" form).
    key: String,
    title: String,
    fields: Vec<Field>,
    /// Stored credentials exist (a blank password keeps them).
    has_password: bool,
}

#[derive(Template)]
#[template(path = "trunks.html")]
struct TrunksPage {
    page: PageFrame,
    csrf: String,
    sip_on: bool,
    engine_live: bool,
    phones_live: bool,
    trunks: Vec<Row>,
    phones: Vec<Row>,
}

fn trunk_row(key: &str, f: &TrunkForm, errors: &FieldErrors, has_password: bool) -> Row {
    let field = |name: &'static str, label: &'static str, value: &str, kind: &'static str| Field {
        name,
        label,
        value: if kind == "password" {
            String::new()
        } else {
            value.to_string()
        },
        kind,
        error: errors.of(name),
    };
    Row {
        key: key.to_string(),
        title: if key.is_empty() {
            "Add a trunk".into()
        } else {
            format!("Trunk {key}")
        },
        fields: vec![
            field("name", "Name", &f.name, "text"),
            field("address", "Carrier address (IP:port)", &f.address, "text"),
            field(
                "host",
                "Or carrier host name (name[:port], resolved when saved)",
                f.host.as_deref().unwrap_or(""),
                "text",
            ),
            field(
                "transport",
                "Transport (udp, tcp or tls)",
                f.transport.as_deref().unwrap_or("udp"),
                "text",
            ),
            field("domain", "Domain (optional)", &f.domain, "text"),
            field(
                "username",
                "Digest username (optional)",
                &f.username,
                "text",
            ),
            field("password", "Digest password", &f.password, "password"),
            field("max_channels", "Channels", &f.max_channels, "number"),
            field("max_cps", "Calls per second", &f.max_cps, "number"),
            field("priority", "Priority (lower first)", &f.priority, "number"),
            field("weight", "Weight", &f.weight, "number"),
        ],
        has_password,
    }
}

fn form_of(t: &TrunkConfig) -> TrunkForm {
    TrunkForm {
        csrf: String::new(),
        original: t.name.clone(),
        name: t.name.clone(),
        address: t.address.clone(),
        host: Some(stored_host(t)),
        transport: Some(stored_transport(t)),
        domain: t.domain.clone().unwrap_or_default(),
        username: t.username.clone().unwrap_or_default(),
        password: String::new(),
        max_channels: t.max_channels.to_string(),
        max_cps: t.max_cps.to_string(),
        priority: t.priority.to_string(),
        weight: t.weight.to_string(),
    }
}

fn phone_row(key: &str, f: &PhoneForm, errors: &FieldErrors, has_password: bool) -> Row {
    Row {
        key: key.to_string(),
        title: if key.is_empty() {
            "Add a phone".into()
        } else {
            format!("Phone {key}")
        },
        fields: vec![
            Field {
                name: "username",
                label: "Username",
                value: f.username.clone(),
                kind: "text",
                error: errors.of("username"),
            },
            Field {
                name: "password",
                label: "Password (8 or more characters)",
                value: String::new(),
                kind: "password",
                error: errors.of("password"),
            },
        ],
        has_password,
    }
}

/// The page over the `[sip]` section in force; `failed` replaces one form's row with what
/// was typed and its errors.
async fn page_for(
    state: &WebState,
    csrf: &str,
    frame: PageFrame,
    failed_trunk: Option<(&TrunkForm, &FieldErrors)>,
    failed_phone: Option<(&PhoneForm, &FieldErrors)>,
) -> TrunksPage {
    let Some(editor) = &state.sip_editor else {
        return TrunksPage {
            page: frame,
            csrf: csrf.to_string(),
            sip_on: false,
            engine_live: false,
            phones_live: false,
            trunks: Vec::new(),
            phones: Vec::new(),
        };
    };
    let sip = editor.current.lock().await.clone();
    let none = FieldErrors::default();
    let mut trunks: Vec<Row> = sip
        .trunks
        .iter()
        .map(|t| match failed_trunk {
            Some((f, e)) if f.original == t.name => trunk_row(&t.name, f, e, t.password.is_some()),
            _ => trunk_row(&t.name, &form_of(t), &none, t.password.is_some()),
        })
        .collect();
    let blank = TrunkForm {
        max_channels: "10".into(),
        max_cps: "5".into(),
        priority: "0".into(),
        weight: "1".into(),
        ..TrunkForm::default()
    };
    trunks.push(match failed_trunk {
        Some((f, e)) if f.original.is_empty() => trunk_row("", f, e, false),
        _ => trunk_row("", &blank, &none, false),
    });
    let mut phones: Vec<Row> = sip
        .phones
        .iter()
        .map(|p| {
            let form = PhoneForm {
                original: p.username.clone(),
                username: p.username.clone(),
                ..PhoneForm::default()
            };
            match failed_phone {
                Some((f, e)) if f.original == p.username => phone_row(&p.username, f, e, true),
                _ => phone_row(&p.username, &form, &none, true),
            }
        })
        .collect();
    phones.push(match failed_phone {
        Some((f, e)) if f.original.is_empty() => phone_row("", f, e, false),
        _ => phone_row("", &PhoneForm::default(), &none, false),
    });
    TrunksPage {
        page: frame,
        csrf: csrf.to_string(),
        sip_on: true,
        engine_live: editor.control.trunks.is_some(),
        phones_live: editor.control.agents.is_some(),
        trunks,
        phones,
    }
}

/// `GET /trunks`.
pub(super) async fn trunks_page(State(state): State<WebState>, headers: HeaderMap) -> Guarded {
    let (_, session) = require_session(&state, &headers).await?;
    let frame = PageFrame::new(&state, Some(&session));
    let page = page_for(&state, &session.csrf_token, frame, None, None).await;
    Ok(render(StatusCode::OK, &page))
}

/// What became of an accepted change.
enum Applied {
    /// The running engine uses it now.
    Live,
    /// Written; the part of the engine it concerns is not running (or stopped), so it takes
    /// effect at the next start.
    AtNextStart(String),
}

/// Validates `candidate` whole, writes the overlay, hands what changed to the running engine
/// and makes it the section in force. `Err` carries the page's error; nothing changed then.
async fn commit(
    editor: &SipEditor,
    current: &mut SipConfig,
    candidate: SipConfig,
) -> Result<Applied, String> {
    let settings = candidate
        .validate()
        .map_err(|e| format!("The [sip] section would not be valid: {e}."))?;
    SipOverlay {
        trunks: candidate.trunks.clone(),
        phones: candidate.phones.clone(),
    }
    .write(&editor.data_dir)
    .map_err(|e| format!("Nothing was changed: {e}."))?;
    let before = editor.settings();
    let applied = hand_to_engine(&editor.control, &before, &settings).await;
    *current = candidate;
    *editor.settings.write().unwrap_or_else(|p| p.into_inner()) = settings;
    Ok(applied)
}

/// Hands the changed parts of `after` to the running engine: trunks to the router and the
/// pacer, trunk addresses to the agents' inbound gate, phones to their registrar.
async fn hand_to_engine(
    control: &SipControls,
    before: &SipSettings,
    after: &SipSettings,
) -> Applied {
    let mut missed: Vec<String> = Vec::new();
    if before.trunks != after.trunks || before.links != after.links {
        match &control.trunks {
            Some(router) => {
                if let Err(e) = router.replace_from_settings(after).await {
                    missed.push(format!("the trunk router: {e}"));
                }
            }
            None => missed.push("the SIP engine is not running".into()),
        }
        if let Some(dialer) = &control.dialer {
            let limits = crate::dialer::driver::trunk_limits(&after.trunks);
            if let Err(e) = dialer.set_trunks(limits) {
                missed.push(format!("the dialer's pacer: {e}"));
            }
        }
    }
    if before.inbound != after.inbound {
        if let Some(agents) = &control.agents {
            if let Err(e) = agents.set_inbound_policy(after.inbound.clone()) {
                missed.push(format!("the agents' inbound gate: {e}"));
            }
        }
    }
    if before.phones != after.phones {
        match &control.agents {
            Some(agents) => match agents.replace_accounts(after.phones.clone()).await {
                Ok(dropped) if !dropped.is_empty() => {
                    tracing::info!(phones = ?dropped, "removed phones' registrations dropped");
                }
                Ok(_) => {}
                Err(e) => missed.push(format!("the agents' registrar: {e}")),
            },
            None => {
                missed.push("the agents' SIP side is not running (no agents.sip_listen)".into())
            }
        }
    }
    if missed.is_empty() {
        Applied::Live
    } else {
        Applied::AtNextStart(missed.join("; "))
    }
}

fn applied_notice(what: &str, applied: &Applied) -> String {
    match applied {
        Applied::Live => {
            format!("{what} The running SIP engine uses it now; calls in progress continue.")
        }
        Applied::AtNextStart(why) => {
            format!("{what} Saved; {why}, so it takes effect at the next start.")
        }
    }
}

/// The SIP editor, or the page saying this box has no `[sip]` section to edit.
async fn sip_editor_or_refuse(
    state: &WebState,
    csrf: &str,
    frame: PageFrame,
) -> Result<Arc<SipEditor>, Response> {
    match state.sip_editor.clone() {
        Some(editor) => Ok(editor),
        None => {
            let message = "SIP is not configured on this box (no [sip] section).";
            let page = page_for(state, csrf, frame.error(message), None, None).await;
            Err(render(StatusCode::BAD_REQUEST, &page))
        }
    }
}

/// Replaces the entry the form was opened on (`original`, by `key`), or appends `item` when
/// the form was a new one or its entry is gone; returns the item's index.
fn upsert<T>(list: &mut Vec<T>, original: &str, key: impl Fn(&T) -> &str, item: T) -> usize {
    let original = original.trim();
    match list.iter().position(|e| key(e) == original) {
        Some(i) if !original.is_empty() => {
            list[i] = item;
            i
        }
        _ => {
            list.push(item);
            list.len() - 1
        }
    }
}

/// `POST /trunks/save`: adds or changes one trunk.
pub(super) async fn trunk_save(
    State(state): State<WebState>,
    headers: HeaderMap,
    Form(f): Form<TrunkForm>,
) -> Guarded {
    let (_, session) = require_form_session(&state, &headers, &f.csrf).await?;
    let csrf = session.csrf_token.clone();
    let frame = || PageFrame::new(&state, Some(&session));
    let editor = sip_editor_or_refuse(&state, &csrf, frame()).await?;
    let mut current = editor.current.lock().await;
    let checked = trunk_candidate(&f, &current);
    let (candidate, index) = match checked {
        Ok(c) => c,
        Err(errors) => {
            drop(current);
            tracing::info!(user = %session.username, trunk = %f.original, "trunk change refused: {}", errors.summary());
            let page = page_for(
                &state,
                &csrf,
                frame().error(errors.summary()),
                Some((&f, &errors)),
                None,
            )
            .await;
            return Err(render(StatusCode::BAD_REQUEST, &page));
        }
    };
    let before = current
        .trunks
        .iter()
        .find(|t| t.name == f.original.trim())
        .cloned();
    let after = candidate.trunks[index].clone();
    let change = trunk_changes(before.as_ref(), Some(&after));
    let result = commit(&editor, &mut current, candidate).await;
    drop(current);
    match result {
        Ok(applied) => {
            tracing::warn!(user = %session.username, change = %change, live = matches!(applied, Applied::Live), "audit: trunk changed from the web UI");
            let notice = applied_notice(&format!("Trunk {} saved.", after.name), &applied);
            let page = page_for(&state, &csrf, frame().notice(notice), None, None).await;
            Ok(render(StatusCode::OK, &page))
        }
        Err(message) => {
            tracing::error!(user = %session.username, error = %message, "trunk change could not be written");
            let page = page_for(&state, &csrf, frame().error(message), None, None).await;
            Err(render(StatusCode::INTERNAL_SERVER_ERROR, &page))
        }
    }
}

/// The remove forms.
#[derive(Deserialize)]
pub(super) struct RemoveForm {
    csrf: String,
    name: String,
}

/// `POST /trunks/remove`: removes one trunk (calls it carries continue).
pub(super) async fn trunk_remove(
    State(state): State<WebState>,
    headers: HeaderMap,
    Form(f): Form<RemoveForm>,
) -> Guarded {
    remove(state, headers, f, "trunks").await
}

/// `POST /phones/remove`: removes one phone.
pub(super) async fn phone_remove(
    State(state): State<WebState>,
    headers: HeaderMap,
    Form(f): Form<RemoveForm>,
) -> Guarded {
    remove(state, headers, f, "phones").await
}

async fn remove(state: WebState, headers: HeaderMap, f: RemoveForm, list: &str) -> Guarded {
    let (_, session) = require_form_session(&state, &headers, &f.csrf).await?;
    let csrf = session.csrf_token.clone();
    let frame = || PageFrame::new(&state, Some(&session));
    let editor = sip_editor_or_refuse(&state, &csrf, frame()).await?;
    let mut current = editor.current.lock().await;
    let mut candidate = current.clone();
    let found = if list == "trunks" {
        let before = candidate.trunks.len();
        candidate.trunks.retain(|t| t.name != f.name);
        before != candidate.trunks.len()
    } else {
        let before = candidate.phones.len();
        candidate.phones.retain(|p| p.username != f.name);
        before != candidate.phones.len()
    };
    let result = if found {
        commit(&editor, &mut current, candidate).await
    } else {
        Err(format!(
            "Nothing was changed: no entry is named `{}` any more.",
            f.name
        ))
    };
    drop(current);
    match result {
        Ok(applied) => {
            tracing::warn!(user = %session.username, list, name = %f.name, "audit: removed from the web UI");
            let what = if list == "trunks" { "Trunk" } else { "Phone" };
            let notice = applied_notice(&format!("{what} {} removed.", f.name), &applied);
            let page = page_for(&state, &csrf, frame().notice(notice), None, None).await;
            Ok(render(StatusCode::OK, &page))
        }
        Err(message) => {
            let page = page_for(&state, &csrf, frame().error(message), None, None).await;
            Err(render(StatusCode::BAD_REQUEST, &page))
        }
    }
}

/// `POST /phones/save`: adds or changes one desk phone.
pub(super) async fn phone_save(
    State(state): State<WebState>,
    headers: HeaderMap,
    Form(f): Form<PhoneForm>,
) -> Guarded {
    let (_, session) = require_form_session(&state, &headers, &f.csrf).await?;
    let csrf = session.csrf_token.clone();
    let frame = || PageFrame::new(&state, Some(&session));
    let editor = sip_editor_or_refuse(&state, &csrf, frame()).await?;
    let mut current = editor.current.lock().await;
    let checked = check_phone(&f, &current.phones).and_then(|phone| {
        let mut candidate = current.clone();
        let index = upsert(&mut candidate.phones, &f.original, |p| &p.username, phone);
        match candidate.validate() {
            Ok(_) => Ok(candidate),
            Err(e) => Err(place_config_error(e, "phones", index)),
        }
    });
    let candidate = match checked {
        Ok(c) => c,
        Err(errors) => {
            drop(current);
            let page = page_for(
                &state,
                &csrf,
                frame().error(errors.summary()),
                None,
                Some((&f, &errors)),
            )
            .await;
            return Err(render(StatusCode::BAD_REQUEST, &page));
        }
    };
    let result = commit(&editor, &mut current, candidate).await;
    drop(current);
    match result {
        Ok(applied) => {
            tracing::warn!(user = %session.username, phone = %f.username.trim(), previously = %f.original, live = matches!(applied, Applied::Live), "audit: phone saved from the web UI");
            let notice = applied_notice(&format!("Phone {} saved.", f.username.trim()), &applied);
            let page = page_for(&state, &csrf, frame().notice(notice), None, None).await;
            Ok(render(StatusCode::OK, &page))
        }
        Err(message) => {
            let page = page_for(&state, &csrf, frame().error(message), None, None).await;
            Err(render(StatusCode::INTERNAL_SERVER_ERROR, &page))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn carrier() -> TrunkConfig {
        TrunkConfig {
            name: "carrier".into(),
            address: "192.0.2.10:5060".into(),
            domain: None,
            username: Some("branch7".into()),
            password: Some("s3cret-pw".into()),
            max_channels: 10,
            max_cps: 5,
            priority: 0,
            weight: 1,
            host: None,
            port: None,
            transport: None,
            tls_server_name: None,
            register_expires_s: None,
            caller_id_header: None,
            caller_id_override: None,
            caller_id_user_phone: None,
            from_domain: None,
        }
    }

    #[test]
    fn a_bad_trunk_form_is_refused_with_an_error_on_each_bad_field() {
        let mut f = form_of(&carrier());
        f.address = "carrier.example:5060".into();
        f.max_channels = "0".into();
        f.weight = "heavy".into();
        let e = check_trunk(&f, &[carrier()]).unwrap_err();
        let fields: Vec<_> = e.fields.iter().map(|(f, _)| *f).collect();
        assert_eq!(fields, vec!["address", "max_channels", "weight"]);
        assert!(e.of("address").unwrap().contains("carrier.example"));
        assert!(e.summary().starts_with("Nothing was changed."));

        let mut new = form_of(&carrier());
        new.original.clear();
        let e = check_trunk(&new, &[carrier()]).unwrap_err();
        assert!(e.of("name").unwrap().contains("used by another trunk"));
        new.name = "has space".into();
        assert!(check_trunk(&new, &[carrier()])
            .unwrap_err()
            .of("name")
            .is_some());
        new.name = "fresh".into();
        new.username.clear();
        new.password = "orphan".into();
        assert!(check_trunk(&new, &[carrier()])
            .unwrap_err()
            .of("username")
            .is_some());
    }

    #[test]
    fn editing_a_trunk_in_the_form_keeps_its_caller_id_presentation() {
        let stored = TrunkConfig {
            caller_id_header: Some("pai".into()),
            caller_id_override: Some("+441134960000".into()),
            caller_id_user_phone: Some(true),
            from_domain: Some("callgate.example".into()),
            ..carrier()
        };
        let mut f = form_of(&stored);
        f.max_channels = "20".into();
        let edited = check_trunk(&f, std::slice::from_ref(&stored)).unwrap();
        assert_eq!(edited.max_channels, 20);
        assert_eq!(
            edited,
            TrunkConfig {
                max_channels: 20,
                ..stored
            }
        );
    }

    fn sip_with(trunk: TrunkConfig, tls: &str) -> SipConfig {
        #[derive(Deserialize)]
        struct File {
            sip: SipConfig,
        }
        let text = format!("[sip]\nlisten = \"127.0.0.1:5070\"\n{tls}");
        let mut sip = toml::from_str::<File>(&text).unwrap().sip;
        sip.trunks = vec![trunk];
        sip.validate().unwrap();
        sip
    }

    #[test]
    fn the_trunk_form_edits_host_and_transport_and_keeps_what_it_does_not_show() {
        let stored = TrunkConfig {
            register_expires_s: Some(600),
            tls_server_name: Some("sbc.carrier.example".into()),
            caller_id_header: Some("pai".into()),
            ..carrier()
        };
        let sip = sip_with(stored.clone(), "");
        let mut f = form_of(&stored);
        assert_eq!(
            (f.host.as_deref(), f.transport.as_deref()),
            (Some(""), Some("udp"))
        );
        f.address.clear();
        f.host = Some("localhost:5090".into());
        f.transport = Some(" TCP ".into());
        let (candidate, index) = trunk_candidate(&f, &sip).unwrap();
        let edited = &candidate.trunks[index];
        assert_eq!(
            edited,
            &TrunkConfig {
                address: String::new(),
                host: Some("localhost:5090".into()),
                transport: Some("tcp".into()),
                ..stored.clone()
            }
        );
        // The daemon's view: resolved now, reached over TCP.
        let settings = candidate.validate().unwrap();
        let link = &settings.links[index];
        assert_eq!(link.transport, callgate_sip::header::Transport::Tcp);
        assert!(link.address.ip().is_loopback() && link.address.port() == 5090);
        assert_eq!(
            trunk_changes(Some(&stored), Some(edited)),
            "carrier: address 192.0.2.10:5060 -> , host  -> localhost:5090, transport udp -> tcp"
        );
        // A host with its port apart (config file) shows as host:port, and a form posted
        // without the new fields (an older page) keeps host, port and transport.
        let apart = TrunkConfig {
            address: String::new(),
            host: Some("localhost".into()),
            port: Some(5091),
            transport: Some("tls".into()),
            ..stored.clone()
        };
        assert_eq!(form_of(&apart).host.as_deref(), Some("localhost:5091"));
        let old_page = TrunkForm {
            host: None,
            transport: None,
            ..form_of(&apart)
        };
        let kept = check_trunk(&old_page, std::slice::from_ref(&apart)).unwrap();
        assert_eq!(kept.host.as_deref(), Some("localhost:5091"));
        assert_eq!(kept.transport.as_deref(), Some("tls"));
        // And back to an address over UDP.
        let mut back = form_of(&apart);
        back.host = Some(String::new());
        back.address = "192.0.2.10:5060".into();
        back.transport = Some("udp".into());
        let t = check_trunk(&back, std::slice::from_ref(&apart)).unwrap();
        assert_eq!((t.host, t.port, t.transport), (None, None, None));
    }

    #[test]
    fn a_bad_host_or_transport_is_refused_on_its_field_and_leaves_the_section_as_it_was() {
        let sip = sip_with(carrier(), "[sip.tls]\nca_file = \"/dev/null\"\n");
        let before = sip.clone();
        let field_error = |f: &TrunkForm, field: &str| -> String {
            let e = trunk_candidate(f, &sip).unwrap_err();
            assert_eq!(
                e.fields.iter().map(|(f, _)| *f).collect::<Vec<_>>(),
                vec![field],
                "{e:?}"
            );
            e.of(field).unwrap()
        };
        let mut f = form_of(&carrier());
        f.transport = Some("sctp".into());
        let e = field_error(&f, "transport");
        assert!(e.starts_with("Transport:") && e.contains("`sctp`"), "{e}");

        let mut f = form_of(&carrier());
        f.host = Some("sbc.carrier.example".into());
        let e = field_error(&f, "host");
        assert!(e.starts_with("Host:") && e.contains("not both"), "{e}");

        let mut f = form_of(&carrier());
        f.address.clear();
        f.host = Some("[2001:db8::1".into());
        let e = field_error(&f, "host");
        assert!(e.starts_with("Host:") && e.contains("unclosed"), "{e}");

        // Resolved when saved, as the daemon resolves it at load.
        let mut f = form_of(&carrier());
        f.address.clear();
        f.host = Some("nonexistent.invalid".into());
        let e = field_error(&f, "host");
        assert!(
            e.contains("sip.trunks[0].host") && e.contains("nonexistent.invalid"),
            "{e}"
        );

        // TLS needs the carrier's CA trusted: this box's [sip.tls] ca_file holds none.
        let mut f = form_of(&carrier());
        f.transport = Some("tls".into());
        let e = field_error(&f, "transport");
        assert!(
            e.starts_with("Transport: TLS") && e.contains("sip.tls.ca_file"),
            "{e}"
        );
        assert_eq!(sip, before, "nothing saved is changed by a refused form");
    }

    #[test]
    fn a_blank_password_keeps_the_stored_one_and_a_new_one_replaces_it() {
        let f = form_of(&carrier());
        assert_eq!(
            check_trunk(&f, &[carrier()]).unwrap().password.as_deref(),
            Some("s3cret-pw")
        );
        let mut changed = f.clone();
        changed.password = "other-pw".into();
        let t = check_trunk(&changed, &[carrier()]).unwrap();
        assert_eq!(t.password.as_deref(), Some("other-pw"));
        assert_eq!(
            trunk_changes(Some(&carrier()), Some(&t)),
            "carrier: password changed"
        );
        let mut fresh = f;
        fresh.original.clear();
        fresh.name = "fresh".into();
        assert!(check_trunk(&fresh, &[carrier()])
            .unwrap_err()
            .of("password")
            .is_some());
    }

    #[test]
    fn the_audit_line_names_what_changed_and_never_the_password() {
        let mut after = carrier();
        after.address = "192.0.2.11:5060".into();
        after.max_channels = 4;
        after.password = Some("new-secret".into());
        let line = trunk_changes(Some(&carrier()), Some(&after));
        assert_eq!(
            line,
            "carrier: address 192.0.2.10:5060 -> 192.0.2.11:5060, max_channels 10 -> 4, \
             password changed"
        );
        assert!(!line.contains("secret"));
        assert!(trunk_changes(None, Some(&carrier())).starts_with("added carrier at"));
        assert_eq!(
            trunk_changes(Some(&carrier()), None),
            "removed carrier (192.0.2.10:5060)"
        );
    }

    #[test]
    fn phones_need_a_unique_username_and_an_eight_character_password() {
        let desk = PhoneConfig {
            username: "desk1".into(),
            password: "pw-desk-1".into(),
        };
        let f = PhoneForm {
            username: "desk1".into(),
            password: "short".into(),
            ..PhoneForm::default()
        };
        let e = check_phone(&f, std::slice::from_ref(&desk)).unwrap_err();
        assert!(e.of("username").is_some() && e.of("password").is_some());
        let keep = PhoneForm {
            original: "desk1".into(),
            username: "desk1b".into(),
            ..PhoneForm::default()
        };
        assert_eq!(
            check_phone(&keep, &[desk]).unwrap(),
            PhoneConfig {
                username: "desk1b".into(),
                password: "pw-desk-1".into()
            }
        );
    }

    #[test]
    fn the_overlay_replaces_the_lists_at_start_and_a_stale_one_is_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let text = format!(
            "[appliance]\ndata_dir = \"{}\"\n[sip]\nlisten = \"127.0.0.1:5070\"\n\
             [[sip.trunks]]\nname = \"carrier\"\naddress = \"192.0.2.10:5060\"\n\
             max_channels = 10\nmax_cps = 5\n\
             [[sip.routes]]\nnumber = \"*\"\ntrunk = \"carrier\"\n",
            data.display()
        );
        let load = || {
            callgate_common::observe::parse_toml::<crate::config::ApplianceConfig>(
                Path::new("a.toml"),
                &text,
            )
            .unwrap()
            .validate()
            .unwrap()
        };
        let mut moved = carrier();
        moved.address = "192.0.2.99:5060".into();
        SipOverlay {
            trunks: vec![moved],
            phones: vec![],
        }
        .write(&data)
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(SipOverlay::path(&data))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "the overlay holds passwords");
        }
        let mut config = load();
        apply_overlay(&mut config);
        let sip = config.sip.unwrap();
        assert_eq!(sip.trunks[0].address.to_string(), "192.0.2.99:5060");
        assert_eq!(
            sip.trunks[0].credentials.as_ref().unwrap().username,
            "branch7"
        );

        // A route in the file still names `carrier`: an overlay without it is refused whole.
        let mut renamed = carrier();
        renamed.name = "other".into();
        SipOverlay {
            trunks: vec![renamed],
            phones: vec![],
        }
        .write(&data)
        .unwrap();
        let mut config = load();
        apply_overlay(&mut config);
        let sip = config.sip.unwrap();
        assert_eq!(sip.trunks[0].name, "carrier");
        assert_eq!(sip.trunks[0].address.to_string(), "192.0.2.10:5060");
    }

    #[test]
    fn the_daemons_own_validation_lands_on_the_edited_field() {
        let e = place_config_error(
            SipConfigError::Invalid {
                key: "sip.trunks[2].address".into(),
                reason: "bad".into(),
            },
            "trunks",
            2,
        );
        assert_eq!(
            e.of("address").as_deref(),
            Some("sip.trunks[2].address: bad")
        );
        let e = place_config_error(
            SipConfigError::Invalid {
                key: "sip.routes[0].trunk".into(),
                reason: "no trunk is named `x`".into(),
            },
            "trunks",
            2,
        );
        assert!(e.fields.is_empty());
        assert!(e.general.unwrap().contains("sip.routes[0].trunk"));
    }
}
