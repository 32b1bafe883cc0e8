//! The box's identity: a private key generated here (it never leaves the box), the
//! certificate the coordinator's organisation CA signed for it, and that CA.
//!
//! Files under `{data_dir}/identity/`: `key.pem` (mode 0600), `cert.pem`, `ca.pem`. Owns
//! building the rustls client configuration (ring provider only) from them.

use super::SyncError;
use callgate_common::ids::ApplianceId;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where an identity lives.
#[derive(Debug, Clone)]
pub struct IdentityDir {
    dir: PathBuf,
}

impl IdentityDir {
    /// `{data_dir}/identity`.
    pub fn in_data_dir(data_dir: &Path) -> IdentityDir {
        IdentityDir {
            dir: data_dir.join("identity"),
        }
    }

    /// The private key.
    pub fn key_path(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    /// The box's certificate.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    /// The organisation CA.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The key generated for a pending renewal.
    pub fn next_key_path(&self) -> PathBuf {
        self.dir.join("key.next.pem")
    }

    /// When the installed certificate expires, Unix seconds.
    pub fn not_after(&self) -> Result<i64, SyncError> {
        let pem = std::fs::read_to_string(self.cert_path())
            .map_err(|e| self.io_error(&self.cert_path(), e))?;
        let bad = |reason: String| SyncError::Identity {
            path: self.cert_path(),
            reason,
        };
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let (_, cert) =
            x509_parser::parse_x509_certificate(&der).map_err(|e| bad(e.to_string()))?;
        Ok(cert.validity().not_after.timestamp())
    }

    /// Generates the key pair for a renewal (kept as `key.next.pem` until the new
    /// certificate arrives) and returns its CSR.
    pub fn generate_renewal_csr(&self, appliance: &ApplianceId) -> Result<String, SyncError> {
        let (csr, key) = make_csr(appliance)?;
        write_private(&self.next_key_path(), key.as_bytes())
            .map_err(|e| self.io_error(&self.next_key_path(), e))?;
        Ok(csr)
    }

    /// Installs a renewed certificate: only if it matches the pending renewal key, which
    /// then replaces the old key.
    pub fn install_renewed(&self, cert_pem: &str) -> Result<(), SyncError> {
        let next = self.next_key_path();
        if !next.exists() {
            return Err(SyncError::Identity {
                path: next,
                reason: "a certificate arrived but no renewal is pending".into(),
            });
        }
        let staged = self.dir.join("cert.next.pem");
        std::fs::write(&staged, cert_pem).map_err(|e| self.io_error(&staged, e))?;
        // rustls refuses a certificate whose public key is not the private key's.
        let check = self.tls_from(&self.ca_path(), &staged, &next);
        if let Err(e) = check {
            let _ = std::fs::remove_file(&staged);
            return Err(e);
        }
        std::fs::rename(&next, self.key_path()).map_err(|e| self.io_error(&next, e))?;
        std::fs::rename(&staged, self.cert_path()).map_err(|e| self.io_error(&staged, e))?;
        Ok(())
    }

    /// Whether a certificate is installed (the box is enrolled).
    pub fn is_enrolled(&self) -> bool {
        self.cert_path().exists()
    }

    /// Generates a fresh key pair on the box (replacing any earlier unsigned one), stores
    /// the private key with mode 0600, and returns a PEM CSR whose subject is `appliance`.
    pub fn generate_csr(&self, appliance: &ApplianceId) -> Result<String, SyncError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| self.io_error(&self.dir, e))?;
        let (csr, key) = make_csr(appliance)?;
        write_private(&self.key_path(), key.as_bytes())
            .map_err(|e| self.io_error(&self.key_path(), e))?;
        Ok(csr)
    }

    /// Stores the signed certificate and the CA.
    pub fn install(&self, cert_pem: &str, ca_pem: &str) -> Result<(), SyncError> {
        std::fs::write(self.cert_path(), cert_pem)
            .map_err(|e| self.io_error(&self.cert_path(), e))?;
        std::fs::write(self.ca_path(), ca_pem).map_err(|e| self.io_error(&self.ca_path(), e))?;
        Ok(())
    }

    /// The rustls client configuration for mutual TLS with the broker: trusts only the
    /// organisation CA, presents the box's certificate, uses the ring provider.
    pub fn client_tls(&self) -> Result<Arc<rustls::ClientConfig>, SyncError> {
        self.tls_from(&self.ca_path(), &self.cert_path(), &self.key_path())
    }

    fn tls_from(
        &self,
        ca: &Path,
        cert: &Path,
        key_path: &Path,
    ) -> Result<Arc<rustls::ClientConfig>, SyncError> {
        let ca = self.certs(ca)?;
        let chain = self.certs(cert)?;
        let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| SyncError::Identity {
            path: key_path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut roots = rustls::RootCertStore::empty();
        for c in ca {
            roots
                .add(c)
                .map_err(|e| SyncError::Tls(format!("organisation CA: {e}")))?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| SyncError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| SyncError::Tls(format!("appliance certificate: {e}")))?;
        Ok(Arc::new(config))
    }

    fn certs(&self, path: &Path) -> Result<Vec<CertificateDer<'static>>, SyncError> {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| SyncError::Identity {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(SyncError::Identity {
                path: path.to_path_buf(),
                reason: "no certificate in file".into(),
            });
        }
        Ok(certs)
    }

    fn io_error(&self, path: &Path, e: std::io::Error) -> SyncError {
        SyncError::Identity {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    }
}

/// A fresh key pair and a PEM CSR naming `appliance`: (csr, private key PEM).
fn make_csr(appliance: &ApplianceId) -> Result<(String, String), SyncError> {
    let key = rcgen::KeyPair::generate().map_err(|e| SyncError::Tls(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| SyncError::Tls(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, appliance.as_str());
    let csr = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| SyncError::Tls(e.to_string()))?;
    Ok((csr, key.serialize_pem()))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_generated_on_the_box_private_and_the_csr_names_the_appliance() {
        let dir = tempfile::tempdir().unwrap();
        let id = IdentityDir::in_data_dir(dir.path());
        let csr = id
            .generate_csr(&ApplianceId::new("branch-9").unwrap())
            .unwrap();
        assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        assert!(!csr.contains("PRIVATE KEY"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(id.key_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&csr).unwrap();
        let cn = parsed
            .params
            .distinguished_name
            .get(&rcgen::DnType::CommonName)
            .cloned();
        assert_eq!(cn, Some(rcgen::DnValue::Utf8String("branch-9".into())));
        assert!(!id.is_enrolled());
    }

    #[test]
    fn a_missing_certificate_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let id = IdentityDir::in_data_dir(dir.path());
        let err = id.client_tls().unwrap_err().to_string();
        assert!(err.contains("ca.pem"), "{err}");
    }
}
