//! Call-task webhooks over https://, against a real TLS receiver on loopback (rustls with
//! ring, a certificate from a private CA): delivered and signed when the receiver's
//! certificate verifies against a trusted CA, refused (and retried, the error visible)
//! when it does not.

mod common;

use axum::http::HeaderMap;
use callgate_common::time::UnixMillis;
use callgate_coordinator::call_tasks::{
    self, webhook_client, DeliverySchedule, NewCallTask, TaskOutcome, TaskResult,
};
use common::{fresh_store, BACKENDS};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::{Arc, Mutex};

/// A private CA (PEM) and an https receiver on 127.0.0.1 whose certificate it issued;
/// the receiver records each request's signature header and body.
async fn receiver() -> (String, String, Arc<Mutex<Vec<(String, String)>>>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let log = log.clone();
            async move {
                let sig = headers
                    .get("x-callgate-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                log.lock().unwrap().push((sig, body));
                "ok"
            }
        }),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config));
    tokio::spawn(async move {
        axum_server::from_tcp_rustls(listener, tls)
            .unwrap()
            .serve(app.into_make_service())
            .await
            .unwrap();
    });
    (ca.pem(), format!("https://{addr}/hook"), seen)
}

#[tokio::test]
async fn an_https_callback_is_delivered_when_its_certificate_verifies_and_retried_when_not() {
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let (ca_pem, url, seen) = receiver().await;
        let task = call_tasks::create(
            &t.store,
            NewCallTask {
                customer_id: "cust-9".into(),
                script_id: "renewal".into(),
                callback_url: url.clone(),
                max_retries: 1,
                preferred_time: None,
            },
        )
        .await
        .unwrap();
        let secret = task.callback_secret.clone().unwrap();
        call_tasks::record_result(
            &t.store,
            task.id,
            TaskResult {
                outcome: TaskOutcome::Completed,
                detail: "renewed".into(),
                attempts: 1,
            },
        )
        .await
        .unwrap();
        let schedule = DeliverySchedule {
            base_ms: 1,
            cap_ms: 1,
            max_attempts: 5,
        };
        let far = UnixMillis::now().plus_millis(3_600_000);

        // The system's roots do not know the private CA: refused, kept pending, error shown.
        let untrusting = webhook_client(None).unwrap();
        call_tasks::deliver_due(&t.store, &untrusting, schedule, far)
            .await
            .unwrap();
        let d = call_tasks::get(&t.store, task.id)
            .await
            .unwrap()
            .delivery
            .unwrap();
        assert_eq!(
            (d.state.as_str(), d.attempts),
            ("pending", 1),
            "{backend:?}"
        );
        assert!(d.last_error.is_some(), "{backend:?}: {d:?}");
        assert!(
            seen.lock().unwrap().is_empty(),
            "nothing reached the receiver"
        );

        // Trusting the CA: delivered over TLS, signed with the task's secret.
        let trusting = webhook_client(Some(ca_pem.as_bytes())).unwrap();
        call_tasks::deliver_due(&t.store, &trusting, schedule, far.plus_millis(10))
            .await
            .unwrap();
        let d = call_tasks::get(&t.store, task.id)
            .await
            .unwrap()
            .delivery
            .unwrap();
        assert_eq!(
            (d.state.as_str(), d.attempts),
            ("delivered", 2),
            "{backend:?}: {d:?}"
        );
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "{backend:?}");
        let (sig, body) = &seen[0];
        let ts: i64 = sig
            .strip_prefix("t=")
            .and_then(|s| s.split(',').next())
            .and_then(|s| s.parse().ok())
            .unwrap();
        assert_eq!(sig, &call_tasks::signature(&secret, ts, body.as_bytes()));
        assert!(body.contains("renewed"), "{body}");
    }
}

#[test]
fn a_bad_extra_ca_is_refused_by_name() {
    let err = webhook_client(Some(
        b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("webhook_ca"), "{err}");
}
