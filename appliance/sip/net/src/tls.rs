//! TLS settings for SIP over TLS (RFC 3261 §26.2.1, RFC 5630): rustls with the ring
//! provider only. Outbound connections check the peer's certificate against the roots
//! given (by the trunk's host name when known, else by its IP address); TLS listeners
//! present the appliance's certificate, and so do outbound connections to a carrier that
//! asks for a client certificate (mutual TLS). Our listeners do not ask phones for one.

use crate::error::TransportError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

/// Client and (optionally) server TLS configuration.
#[derive(Clone)]
pub struct TlsSettings {
    pub(crate) client: Arc<rustls::ClientConfig>,
    pub(crate) server: Option<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("server", &self.server.is_some())
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsSettings {
    /// Settings that trust the certificates in `roots_pem` (one or more PEM
    /// certificates) for outbound connections, and with `identity` (certificate chain
    /// PEM, private key PEM) serve TLS listeners and answer a carrier's request for a
    /// client certificate.
    pub fn new(
        roots_pem: &[u8],
        identity: Option<(&[u8], &[u8])>,
    ) -> Result<TlsSettings, TransportError> {
        let roots: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(roots_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| TransportError::Tls(format!("root certificates: {e}")))?;
        if roots.is_empty() {
            return Err(TransportError::Tls(
                "root certificates: no PEM certificate found".into(),
            ));
        }
        Self::with_roots(roots, identity)
    }

    /// Like [`Self::new`] with the roots already decoded (e.g. the system's store).
    /// Roots the store cannot use are skipped; none usable is an error.
    pub fn with_roots(
        roots_der: Vec<CertificateDer<'static>>,
        identity: Option<(&[u8], &[u8])>,
    ) -> Result<TlsSettings, TransportError> {
        let mut roots = rustls::RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(roots_der);
        if added == 0 {
            return Err(TransportError::Tls(
                "root certificates: no usable certificate found".into(),
            ));
        }
        Self::build(roots, identity)
    }

    /// Settings for an endpoint that only takes TLS connections (the agents' listener for
    /// desk phones): its listeners present `identity` (certificate chain PEM, private key
    /// PEM). It trusts no root, so a TLS connection it would open itself fails at the
    /// handshake: a phone is called back on the connection it registered over.
    pub fn serving(identity: (&[u8], &[u8])) -> Result<TlsSettings, TransportError> {
        Self::build(rustls::RootCertStore::empty(), Some(identity))
    }

    /// Whether listeners can serve TLS with these settings (a certificate and key).
    pub fn can_serve(&self) -> bool {
        self.server.is_some()
    }

    fn build(
        roots: rustls::RootCertStore,
        identity: Option<(&[u8], &[u8])>,
    ) -> Result<TlsSettings, TransportError> {
        let identity = match identity {
            None => None,
            Some((chain_pem, key_pem)) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
                    .collect::<Result<_, _>>()
                    .map_err(|e| TransportError::Tls(format!("certificate chain: {e}")))?;
                if chain.is_empty() {
                    return Err(TransportError::Tls(
                        "certificate chain: no PEM certificate found".into(),
                    ));
                }
                let key = PrivateKeyDer::from_pem_slice(key_pem)
                    .map_err(|e| TransportError::Tls(format!("private key: {e}")))?;
                Some((chain, key))
            }
        };
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TransportError::Tls(e.to_string()))?
            .with_root_certificates(roots);
        // A carrier that asks for a client certificate gets ours; one that does not never
        // sees it (rustls only sends it when asked).
        let client = match &identity {
            None => client.with_no_client_auth(),
            Some((chain, key)) => client
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| TransportError::Tls(format!("certificate and key: {e}")))?,
        };
        let server = match identity {
            None => None,
            Some((chain, key)) => {
                let config = rustls::ServerConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| TransportError::Tls(e.to_string()))?
                    .with_no_client_auth()
                    .with_single_cert(chain, key)
                    .map_err(|e| TransportError::Tls(format!("certificate and key: {e}")))?;
                Some(Arc::new(config))
            }
        };
        Ok(TlsSettings {
            client: Arc::new(client),
            server,
        })
    }
}
