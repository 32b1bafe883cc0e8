//! The web UI's certificate: generated on the box at first boot (self-signed, for the
//! box's names and LAN addresses), kept in the data directory, and identified by the
//! SHA-256 fingerprint the daemon prints in its log and on the console so a technician can
//! check it in the browser.

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why the certificate could not be made or loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// Reading or writing the certificate files failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Generating the certificate failed.
    #[error("generating the web certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The files on disk are not a usable certificate and key.
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// The certificate the UI serves.
#[derive(Debug, Clone)]
pub struct WebCertificate {
    /// rustls configuration serving it (ring provider).
    pub server_config: Arc<ServerConfig>,
    /// The certificate, DER.
    pub der: CertificateDer<'static>,
    /// SHA-256 over the DER, as `AB:CD:...`.
    pub fingerprint: String,
}

/// Where the certificate lives inside the data directory.
pub fn paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("web");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// Loads the certificate, generating it first when absent. `names` are the subject
/// alternative names (host names and IP addresses as text).
pub fn load_or_create(data_dir: &Path, names: &[String]) -> Result<WebCertificate, TlsError> {
    let (cert_path, key_path) = paths(data_dir);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Io { path, source }
    };
    if !cert_path.exists() || !key_path.exists() {
        let generated = rcgen::generate_simple_self_signed(names.to_vec())?;
        let dir = cert_path.parent().expect("cert path has a parent");
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut key = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&key_path)
            .map_err(io(&key_path))?;
        key.write_all(generated.signing_key.serialize_pem().as_bytes())
            .and_then(|_| key.sync_all())
            .map_err(io(&key_path))?;
        std::fs::write(&cert_path, generated.cert.pem()).map_err(io(&cert_path))?;
        tracing::info!(path = %cert_path.display(), "generated the web UI certificate");
    }
    let der = CertificateDer::from_pem_file(&cert_path).map_err(|e| TlsError::Invalid {
        path: cert_path.clone(),
        reason: e.to_string(),
    })?;
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| TlsError::Invalid {
        path: key_path.clone(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid {
            path: cert_path.clone(),
            reason: e.to_string(),
        })?
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .map_err(|e| TlsError::Invalid {
            path: cert_path.clone(),
            reason: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(WebCertificate {
        server_config: Arc::new(config),
        fingerprint: fingerprint(&der),
        der,
    })
}

/// SHA-256 of a DER certificate as colon-separated hex pairs.
pub fn fingerprint(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_then_reuses_with_the_same_fingerprint_and_a_private_key() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["callgate.local".to_string(), "127.0.0.1".to_string()];
        let first = load_or_create(dir.path(), &names).unwrap();
        let again = load_or_create(dir.path(), &names).unwrap();
        assert_eq!(first.fingerprint, again.fingerprint);
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        use std::os::unix::fs::PermissionsExt;
        let (_, key) = paths(dir.path());
        assert_eq!(
            std::fs::metadata(key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn a_corrupt_certificate_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path(), &["x.local".to_string()]).unwrap();
        let (cert, _) = paths(dir.path());
        std::fs::write(&cert, "not a certificate").unwrap();
        let err = load_or_create(dir.path(), &["x.local".to_string()]).unwrap_err();
        assert!(err.to_string().contains("cert.pem"), "{err}");
    }
}
