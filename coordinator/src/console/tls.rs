//! The console's HTTPS certificate: the files named in `[console]` when configured, else a
//! self-signed one generated at first start into `data_dir/console/` (same approach as the
//! appliance's web UI), identified by its SHA-256 fingerprint in the log.

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why the certificate could not be made or loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// Reading or writing a certificate file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Generating the self-signed certificate failed.
    #[error("generating the console certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The files are not a usable certificate chain and key.
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// The certificate the console serves.
#[derive(Debug, Clone)]
pub struct ConsoleCertificate {
    /// rustls configuration serving it (ring provider).
    pub server_config: Arc<ServerConfig>,
    /// SHA-256 over the leaf certificate's DER, as `AB:CD:...`.
    pub fingerprint: String,
}

/// Where the generated certificate lives.
pub fn generated_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("console");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// Loads `files` (certificate chain, key) when given; otherwise loads the generated pair,
/// generating it for `names` first when absent.
pub fn load_or_create(
    data_dir: &Path,
    files: Option<(&Path, &Path)>,
    names: &[String],
) -> Result<ConsoleCertificate, TlsError> {
    let (cert_path, key_path) = match files {
        Some((c, k)) => (c.to_path_buf(), k.to_path_buf()),
        None => {
            let (c, k) = generated_paths(data_dir);
            if !c.exists() || !k.exists() {
                generate(&c, &k, names)?;
            }
            (c, k)
        }
    };
    let invalid = |path: &Path, reason: String| TlsError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| invalid(&cert_path, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(&cert_path, e.to_string()))?;
    let Some(leaf) = chain.first().cloned() else {
        return Err(invalid(&cert_path, "holds no certificate".into()));
    };
    let key =
        PrivateKeyDer::from_pem_file(&key_path).map_err(|e| invalid(&key_path, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(&cert_path, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| invalid(&cert_path, e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ConsoleCertificate {
        server_config: Arc::new(config),
        fingerprint: fingerprint(&leaf),
    })
}

fn generate(cert_path: &Path, key_path: &Path, names: &[String]) -> Result<(), TlsError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Io { path, source }
    };
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
        .open(key_path)
        .map_err(io(key_path))?;
    key.write_all(generated.signing_key.serialize_pem().as_bytes())
        .and_then(|_| key.sync_all())
        .map_err(io(key_path))?;
    std::fs::write(cert_path, generated.cert.pem()).map_err(io(cert_path))?;
    tracing::info!(path = %cert_path.display(), "generated a self-signed console certificate");
    Ok(())
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
    fn generates_once_then_reuses_the_same_certificate_with_a_private_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let first = load_or_create(dir.path(), None, &names).unwrap();
        let again = load_or_create(dir.path(), None, &names).unwrap();
        assert_eq!(first.fingerprint, again.fingerprint);
        use std::os::unix::fs::PermissionsExt;
        let (_, key) = generated_paths(dir.path());
        assert_eq!(
            std::fs::metadata(key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn configured_files_are_used_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let generated = load_or_create(dir.path(), None, &["hq.example".into()]).unwrap();
        let (cert, key) = generated_paths(dir.path());
        let other = tempfile::tempdir().unwrap();
        let loaded = load_or_create(other.path(), Some((&cert, &key)), &[]).unwrap();
        assert_eq!(loaded.fingerprint, generated.fingerprint);
        assert!(
            !generated_paths(other.path()).0.exists(),
            "nothing generated"
        );
        std::fs::write(&cert, "not a certificate").unwrap();
        let err = load_or_create(other.path(), Some((&cert, &key)), &[]).unwrap_err();
        assert!(err.to_string().contains("cert.pem"), "{err}");
    }
}
