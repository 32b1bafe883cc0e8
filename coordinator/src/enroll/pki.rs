//! The organisation CA (rcgen, ring): created on first use under `{data_dir}/pki/`
//! (`ca.pem`, `ca.key` with mode 0600), then loaded. It signs appliance CSRs (client
//! certificates whose subject CN is the appliance id — the broker's identity for it), the
//! broker's server certificate, and the coordinator's own broker-client certificate.

use super::EnrollError;
use callgate_common::ids::ApplianceId;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// The coordinator's identity towards the broker (never a valid appliance id: it has a dot).
pub const COORDINATOR_IDENTITY: &str = "coordinator.callgate";

/// How long an appliance certificate is valid; renewal starts at two thirds of it.
pub const APPLIANCE_CERT_DAYS: i64 = 90;

/// A certificate the CA issued.
#[derive(Debug, Clone)]
pub struct Issued {
    /// PEM certificate.
    pub cert_pem: String,
    /// Hex serial number.
    pub serial: String,
    /// Expiry, Unix seconds.
    pub not_after: i64,
}

/// The organisation CA.
pub struct OrgCa {
    dir: PathBuf,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for OrgCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrgCa").field("dir", &self.dir).finish()
    }
}

fn cert_err(e: rcgen::Error) -> EnrollError {
    EnrollError::Certificate(e.to_string())
}

impl OrgCa {
    /// Loads the CA from `dir`, creating it (and `dir`) on first use.
    pub fn load_or_create(dir: &Path) -> Result<OrgCa, EnrollError> {
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca.key");
        let file_err = |path: &Path, e: std::io::Error| EnrollError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        if !cert_path.exists() {
            std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
            let key = KeyPair::generate().map_err(cert_err)?;
            let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
            params
                .distinguished_name
                .push(DnType::CommonName, "Callgate organisation CA");
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let now = OffsetDateTime::now_utc();
            params.not_before = now - Duration::hours(1);
            params.not_after = now + Duration::days(3650);
            let cert = params.self_signed(&key).map_err(cert_err)?;
            write_private(&key_path, key.serialize_pem().as_bytes())
                .map_err(|e| file_err(&key_path, e))?;
            std::fs::write(&cert_path, cert.pem()).map_err(|e| file_err(&cert_path, e))?;
            tracing::info!(dir = %dir.display(), "created the organisation CA");
        }
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(|e| file_err(&cert_path, e))?;
        let key_pem = std::fs::read_to_string(&key_path).map_err(|e| file_err(&key_path, e))?;
        let key = KeyPair::from_pem(&key_pem).map_err(cert_err)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(cert_err)?;
        Ok(OrgCa {
            dir: dir.to_path_buf(),
            cert_pem,
            issuer,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The directory the CA lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Signs an appliance's CSR. With `require_subject`, the CSR's subject CN must be
    /// `appliance` (renewal, offline provisioning); without it (a claim code already named
    /// the appliance) the CSR's subject is ignored. Either way the certificate carries only
    /// `CN=appliance` and is for client authentication only.
    pub fn sign_appliance_csr(
        &self,
        csr_pem: &str,
        appliance: &ApplianceId,
        require_subject: bool,
    ) -> Result<Issued, EnrollError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(cert_err)?;
        let got = match csr.params.distinguished_name.get(&DnType::CommonName) {
            Some(DnValue::Utf8String(s)) => s.clone(),
            Some(DnValue::PrintableString(s)) => s.as_str().to_string(),
            other => format!("{other:?}"),
        };
        if require_subject && got != appliance.as_str() {
            return Err(EnrollError::WrongSubject {
                expected: appliance.to_string(),
                got,
            });
        }
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, appliance.as_str());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.issue(params, APPLIANCE_CERT_DAYS, |p| {
            csr.params = p;
            csr.signed_by(&self.issuer)
        })
    }

    /// Issues a key pair and certificate for a server (the broker) under `names`
    /// (DNS names or IP addresses). Returns (certificate PEM, private key PEM).
    pub fn issue_server(&self, names: &[String]) -> Result<(String, String), EnrollError> {
        let mut params = CertificateParams::new(names.to_vec()).map_err(cert_err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().map_or("broker", |n| n));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue_with_key(params, 825)
    }

    /// Issues a key pair and client certificate with subject CN `identity` (the
    /// coordinator's own broker identity, or a benchmark's simulated appliances).
    pub fn issue_client(&self, identity: &str, days: i64) -> Result<(String, String), EnrollError> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
        params.distinguished_name.push(DnType::CommonName, identity);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue_with_key(params, days)
    }

    fn issue_with_key(
        &self,
        params: CertificateParams,
        days: i64,
    ) -> Result<(String, String), EnrollError> {
        let key = KeyPair::generate().map_err(cert_err)?;
        let issued = self.issue(params, days, |p| p.signed_by(&key, &self.issuer))?;
        Ok((issued.cert_pem, key.serialize_pem()))
    }

    fn issue(
        &self,
        mut params: CertificateParams,
        days: i64,
        sign: impl FnOnce(CertificateParams) -> Result<rcgen::Certificate, rcgen::Error>,
    ) -> Result<Issued, EnrollError> {
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + Duration::days(days);
        let serial: [u8; 16] = *uuid::Uuid::new_v4().as_bytes();
        let mut serial = serial.to_vec();
        serial[0] &= 0x7f;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let not_after = params.not_after.unix_timestamp();
        let cert = sign(params).map_err(cert_err)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            serial: serial.iter().map(|b| format!("{b:02x}")).collect(),
            not_after,
        })
    }
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

    fn csr_for(cn: &str) -> String {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.serialize_request(&key).unwrap().pem().unwrap()
    }

    #[test]
    fn the_ca_is_created_once_and_reloaded_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let a = OrgCa::load_or_create(dir.path()).unwrap();
        let b = OrgCa::load_or_create(dir.path()).unwrap();
        assert_eq!(a.cert_pem(), b.cert_pem());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_csr_for_another_name_is_refused_and_a_matching_one_signed() {
        let dir = tempfile::tempdir().unwrap();
        let ca = OrgCa::load_or_create(dir.path()).unwrap();
        let me = ApplianceId::new("branch-1").unwrap();
        let err = ca
            .sign_appliance_csr(&csr_for("branch-2"), &me, true)
            .unwrap_err();
        assert!(matches!(err, EnrollError::WrongSubject { .. }), "{err}");
        // With a claim code the name comes from the code; the CSR's subject is replaced.
        ca.sign_appliance_csr(&csr_for("unenrolled"), &me, false)
            .unwrap();
        let issued = ca
            .sign_appliance_csr(&csr_for("branch-1"), &me, true)
            .unwrap();
        assert!(issued.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(issued.serial.len(), 32);
        let days = (issued.not_after - OffsetDateTime::now_utc().unix_timestamp()) / 86_400;
        assert!((89..=90).contains(&days), "{days}");
    }
}
