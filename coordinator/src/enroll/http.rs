//! The enrollment endpoint: `POST /v1/enroll` with `{"claim": CODE, "csr": PEM}` answers
//! `{"appliance", "certificate", "ca", "broker"}`. Refusals are `application/problem+json`
//! whose `type` names the case, so the box can say exactly what went wrong:
//! `claim-unknown` (403), `claim-used` (409), `claim-expired` (410), `already-enrolled`
//! (409), `revoked` (403), `bad-csr` (400).
//!
//! Served over HTTPS on its own listener ([`serve_tls`], certificate from the organisation
//! CA) and mountable on the main router ([`router`]) behind a TLS-terminating proxy.

use super::pki::OrgCa;
use super::registry;
use super::EnrollError;
use crate::store::Store;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use callgate_common::time::UnixMillis;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// What the enrollment handler needs.
#[derive(Clone)]
pub struct EnrollState {
    /// The database.
    pub store: Store,
    /// The organisation CA.
    pub ca: Arc<OrgCa>,
    /// The broker address to hand to enrolled boxes (`host:port`).
    pub broker: Option<String>,
}

/// The request body.
#[derive(Debug, Deserialize, Serialize)]
pub struct EnrollRequest {
    /// The one-time claim code HQ gave the technician.
    pub claim: String,
    /// The box's CSR, PEM.
    pub csr: String,
}

/// The success body.
#[derive(Debug, Deserialize, Serialize)]
pub struct EnrollResponse {
    /// The appliance id the certificate names.
    pub appliance: String,
    /// The signed certificate, PEM.
    pub certificate: String,
    /// The organisation CA, PEM.
    pub ca: String,
    /// The broker's `host:port`.
    pub broker: Option<String>,
}

impl IntoResponse for EnrollError {
    fn into_response(self) -> Response {
        let (status, kind) = match &self {
            EnrollError::ClaimUnknown => (StatusCode::FORBIDDEN, "claim-unknown"),
            EnrollError::ClaimUsed => (StatusCode::CONFLICT, "claim-used"),
            EnrollError::ClaimExpired => (StatusCode::GONE, "claim-expired"),
            EnrollError::AlreadyEnrolled(_) => (StatusCode::CONFLICT, "already-enrolled"),
            EnrollError::Revoked(_) => (StatusCode::FORBIDDEN, "revoked"),
            EnrollError::Certificate(_) | EnrollError::WrongSubject { .. } => {
                (StatusCode::BAD_REQUEST, "bad-csr")
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        if status.is_server_error() {
            tracing::error!(error = %self, "enrollment failed");
        } else {
            tracing::warn!(error = %self, "enrollment refused");
        }
        let body = serde_json::json!({
            "type": kind,
            "title": self.to_string(),
            "status": status.as_u16(),
        });
        (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response()
    }
}

async fn enroll(
    State(state): State<EnrollState>,
    Json(req): Json<EnrollRequest>,
) -> Result<Json<EnrollResponse>, EnrollError> {
    let (name, issued) = registry::enroll(
        state.store.pool(),
        &state.ca,
        &req.claim,
        &req.csr,
        UnixMillis::now(),
    )
    .await?;
    tracing::info!(appliance = %name, serial = %issued.serial, "appliance enrolled");
    Ok(Json(EnrollResponse {
        appliance: name.to_string(),
        certificate: issued.cert_pem,
        ca: state.ca.cert_pem().to_string(),
        broker: state.broker.clone(),
    }))
}

/// The enrollment routes.
pub fn router(state: EnrollState) -> Router {
    Router::new()
        .route("/v1/enroll", post(enroll))
        .with_state(state)
}

/// A TLS listener for axum: handshakes that fail or stall are logged and skipped.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.tcp.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "enrollment accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match tokio::time::timeout(Duration::from_secs(10), self.acceptor.accept(stream)).await
            {
                Ok(Ok(tls)) => return (tls, addr),
                Ok(Err(e)) => tracing::warn!(%addr, error = %e, "enrollment TLS handshake failed"),
                Err(_) => tracing::warn!(%addr, "enrollment TLS handshake timed out"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// Binds `listen` with a server certificate from the organisation CA (for `listen`'s IP
/// and `names`), ring provider only.
pub async fn bind_tls(
    ca: &OrgCa,
    listen: SocketAddr,
    names: &[String],
) -> Result<TlsListener, EnrollError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut all = names.to_vec();
    all.push(listen.ip().to_string());
    let (cert, key) = ca.issue_server(&all)?;
    let tls_err = |e: &dyn std::fmt::Display| EnrollError::Certificate(e.to_string());
    let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).map_err(|e| tls_err(&e))?];
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| tls_err(&e))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls_err(&e))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| tls_err(&e))?;
    let tcp = TcpListener::bind(listen)
        .await
        .map_err(|e| EnrollError::File {
            path: listen.to_string().into(),
            reason: e.to_string(),
        })?;
    Ok(TlsListener {
        tcp,
        acceptor: TlsAcceptor::from(Arc::new(config)),
    })
}
