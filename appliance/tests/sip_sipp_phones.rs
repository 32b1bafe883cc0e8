//! The appliance's registrar against a real SIPp phone through the tokio driver: a phone
//! answering the digest challenge is bound at the address it registered from; a phone
//! with the wrong password is not.

use callgate_appliance::sip::udp::UdpAgent;
use callgate_sip::agent::AgentConfig;
use callgate_sip::registrar::{PhoneAccount, Registrar, RegistrarConfig};
use callgate_sip::transaction::TimerConfig;
use std::time::Duration;

mod sip_support;
use sip_support::{free_udp_port, scenario, Sipp};

async fn appliance() -> UdpAgent {
    let ua = UdpAgent::start(
        "127.0.0.1:0".parse().unwrap(),
        AgentConfig {
            local: "127.0.0.1:0".parse().unwrap(),
            user: "branch".into(),
            timers: TimerConfig::default(),
            credentials: None,
            seed: std::process::id().into(),
        },
    )
    .await
    .unwrap();
    ua.set_registrar(Registrar::new(
        RegistrarConfig {
            // SIPp's digest answers MD5 only.
            algorithms: vec!["MD5".into()],
            ..RegistrarConfig::default()
        },
        vec![PhoneAccount {
            username: "desk1".into(),
            password: "pw1".into(),
        }],
    ))
    .unwrap();
    ua
}

async fn phone_registers(password: &str) -> (bool, Vec<(String, std::net::SocketAddr)>, u16) {
    let ua = appliance().await;
    let port = free_udp_port();
    let phone = Sipp::start_on(
        port,
        &[
            "-sf",
            &scenario("phone_register.xml"),
            &ua.local_addr().to_string(),
        ],
        &["-m", "1", "-au", "desk1", "-ap", password],
    );
    let (ok, _) = phone.passed().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    (ok, ua.bindings("desk1").await.unwrap(), port)
}

#[tokio::test]
async fn a_phone_with_the_right_password_is_bound_at_its_source_address() {
    let (ok, bindings, port) = phone_registers("pw1").await;
    assert!(ok, "SIPp got its 200");
    assert_eq!(bindings.len(), 1);
    assert_eq!(bindings[0].0, format!("sip:desk1@127.0.0.1:{port}"));
    assert_eq!(bindings[0].1.port(), port);
}

#[tokio::test]
async fn a_phone_with_the_wrong_password_is_not_bound() {
    let (ok, bindings, _) = phone_registers("wrong").await;
    assert!(!ok, "SIPp was challenged again instead of accepted");
    assert!(bindings.is_empty());
}
