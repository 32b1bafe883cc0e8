//! `callgate-appliance enroll --coordinator URL --claim CODE`: generates the box's key pair
//! here (it never leaves the box), sends a CSR with the claim code over HTTPS, and stores
//! the signed certificate, the organisation CA and the broker address.
//!
//! Each refusal is its own error: this box is already enrolled, the code is wrong, used or
//! expired, the appliance is already enrolled or revoked at the coordinator.
//! Plain `http://` is accepted for loopback coordinators only (development and tests).

use super::identity::IdentityDir;
use super::SyncError;
use callgate_common::ids::ApplianceId;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why enrollment failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnrollError {
    /// This box already holds a certificate.
    #[error("this box is already enrolled (certificate at {0}); it renews itself, re-enrolling is refused")]
    AlreadyEnrolledHere(PathBuf),
    /// The coordinator knows no such claim code.
    #[error("the claim code is wrong: the coordinator knows no such code")]
    WrongCode,
    /// The claim code was used before.
    #[error("the claim code was already used; ask HQ for a new one")]
    UsedCode,
    /// The claim code is older than 24 hours.
    #[error("the claim code has expired (codes are valid 24 h); ask HQ for a new one")]
    ExpiredCode,
    /// The coordinator has this appliance enrolled already (on another box, or earlier).
    #[error("the coordinator already has this appliance enrolled; HQ must revoke it first")]
    AlreadyEnrolledThere,
    /// The appliance was revoked at the coordinator.
    #[error("this appliance is revoked at the coordinator")]
    Revoked,
    /// The coordinator refused the CSR.
    #[error("the coordinator refused the certificate request: {0}")]
    BadRequest(String),
    /// The URL is not usable.
    #[error("coordinator URL `{url}`: {reason}")]
    Url { url: String, reason: String },
    /// Could not reach the coordinator, or TLS failed.
    #[error("cannot reach the coordinator at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// Any other answer.
    #[error("unexpected answer from the coordinator ({status}): {body}")]
    Unexpected { status: u16, body: String },
    /// Storing the identity failed.
    #[error(transparent)]
    Sync(#[from] SyncError),
}

/// What the coordinator answered (the `enroll` room's `EnrollResponse`).
#[derive(Debug, Deserialize)]
struct EnrollResponse {
    appliance: String,
    certificate: String,
    ca: String,
    broker: Option<String>,
}

/// What enrollment stored next to the certificate: the id and the broker.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Enrollment {
    /// The appliance id the certificate names.
    pub appliance: String,
    /// The broker's `host:port`.
    pub broker: Option<String>,
}

impl Enrollment {
    /// `{identity}/enrollment.json`.
    pub fn path(identity: &IdentityDir) -> PathBuf {
        identity.cert_path().with_file_name("enrollment.json")
    }

    /// Reads it, if the box was enrolled online.
    pub fn load(identity: &IdentityDir) -> Option<Enrollment> {
        let text = std::fs::read_to_string(Self::path(identity)).ok()?;
        serde_json::from_str(&text).ok()
    }
}

struct Target {
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

fn parse_url(url: &str) -> Result<Target, EnrollError> {
    let bad = |reason: &str| EnrollError::Url {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(bad("must start with https://"));
    };
    let (authority, base) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
            h.trim_matches(['[', ']']).to_string(),
            p.parse::<u16>().map_err(|_| bad("bad port"))?,
        ),
        _ => (authority.to_string(), if tls { 443 } else { 80 }),
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false);
    if !tls && !loopback {
        return Err(bad(
            "plain http:// is only allowed to a loopback address; use https://",
        ));
    }
    let base = base.trim_end_matches('/');
    let path = if base.is_empty() {
        "/v1/enroll".to_string()
    } else {
        format!("/{base}/v1/enroll")
    };
    Ok(Target {
        tls,
        host,
        port,
        path,
    })
}

/// Enrolls this box. `trust` is a PEM file of CAs to trust for the coordinator's HTTPS
/// certificate (HQ hands out the organisation CA with the claim code); the system's trust
/// store when `None`.
pub async fn enroll(
    data_dir: &Path,
    coordinator: &str,
    claim: &str,
    trust: Option<&Path>,
    name_hint: Option<&ApplianceId>,
) -> Result<Enrollment, EnrollError> {
    let identity = IdentityDir::in_data_dir(data_dir);
    if identity.is_enrolled() {
        return Err(EnrollError::AlreadyEnrolledHere(identity.cert_path()));
    }
    let target = parse_url(coordinator)?;
    let placeholder = ApplianceId::new("unenrolled").expect("valid id");
    let csr = identity.generate_csr(name_hint.unwrap_or(&placeholder))?;
    let body = serde_json::json!({ "claim": claim, "csr": csr }).to_string();
    let unreachable = |reason: String| EnrollError::Unreachable {
        url: coordinator.to_string(),
        reason,
    };
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let (status, answer) = if target.tls {
        let config = client_config(trust)?;
        let name = rustls::pki_types::ServerName::try_from(target.host.clone())
            .map_err(|e| unreachable(e.to_string()))?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| unreachable(format!("TLS: {e}")))?;
        post(stream, &target, &body).await
    } else {
        post(tcp, &target, &body).await
    }
    .map_err(|e| unreachable(e.to_string()))?;
    if status != 200 {
        let kind = serde_json::from_str::<serde_json::Value>(&answer)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string));
        return Err(match kind.as_deref() {
            Some("claim-unknown") => EnrollError::WrongCode,
            Some("claim-used") => EnrollError::UsedCode,
            Some("claim-expired") => EnrollError::ExpiredCode,
            Some("already-enrolled") => EnrollError::AlreadyEnrolledThere,
            Some("revoked") => EnrollError::Revoked,
            Some("bad-csr") => EnrollError::BadRequest(answer),
            _ => EnrollError::Unexpected {
                status,
                body: answer.chars().take(500).collect(),
            },
        });
    }
    let resp: EnrollResponse =
        serde_json::from_str(&answer).map_err(|e| EnrollError::Unexpected {
            status,
            body: format!("{e}: {}", answer.chars().take(200).collect::<String>()),
        })?;
    identity.install(&resp.certificate, &resp.ca)?;
    let enrollment = Enrollment {
        appliance: resp.appliance,
        broker: resp.broker,
    };
    let path = Enrollment::path(&identity);
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&enrollment).unwrap_or_default(),
    )
    .map_err(|e| SyncError::Identity {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    identity.client_tls()?;
    Ok(enrollment)
}

fn client_config(trust: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, EnrollError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    match trust {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| SyncError::Identity {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?
                .flatten()
            {
                roots.add(cert).map_err(|e| SyncError::Tls(e.to_string()))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| SyncError::Tls(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// One HTTP/1.1 POST with `Connection: close`; returns (status, body).
async fn post<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    target: &Target,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{}",
        target.path,
        target.host,
        target.port,
        body.len(),
        body
    );
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut raw = Vec::new();
    // A peer that closes without close_notify still gave us the whole response.
    if let Err(e) = stream.read_to_end(&mut raw).await {
        if raw.is_empty() {
            return Err(e);
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP header in the answer"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status in the answer"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_refused_except_to_loopback() {
        assert!(parse_url("http://127.0.0.1:8080").is_ok());
        let err = parse_url("http://hq.example.com")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("https://"), "{err}");
        let t = parse_url("https://hq.example.com/callgate/").ok().unwrap();
        assert_eq!((t.port, t.path.as_str()), (443, "/callgate/v1/enroll"));
        assert!(parse_url("ftp://x").is_err());
    }

    #[test]
    fn chunked_bodies_are_reassembled() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }
}
