//! `callgate-appliance sip call --sip-config FILE --trunk NAME --to NUMBER`: places one
//! test call through one trunk and prints the SIP ladder (with `--trace`, every message
//! in full). Answered calls are held for `--hold` seconds and hung up.

use super::config::SipSettings;
use super::udp::{DriverError, UdpTrunkRouter, WireRecord};
use callgate_sip::agent::AgentConfig;
use callgate_sip::trunk::router::DialEvent;
use callgate_sip::trunk::TrunkGroup;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How the test call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestCallOutcome {
    /// Answered, held and hung up.
    Completed,
    /// Not answered: the final status and reason.
    Failed(u16, String),
}

/// Why the test call could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestCallError {
    /// `--trunk` names no configured trunk.
    #[error("no trunk named `{0}` in the sip config")]
    UnknownTrunk(String),
    /// The driver failed.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// Nothing happened for too long.
    #[error("no answer from the SIP stack within {0:?}")]
    Stalled(Duration),
}

/// The options of one test call.
#[derive(Debug, Clone)]
pub struct TestCall {
    /// Trunk name.
    pub trunk: String,
    /// Number to call.
    pub to: String,
    /// Cancel if not answered in this time.
    pub ring_timeout: Duration,
    /// Hold an answered call this long.
    pub hold: Duration,
    /// Print whole messages, not just first lines.
    pub trace: bool,
}

fn ladder_line(start: Instant, w: &WireRecord, trace: bool) -> String {
    let text = String::from_utf8_lossy(&w.bytes);
    let first = text.lines().next().unwrap_or("");
    let arrow = if w.outbound { "->" } else { "<-" };
    let mut line = format!(
        "{:>8.3}s {arrow} {:<21} {:<3} {first}\n",
        w.at.duration_since(start).as_secs_f64(),
        w.peer.to_string(),
        w.transport.to_string()
    );
    if trace {
        for l in text.lines().skip(1) {
            let _ = writeln!(line, "           {l}");
        }
    }
    line
}

/// Places the call, printing the ladder through `print` as it happens.
pub async fn run(
    settings: &SipSettings,
    call: &TestCall,
    print: impl FnMut(&str),
) -> Result<TestCallOutcome, TestCallError> {
    let ip = settings.listen.ip();
    let sdp = format!(
        "v=0\r\no=callgate 1 1 IN IP4 {ip}\r\ns=test call\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 8\r\n"
    )
    .into_bytes();
    run_with_offer(settings, call, sdp, |_| {}, print).await
}

/// Like [`run`], offering `sdp` and handing the answer's body to `on_answer` the moment the
/// call is answered (the diagnostics page starts its media leg there).
pub async fn run_with_offer(
    settings: &SipSettings,
    call: &TestCall,
    sdp: Vec<u8>,
    mut on_answer: impl FnMut(Vec<u8>),
    mut print: impl FnMut(&str),
) -> Result<TestCallOutcome, TestCallError> {
    let trunk = settings
        .trunks
        .iter()
        .find(|t| t.name == call.trunk)
        .cloned()
        .ok_or_else(|| TestCallError::UnknownTrunk(call.trunk.clone()))?;
    let bind = SocketAddr::new(settings.listen.ip(), 0);
    // The trunk's own transport and TLS settings, on a fresh UDP port (the daemon may be
    // running on the configured one).
    let transports: Vec<_> = settings
        .links
        .iter()
        .filter(|l| l.name == trunk.name)
        .map(|l| (l.address, l.transport.clone()))
        .collect();
    let endpoint = callgate_sip_net::EndpointConfig {
        udp: vec![bind],
        tls_settings: settings.endpoint.tls_settings.clone(),
        tls_names: settings.endpoint.tls_names.clone(),
        streams: settings.endpoint.streams,
        trace: true,
        ..callgate_sip_net::EndpointConfig::default()
    };
    let mut router = UdpTrunkRouter::start_on(
        endpoint,
        AgentConfig {
            local: bind,
            user: settings.user.clone(),
            timers: settings.timers,
            credentials: None,
            seed: u64::from(std::process::id())
                ^ (std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0)),
        },
        TrunkGroup::new(vec![trunk]),
        callgate_sip::trunk::router::RouterConfig {
            probe: None,
            ..settings.router.clone()
        },
        &transports,
    )
    .await?;
    let Some(mut wire) = router.take_wire() else {
        return Err(DriverError::Stopped.into());
    };
    let start = Instant::now();
    let attempt = router.dial(&call.to, sdp, Some(call.ring_timeout)).await?;
    let stall = call.ring_timeout + call.hold + Duration::from_secs(40);
    let mut outcome = None;
    let mut hangup_at: Option<tokio::time::Instant> = None;
    loop {
        let hang = async {
            match hangup_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            w = wire.recv() => {
                if let Some(w) = w {
                    print(&ladder_line(start, &w, call.trace));
                }
            }
            e = router.next_event() => match e {
                Some(DialEvent::Answered { body, .. }) => {
                    on_answer(body);
                    print(&format!("answered; holding {:?}\n", call.hold));
                    hangup_at = Some(tokio::time::Instant::now() + call.hold);
                }
                Some(DialEvent::Failed { status, reason, .. }) => {
                    outcome = Some(TestCallOutcome::Failed(status, reason));
                }
                Some(DialEvent::Ended { .. }) => outcome = Some(TestCallOutcome::Completed),
                Some(_) => {}
                None => return Err(DriverError::Stopped.into()),
            },
            () = hang => {
                hangup_at = None;
                router.hang_up(attempt)?;
            }
            () = tokio::time::sleep(stall) => return Err(TestCallError::Stalled(stall)),
        }
        if let Some(o) = outcome.take() {
            // Let the last messages (ACK, 200 for BYE) reach the ladder.
            let flush_until = tokio::time::Instant::now() + Duration::from_millis(200);
            while let Ok(Some(w)) = tokio::time::timeout_at(flush_until, wire.recv()).await {
                print(&ladder_line(start, &w, call.trace));
            }
            return Ok(o);
        }
    }
}
