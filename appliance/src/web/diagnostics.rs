//! The diagnostics page: a test call through one configured trunk, with the SIP ladder as it
//! happened (the same procedure as `callgate-appliance sip call`, on its own ephemeral
//! port, so it never disturbs the calls the engine carries), and a SIP trace switched on for
//! a few minutes: every SIP message the box sends or receives goes to the log (the Logs page
//! filters it by trunk address or Call-ID), then the configured log level comes back.
//!
//! Also: ping to the carrier (ICMP through the system's `ping` from iputils-ping, its
//! summary parsed) and the tech audio port's test (a tone played, then a second recorded and
//! its level shown; needs the `alsa` build feature and the port itself).
//!
//! Listening to a call in progress on the tech port's headset: the calls whose media the
//! box relays (`crate::call_tap`) are offered by masked number; the chosen one is played on
//! the headset, both sides mixed, until the technician stops or the call ends
//! (`super::headset::run_listening`). Listen-only: nothing reaches the call.
//!
//! Must not: change the SIP configuration or touch calls in progress (listening only
//! copies a call's audio).

use super::headset::{HeadsetSwitch, PatchedCall};
use super::pages::{render, require_form_session, require_session, Guarded, PageFrame};
use super::WebState;
use crate::media::{run_audio_leg, LegReport, MediaError, RtpLeg};
use crate::sip::call::{self, TestCall, TestCallOutcome};
use askama::Template;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use callgate_common::time::UnixMillis;
use callgate_media::g711::Codec;
use callgate_media::sdp::{
    accept_answer, create_offer, Direction as MediaDirection, LocalMedia, SessionDescription,
};
use callgate_media::tone::ToneGenerator;
use serde::Deserialize;
use std::net::IpAddr;
use std::time::Duration;

#[derive(Template)]
#[template(path = "diagnostics.html")]
struct DiagnosticsPage {
    page: PageFrame,
    csrf: String,
    /// Configured trunk names (empty: SIP is not configured).
    trunks: Vec<String>,
    /// The form's values, kept after a run or a refusal.
    trunk: String,
    to: String,
    ring_seconds: String,
    hold_seconds: String,
    /// The last run's result line, ladder and audio quality.
    outcome: Option<String>,
    ladder: String,
    audio: Option<String>,
    /// `Some(until)` while the SIP trace is on.
    trace_until: Option<String>,
    /// What the running trace covers ("every SIP message", "trunk carrier-b", "call X").
    trace_scope: String,
    /// The ping form's host (default: the first trunk's address) and the last result.
    ping_host: String,
    ping_hosts: Vec<String>,
    ping_result: Option<String>,
    /// The audio test's device and its last result.
    audio_device: String,
    audio_result: Option<String>,
    /// The test call form's headset device; whether a patch runs now.
    headset: String,
    headset_on: bool,
    /// Calls one can listen to now, as (call id, label); the listen form's device; what the
    /// headset does or last did.
    listenable: Vec<(String, String)>,
    listen_device: String,
    headset_note: Option<String>,
}

/// The calls one can listen to now, as (call id, label), for the listen forms.
pub(super) fn listenable_calls() -> Vec<(String, String)> {
    crate::call_tap::live()
        .calls()
        .iter()
        .map(|c| (c.call.to_string(), listen_label(c)))
        .collect()
}

/// A listenable call as the page names it: masked number, what it is, since when.
fn listen_label(c: &crate::call_tap::ListenableCall) -> String {
    let since = UnixMillis::now().plus_millis(-(c.since.elapsed().as_millis() as i64));
    format!(
        "{} — {}, since {}",
        c.number.as_deref().unwrap_or("number unknown"),
        c.what,
        super::status::utc_seconds(since)
    )
}

fn page_for(state: &WebState, csrf: &str, frame: PageFrame) -> DiagnosticsPage {
    let settings = state.sip_settings();
    let trunks: Vec<String> = settings
        .as_ref()
        .map(|s| s.trunks.iter().map(|t| t.name.clone()).collect())
        .unwrap_or_default();
    let mut ping_hosts: Vec<String> = settings
        .map(|s| {
            s.trunks
                .iter()
                .map(|t| t.address.ip().to_string())
                .collect()
        })
        .unwrap_or_default();
    ping_hosts.dedup();
    DiagnosticsPage {
        page: frame,
        csrf: csrf.to_string(),
        trunk: trunks.first().cloned().unwrap_or_default(),
        trunks,
        to: String::new(),
        ring_seconds: "20".into(),
        hold_seconds: "2".into(),
        outcome: None,
        ladder: String::new(),
        audio: None,
        trace_until: state.sip_trace.until().map(super::status::utc_seconds),
        trace_scope: state
            .sip_trace
            .scope()
            .unwrap_or_else(|| "every SIP message".into()),
        ping_host: ping_hosts.first().cloned().unwrap_or_default(),
        ping_hosts,
        ping_result: None,
        audio_device: "default".into(),
        audio_result: None,
        headset: String::new(),
        headset_on: state.headset.is_running(),
        listenable: listenable_calls(),
        listen_device: "default".into(),
        headset_note: state.headset.note(),
    }
}

/// `GET /diagnostics`.
pub(super) async fn diagnostics_page(State(state): State<WebState>, headers: HeaderMap) -> Guarded {
    let (_, session) = require_session(&state, &headers).await?;
    let frame = PageFrame::new(&state, Some(&session));
    Ok(render(
        StatusCode::OK,
        &page_for(&state, &session.csrf_token, frame),
    ))
}

/// The test-call form.
#[derive(Deserialize)]
pub(super) struct TestCallForm {
    csrf: String,
    trunk: String,
    to: String,
    ring_seconds: String,
    hold_seconds: String,
    /// An ALSA device to patch the call to (listen and talk on the headset); empty: none.
    #[serde(default)]
    headset: String,
}

/// The test call the form asks for, or the message naming the field at fault.
fn parse_form(f: &TestCallForm, trunks: &[String]) -> Result<TestCall, String> {
    if !trunks.iter().any(|t| t == &f.trunk) {
        return Err(format!(
            "Trunk: no trunk named `{}` is configured.",
            f.trunk
        ));
    }
    let to = f.to.trim();
    let digits = to.strip_prefix('+').unwrap_or(to);
    if digits.is_empty() || digits.len() > 20 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(
            "Number: digits only, optionally starting with +, at most 20 (e.g. +442079460958)."
                .into(),
        );
    }
    let seconds = |name: &str, value: &str, max: u64| -> Result<u64, String> {
        match value.trim().parse::<u64>() {
            Ok(n) if n <= max => Ok(n),
            _ => Err(format!(
                "{name}: a whole number of seconds from 0 to {max}."
            )),
        }
    };
    let ring = seconds("Ring timeout", &f.ring_seconds, 60)?;
    if ring == 0 {
        return Err("Ring timeout: at least 1 second.".into());
    }
    let hold = seconds("Hold", &f.hold_seconds, 30)?;
    Ok(TestCall {
        trunk: f.trunk.clone(),
        to: to.to_string(),
        ring_timeout: Duration::from_secs(ring),
        hold: Duration::from_secs(hold),
        trace: false,
    })
}

/// `POST /diagnostics/call`: places the test call and shows its ladder.
pub(super) async fn test_call_submit(
    State(state): State<WebState>,
    headers: HeaderMap,
    Form(f): Form<TestCallForm>,
) -> Guarded {
    let (_, session) = require_form_session(&state, &headers, &f.csrf).await?;
    let mut page = page_for(
        &state,
        &session.csrf_token,
        PageFrame::new(&state, Some(&session)),
    );
    page.trunk = f.trunk.clone();
    page.to = f.to.trim().to_string();
    page.ring_seconds = f.ring_seconds.trim().to_string();
    page.hold_seconds = f.hold_seconds.trim().to_string();
    let Some(settings) = state.sip_settings() else {
        page.page = page
            .page
            .error("SIP is not configured on this box (no [sip] section).");
        return Err(render(StatusCode::BAD_REQUEST, &page));
    };
    let test = match parse_form(&f, &page.trunks) {
        Ok(t) => t,
        Err(message) => {
            page.page = page.page.error(message);
            return Err(render(StatusCode::BAD_REQUEST, &page));
        }
    };
    tracing::info!(user = %session.username, trunk = %test.trunk, "test call from the web UI");
    let mut ladder = String::new();
    let shown = TestCallShown::new(
        &state.engine.test_calls,
        format!("test call to {} via {} (diagnostics)", test.to, test.trunk),
    );
    page.headset = f.headset.trim().to_string();
    let headset = if page.headset.is_empty() {
        None
    } else {
        match open_headset(&state.headset, &page.headset).await {
            Ok(h) => Some(h),
            Err(message) => {
                page.page = page.page.error(message);
                return Err(render(StatusCode::BAD_REQUEST, &page));
            }
        }
    };
    let mut audio = TestCallAudio::prepare(&settings, &test).await;
    audio.headset = headset;
    let offer = audio.offer_body();
    let result = call::run_with_offer(
        &settings,
        &test,
        offer,
        |answer| audio.answered(&answer, test.hold),
        |line| ladder.push_str(line),
    )
    .await;
    page.audio = audio.report(test.hold).await;
    drop(shown);
    page.ladder = ladder;
    page.outcome = Some(match result {
        Ok(TestCallOutcome::Completed) => "Answered and completed.".into(),
        Ok(TestCallOutcome::Failed(status, reason)) => {
            format!("Not answered: {status} {reason}.")
        }
        Err(e) => format!("The test call could not run: {e}."),
    });
    Ok(render(StatusCode::OK, &page))
}

/// The test call's media: an RTP leg on an ephemeral port pair beside the engine's range;
/// once the call is answered it sends a 1 kHz tone for the hold time and measures what comes
/// back (loss and jitter as received, RTCP from the far end, an E-model MOS).
struct TestCallAudio {
    offer: Option<SessionDescription>,
    sockets: Option<(tokio::net::UdpSocket, tokio::net::UdpSocket)>,
    leg: Option<tokio::task::JoinHandle<Result<LegReport, MediaError>>>,
    /// Why there is no audio measurement.
    problem: Option<String>,
    /// The headset to patch the call to, once answered.
    headset: Option<Headset>,
    /// The patched call's media, while it runs.
    patched: Option<tokio::task::JoinHandle<PatchedCall>>,
}

/// An opened headset patch and its stop signal.
#[cfg(feature = "alsa")]
type Headset = (
    callgate_board::tech_audio::HeadsetPatch,
    tokio::sync::watch::Receiver<bool>,
);
/// No headset without the `alsa` feature.
#[cfg(not(feature = "alsa"))]
type Headset = std::convert::Infallible;

/// Opens the headset `device` for a patch (one at a time), or says why not.
async fn open_headset(switch: &HeadsetSwitch, device: &str) -> Result<Headset, String> {
    let device = check_device(device)?;
    let Some(stop) = switch.begin() else {
        return Err("Headset: a call is already patched to the headset.".into());
    };
    start_patch(device, stop).await
}

#[cfg(feature = "alsa")]
async fn start_patch(
    device: String,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Headset, String> {
    let patch = tokio::task::spawn_blocking(move || {
        callgate_board::tech_audio::HeadsetPatch::start(&device, &device, 160)
    })
    .await
    .map_err(|e| format!("Headset: {e}."))?
    .map_err(|e| format!("Headset: {e}."))?;
    Ok((patch, stop))
}

#[cfg(not(feature = "alsa"))]
async fn start_patch(
    _device: String,
    _stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Headset, String> {
    Err(
        "Headset: this firmware was built without tech audio port support (the `alsa` \
         build feature)."
            .into(),
    )
}

/// Binds an RTP/RTCP pair (even port, the next one up) on `ip`, ports chosen by the system.
fn bind_pair(ip: IpAddr) -> std::io::Result<(tokio::net::UdpSocket, tokio::net::UdpSocket)> {
    for _ in 0..64 {
        let rtp = std::net::UdpSocket::bind((ip, 0))?;
        let port = rtp.local_addr()?.port();
        if port % 2 != 0 || port == u16::MAX {
            continue;
        }
        let Ok(rtcp) = std::net::UdpSocket::bind((ip, port + 1)) else {
            continue;
        };
        rtp.set_nonblocking(true)?;
        rtcp.set_nonblocking(true)?;
        return Ok((
            tokio::net::UdpSocket::from_std(rtp)?,
            tokio::net::UdpSocket::from_std(rtcp)?,
        ));
    }
    Err(std::io::Error::other("no free even/odd UDP port pair"))
}

impl TestCallAudio {
    async fn prepare(settings: &crate::sip::config::SipSettings, test: &TestCall) -> Self {
        let mut ip = settings.listen.ip();
        if ip.is_unspecified() {
            // The address the system would use towards the carrier (no packet is sent).
            let towards = settings
                .trunks
                .iter()
                .find(|t| t.name == test.trunk)
                .map(|t| t.address);
            if let Some(addr) = towards {
                if let Ok(probe) = std::net::UdpSocket::bind((ip, 0)) {
                    if probe.connect(addr).is_ok() {
                        if let Ok(local) = probe.local_addr() {
                            ip = local.ip();
                        }
                    }
                }
            }
        }
        let sockets = match bind_pair(ip) {
            Ok(s) => s,
            Err(e) => {
                return TestCallAudio {
                    offer: None,
                    sockets: None,
                    leg: None,
                    problem: Some(format!("no media port for the test call: {e}")),
                    headset: None,
                    patched: None,
                }
            }
        };
        let rtp_port = sockets.0.local_addr().map(|a| a.port()).unwrap_or(0);
        let offer = create_offer(&LocalMedia {
            address: ip,
            rtp_port,
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            telephone_event: false,
            ptime_ms: 20,
            direction: MediaDirection::SendRecv,
            session_id: u64::from(rtp_port),
            session_version: 1,
            srtp: None,
        });
        TestCallAudio {
            offer: Some(offer),
            sockets: Some(sockets),
            leg: None,
            problem: None,
            headset: None,
            patched: None,
        }
    }

    /// The SDP offer (a media-less one when no port could be bound).
    fn offer_body(&self) -> Vec<u8> {
        match &self.offer {
            Some(o) => o.to_string().into_bytes(),
            None => b"v=0\r\no=callgate 1 1 IN IP4 0.0.0.0\r\ns=test call\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 0 RTP/AVP 0 8\r\n".to_vec(),
        }
    }

    /// The call was answered with `body`: start the leg for `hold`.
    fn answered(&mut self, body: &[u8], hold: Duration) {
        let (Some(offer), Some(sockets)) = (&self.offer, self.sockets.take()) else {
            return;
        };
        let negotiated = std::str::from_utf8(body)
            .map_err(|e| e.to_string())
            .and_then(|text| SessionDescription::parse(text).map_err(|e| e.to_string()))
            .and_then(|answer| accept_answer(offer, &answer).map_err(|e| e.to_string()));
        let audio = match negotiated {
            Ok(a) => a,
            Err(e) => {
                self.problem = Some(format!("the answer's SDP could not be used: {e}"));
                return;
            }
        };
        let leg = match RtpLeg::new(sockets, &audio) {
            Ok(leg) => leg.with_rtcp_interval(Duration::from_secs(1)),
            Err(e) => {
                self.problem = Some(format!("no media leg: {e}"));
                return;
            }
        };
        let frame = audio.ptime_ms.max(10) as usize * 8;
        let frames = (hold.as_millis() as usize / (frame / 8)).max(1);
        if let Some(headset) = self.headset.take() {
            #[cfg(feature = "alsa")]
            {
                let (patch, stop) = headset;
                let (out_tx, out_rx) = tokio::sync::mpsc::channel(4);
                let (in_tx, in_rx) = tokio::sync::mpsc::channel(64);
                self.patched = Some(tokio::spawn(super::headset::run_patched(
                    patch, frame, frames, out_tx, in_rx, stop,
                )));
                self.leg = Some(tokio::spawn(run_audio_leg(leg, out_rx, in_tx)));
                return;
            }
            #[cfg(not(feature = "alsa"))]
            match headset {}
        }
        let (out_tx, out_rx) = tokio::sync::mpsc::channel(frames);
        let mut tone = ToneGenerator::new(1_000.0, 8_000);
        for _ in 0..frames {
            let _ = out_tx.try_send(tone.next_samples(frame));
        }
        drop(out_tx);
        let (in_tx, mut in_rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move { while in_rx.recv().await.is_some() {} });
        self.leg = Some(tokio::spawn(run_audio_leg(leg, out_rx, in_tx)));
    }

    /// What the leg measured, once it ended; `None` when the call was not answered.
    async fn report(mut self, hold: Duration) -> Option<String> {
        // Not answered: the opened headset is closed again.
        #[cfg(feature = "alsa")]
        if let Some((patch, _)) = self.headset.take() {
            let _ = tokio::task::spawn_blocking(move || patch.stop()).await;
        }
        let headset = match self.patched.take() {
            Some(task) => match tokio::time::timeout(hold + Duration::from_secs(5), task).await {
                Ok(Ok(patched)) => Some(patched.describe()),
                _ => Some("Headset: the patch did not finish.".into()),
            },
            None => None,
        };
        let line = self.measured(hold).await;
        match (line, headset) {
            (Some(l), Some(h)) => Some(format!(
                "{} {h}",
                l.replace("of a 1 kHz tone", "from the headset's microphone")
            )),
            (l, h) => l.or(h),
        }
    }

    async fn measured(self, hold: Duration) -> Option<String> {
        if let Some(problem) = self.problem {
            return Some(format!("Audio not measured: {problem}."));
        }
        let leg = self.leg?;
        match tokio::time::timeout(hold + Duration::from_secs(5), leg).await {
            Ok(Ok(Ok(report))) => Some(describe_audio(&report)),
            Ok(Ok(Err(e))) => Some(format!("Audio not measured: the media leg failed: {e}.")),
            Ok(Err(e)) => Some(format!("Audio not measured: the media leg stopped: {e}.")),
            Err(_) => Some("Audio not measured: the media leg did not finish.".into()),
        }
    }
}

/// One line on the test call's audio: what we sent, what came back, what the far end's
/// RTCP said, and the MOS estimate.
pub fn describe_audio(r: &LegReport) -> String {
    let sent = format!("Audio: sent {} packets of a 1 kHz tone", r.packets_sent);
    let remote = match &r.remote_reception {
        Some(rr) => format!(
            "the far end's RTCP reports {:.1}% of ours lost, jitter {:.1} ms{}",
            rr.fraction_lost * 100.0,
            rr.jitter_ms,
            rr.round_trip
                .map(|t| format!(", round trip {:.1} ms", t.as_secs_f64() * 1_000.0))
                .unwrap_or_default()
        ),
        None => "no RTCP report came from the far end".into(),
    };
    if r.receive.received == 0 {
        return format!(
            "{sent}; no audio came back from the far end (it sent no RTP), so there is no \
             quality estimate; {remote}."
        );
    }
    let expected = r.receive.expected.max(r.receive.received);
    let lost = r.receive.lost.max(0) as f64;
    format!(
        "{sent}; received {} of {expected} packets ({:.1}% lost), jitter {:.1} ms; {remote}; \
         estimated MOS {:.2} (R {:.0}).",
        r.receive.received,
        lost * 100.0 / expected as f64,
        r.receive.jitter_ms,
        r.quality.mos,
        r.quality.r_factor
    )
}

/// A test call listed on the status page while it runs (removed when dropped, however
/// the call ends).
struct TestCallShown<'a> {
    calls: &'a tokio::sync::watch::Sender<Vec<String>>,
    what: String,
}

impl<'a> TestCallShown<'a> {
    fn new(calls: &'a tokio::sync::watch::Sender<Vec<String>>, what: String) -> Self {
        calls.send_modify(|c| c.push(what.clone()));
        TestCallShown { calls, what }
    }
}

impl Drop for TestCallShown<'_> {
    fn drop(&mut self) {
        self.calls.send_modify(|c| {
            if let Some(i) = c.iter().position(|w| *w == self.what) {
                c.remove(i);
            }
        });
    }
}

/// The log directives that make the SIP engine log every message.
pub const SIP_TRACE_DIRECTIVES: &str = "callgate_appliance::sip=trace,callgate_sip=trace";

/// Whether the SIP trace is on, until when and for what; each switch-on gets a generation so
/// that an earlier timer does not switch a later trace off.
#[derive(Debug, Clone, Default)]
pub struct SipTraceSwitch {
    inner: std::sync::Arc<std::sync::Mutex<TraceState>>,
}

#[derive(Debug, Default)]
struct TraceState {
    generation: u64,
    until: Option<UnixMillis>,
    /// `None`: box-wide (the log filter was widened); `Some(label)`: a scoped trace armed in
    /// `callgate_sip_net::trace`.
    scope: Option<String>,
}

impl SipTraceSwitch {
    fn state(&self) -> std::sync::MutexGuard<'_, TraceState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When the running trace ends, if one runs.
    pub fn until(&self) -> Option<UnixMillis> {
        self.state().until
    }

    /// What a running scoped trace covers (`None`: none runs, or it covers everything).
    pub fn scope(&self) -> Option<String> {
        let g = self.state();
        g.until.and(g.scope.clone())
    }

    /// Records a trace running until `until` (scoped to `scope`, or box-wide); returns its
    /// generation.
    fn start(&self, until: UnixMillis, scope: Option<String>) -> u64 {
        let mut g = self.state();
        g.generation += 1;
        g.until = Some(until);
        g.scope = scope;
        g.generation
    }

    /// Ends the trace of `generation` (any trace when `None`) and undoes what switched it on
    /// (the widened log filter, or the armed scope); whether one was ended.
    fn stop(&self, generation: Option<u64>) -> bool {
        let mut g = self.state();
        if generation.is_some_and(|gen| gen != g.generation) || g.until.is_none() {
            return false;
        }
        g.until = None;
        if g.scope.take().is_some() {
            callgate_sip_net::trace::disarm();
        } else if let Err(e) = callgate_common::observe::reset_log_filter() {
            tracing::error!(error = %e, "could not restore the log filter");
        }
        true
    }
}

/// What the trace form asked for: everything, one trunk, or one call.
fn trace_scope_of(
    f: &TraceForm,
    settings: Option<&crate::sip::config::SipSettings>,
) -> Result<Option<callgate_sip_net::trace::TraceScope>, String> {
    use callgate_sip_net::trace::{PeerMatch, TraceScope};
    let scope = f.scope.as_deref().unwrap_or("all").trim();
    if scope == "all" {
        return Ok(None);
    }
    if scope == "call" {
        let id = f.call_id.as_deref().unwrap_or("").trim();
        if id.is_empty() || id.len() > 256 || id.chars().any(char::is_whitespace) {
            return Err(
                "Call-ID: paste the call's Call-ID (from a ladder or the log), one word of at most 256 characters."
                    .into(),
            );
        }
        return Ok(Some(TraceScope::Call(id.to_owned())));
    }
    let Some(name) = scope.strip_prefix("trunk:") else {
        return Err(format!(
            "Trace scope: `{scope}` is not one the form offers."
        ));
    };
    let trunks = settings.map(|s| s.trunks.as_slice()).unwrap_or_default();
    let Some(trunk) = trunks.iter().find(|t| t.name == name) else {
        return Err(format!(
            "Trace scope: no trunk named `{name}` is configured."
        ));
    };
    // The IP alone names the trunk unless another trunk shares it; then the port too.
    let shared = trunks
        .iter()
        .any(|t| t.name != trunk.name && t.address.ip() == trunk.address.ip());
    Ok(Some(TraceScope::Trunk {
        name: trunk.name.clone(),
        peers: vec![PeerMatch {
            ip: trunk.address.ip(),
            port: shared.then_some(trunk.address.port()),
        }],
    }))
}

/// The SIP-trace form.
#[derive(Deserialize)]
pub(super) struct TraceForm {
    csrf: String,
    /// Minutes, 1 to 60; `0` switches it off now.
    minutes: String,
    /// `all` (every SIP message, the default), `trunk:NAME` or `call`.
    scope: Option<String>,
    /// The Call-ID, for `scope=call`.
    call_id: Option<String>,
}

/// `POST /diagnostics/trace`: switches the SIP trace on for some minutes, or off.
pub(super) async fn trace_submit(
    State(state): State<WebState>,
    headers: HeaderMap,
    Form(f): Form<TraceForm>,
) -> Guarded {
    let (_, session) = require_form_session(&state, &headers, &f.csrf).await?;
    let frame = PageFrame::new(&state, Some(&session));
    let minutes = match f.minutes.trim().parse::<u64>() {
        Ok(m) if m <= 60 => m,
        _ => {
            let page = page_for(
                &state,
                &session.csrf_token,
                frame.error("Trace minutes: a whole number from 0 (off) to 60."),
            );
            return Err(render(StatusCode::BAD_REQUEST, &page));
        }
    };
    if minutes == 0 {
        if state.sip_trace.stop(None) {
            tracing::warn!(user = %session.username, "SIP trace switched off");
        }
        let page = page_for(
            &state,
            &session.csrf_token,
            frame.notice("SIP trace is off."),
        );
        return Ok(render(StatusCode::OK, &page));
    }
    let scope = match trace_scope_of(&f, state.sip_settings().as_ref()) {
        Ok(scope) => scope,
        Err(why) => {
            let page = page_for(&state, &session.csrf_token, frame.error(why));
            return Err(render(StatusCode::BAD_REQUEST, &page));
        }
    };
    // A new trace replaces the running one.
    state.sip_trace.stop(None);
    let label = scope.as_ref().map(|s| s.label());
    match scope {
        Some(scope) => callgate_sip_net::trace::arm(
            scope,
            std::time::Instant::now() + Duration::from_secs(minutes * 60),
        ),
        None => {
            if let Err(e) = callgate_common::observe::extend_log_filter(SIP_TRACE_DIRECTIVES) {
                let page = page_for(
                    &state,
                    &session.csrf_token,
                    frame.error(format!("Could not switch the trace on: {e}")),
                );
                return Err(render(StatusCode::INTERNAL_SERVER_ERROR, &page));
            }
        }
    }
    let until = UnixMillis::now().plus_millis(i64::try_from(minutes * 60_000).unwrap_or(i64::MAX));
    let generation = state.sip_trace.start(until, label.clone());
    let what = label.unwrap_or_else(|| "every SIP message".into());
    tracing::warn!(user = %session.username, minutes, scope = %what, "SIP trace switched on");
    let switch = state.sip_trace.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(minutes * 60)).await;
        if switch.stop(Some(generation)) {
            tracing::warn!("SIP trace ended");
        }
    });
    let page = page_for(
        &state,
        &session.csrf_token,
        frame.notice(format!(
            "SIP trace is on for {minutes} minute(s): {what} goes to the log in full."
        )),
    );
    Ok(render(StatusCode::OK, &page))
}

/// What one ping run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct PingReport {
    /// Echo requests sent.
    pub transmitted: u32,
    /// Replies received.
    pub received: u32,
    /// Loss in percent, as ping computed it.
    pub loss_percent: f64,
    /// Round-trip min/avg/max in ms, when any reply came.
    pub rtt_ms: Option<(f64, f64, f64)>,
}

impl std::fmt::Display for PingReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} sent, {} received, {}% loss",
            self.transmitted, self.received, self.loss_percent
        )?;
        match self.rtt_ms {
            Some((min, avg, max)) => {
                write!(f, "; round trip min/avg/max {min:.3}/{avg:.3}/{max:.3} ms")
            }
            None => write!(f, "; no reply"),
        }
    }
}

/// Why the ping could not be run or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PingError {
    /// The host field is empty or not a host name or IP literal.
    #[error("Host: `{0}` is not a host name or IP address.")]
    BadHost(String),
    /// The name does not resolve on this box.
    #[error("Host `{0}` is unknown: the box's DNS cannot resolve it (check the Network page).")]
    UnknownHost(String),
    /// `ping` is not on the box.
    #[error("`ping` is not installed on this box (package iputils-ping).")]
    NotInstalled,
    /// ping failed for another reason, or printed no summary; its own words.
    #[error("ping failed: {0}")]
    Failed(String),
}

/// Reads ping's summary lines (`5 packets transmitted, 5 received, 0% packet loss, …` and
/// `rtt min/avg/max/mdev = …/…/…/… ms`).
pub fn parse_ping(output: &str) -> Result<PingReport, PingError> {
    let summary = output
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .ok_or_else(|| PingError::Failed("no summary in ping's output".into()))?;
    let mut transmitted = None;
    let mut received = None;
    let mut loss = None;
    for part in summary.split(',') {
        let part = part.trim();
        let first = part.split_whitespace().next().unwrap_or("");
        if part.ends_with("packets transmitted") {
            transmitted = first.parse().ok();
        } else if part.ends_with("received") {
            received = first.parse().ok();
        } else if part.ends_with("packet loss") {
            loss = first.trim_end_matches('%').parse().ok();
        }
    }
    let bad = || PingError::Failed(format!("unreadable summary `{summary}`"));
    let rtt_ms = output
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("rtt min/avg/max/mdev = ")
                .or_else(|| l.trim().strip_prefix("round-trip min/avg/max/stddev = "))
        })
        .and_then(|v| {
            let mut n = v
                .trim_end_matches(" ms")
                .split('/')
                .map(|x| x.trim().parse::<f64>());
            match (n.next(), n.next(), n.next()) {
                (Some(Ok(a)), Some(Ok(b)), Some(Ok(c))) => Some((a, b, c)),
                _ => None,
            }
        });
    Ok(PingReport {
        transmitted: transmitted.ok_or_else(bad)?,
        received: received.ok_or_else(bad)?,
        loss_percent: loss.ok_or_else(bad)?,
        rtt_ms,
    })
}

fn is_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && !host.starts_with('-')
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b))
}

/// Pings `host` `count` times (0.2 s apart, 2 s wait for the last reply).
pub async fn ping(host: &str, count: u32) -> Result<PingReport, PingError> {
    let host = host.trim();
    if !is_host(host) {
        return Err(PingError::BadHost(host.to_string()));
    }
    let out = tokio::process::Command::new("ping")
        .args([
            "-n",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "2",
            "--",
            host,
        ])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => PingError::NotInstalled,
            _ => PingError::Failed(e.to_string()),
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if [
        "Name or service not known",
        "No address associated",
        "Temporary failure in name resolution",
    ]
    .iter()
    .any(|m| stderr.contains(m))
    {
        return Err(PingError::UnknownHost(host.to_string()));
    }
    parse_ping(&stdout).map_err(|e| {
        let said = stderr.trim();
        if said.is_empty() {
            e
        } else {
            PingError::Failed(said.to_string())
        }
    })
}

/// The ping form.
#[derive(Deserialize)]
pub(super) struct PingForm {
    csrf: String,
    host: String,
}

/// `POST /diagnostics/ping`: pings the carrier (or any host) five times.
pub(super) async fn ping_submit(
    State(state): State<WebState>,
    headers: HeaderMap,
    Form(f): Form<PingForm>,
) -> Guarded {
    let (_, session) = require_form_session(&state, &headers, &f.csrf).await?;
    let mut page = page_for(
        &state,
        &session.csrf_token,
        PageFrame::new(&state, Some(&session)),
    );
    page.ping_host = f.host.trim().to_string();
    tracing::info!(user = %session.username, host = %page.ping_host, "ping from the web UI");
    match ping(&f.host, 5).await {
        Ok(report) => {
            page.ping_result = Some(format!("{}: {report}", page.ping_host));
            Ok(render(StatusCode::OK, &page))
        }
        Err(e) => {
            let code = match e {
                PingError::BadHost(_) | PingError::UnknownHost(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            page.page = page.page.error(e);
            Err(render(code, &page))
        }
    }
}

/// The tech-port audio test form.
#[derive(Deserialize)]
pub(super) struct AudioForm {
    csrf: String,
    device: String,
}

/// Plays a one-second 1 kHz tone on `device`, records a second from it, and says what it
/// heard; or says why there is no tech port to test.
pub async fn tech_audio_test(device: &str) -> Result<String, String> {
    run_tech_audio(check_device(device)?).await
}

/// `device` when it is an ALSA device name (no spaces, quotes or shell characters).
fn check_device(device: &str) -> Result<String, String> {
    let device = device.trim().to_string();
    if device.is_empty()
        || device.len() > 64
        || !device
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":,_.-=".contains(&b))
    {
        return Err(format!(
            "Device: `{device}` is not an ALSA device name (e.g. default, hw:0, plughw:1,0)."
        ));
    }
    Ok(device)
}

#[cfg(feature = "alsa")]
async fn run_tech_audio(device: String) -> Result<String, String> {
    use callgate_board::tech_audio;
    let d = device.clone();
    let result = tokio::task::spawn_blocking(move || {
        let played = tech_audio::play_test_tone(&d, 1_000)?;
        let heard = tech_audio::record(&d, 1_000)?;
        Ok::<_, tech_audio::TechAudioError>((played, heard))
    })
    .await
    .map_err(|e| format!("The audio test stopped: {e}."))?;
    match result {
        Ok((played, heard)) => {
            let level = level_dbfs(&heard);
            let verdict = if level < -60.0 {
                "silence: is a headset plugged in and its microphone on?"
            } else {
                "sound was picked up"
            };
            Ok(format!(
                "Played 1 s of 1 kHz tone on `{device}` ({played} frames) and recorded {:.1} s:                  level {} — {verdict}",
                heard.len() as f64 / f64::from(tech_audio::SAMPLE_RATE),
                if level.is_finite() {
                    format!("{level:.1} dBFS")
                } else {
                    "-inf dBFS".into()
                }
            ))
        }
        Err(e) => Err(format!(
            "No usable tech audio port on this box: {e}. Check that the headset port is              fitted and the device name is right."
        )),
    }
}

#[cfg(not(feature = "alsa"))]
async fn run_tech_audio(_device: String) -> Result<String, String> {
    Err("This firmware was built without tech audio port support (the `alsa` build          feature), so there is no tech port to test."
        .into())
}

/// The RMS level of `samples` in dBFS (`-inf` for digital silence).
pub fn level_dbfs(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return f64::NEG_INFINITY;
    }
    let sum: f64 = samples.iter().map(|s| f64::from(*s).powi(2)).sum();
    let rms = (sum / samples.len() as f64).sqrt();
    20.0 * (rms / 32_768.0).log10()
}

/// `POST /diagnostics/audio`: the tech-port audio test.
pub(super) async fn audio_submit(
    State(state): State<WebState>,
    headers: HeaderMap,
    Form(f): Form<AudioForm>,
) -> Guarded {
    let (_, session) = require_form_session(&state, &headers, &f.csrf).await?;
    let mut page = page_for(
        &state,
        &session.csrf_token,
        PageFrame::new(&state, Some(&session)),
    );
    page.audio_device = f.device.trim().to_string();
    tracing::info!(user = %session.username, device = %page.audio_device, "tech audio test from the web UI");
    match tech_audio_test(&f.device).await {
        Ok(result) => {
            page.audio_result = Some(result);
            Ok(render(StatusCode::OK, &page))
        }
        Err(message) => {
            page.page = page.page.error(message);
            Err(render(StatusCode::BAD_REQUEST, &page))
        }
    }
}

/// The listen form.
#[derive(Deserialize)]
pub(super) struct ListenForm {
    csrf: String,
    /// The call's id, from the page's list.
    call: String,
    /// The headset's ALSA device.
    device: String,
}

/// `POST /diagnostics/listen`: plays a call in progress on the headset (both sides mixed;
/// nothing goes back into the call) until stopped or the call ends. Answers at once.
pub(super) async fn listen_submit(
    State(state): State<WebState>,
    headers: HeaderMap,
    Form(f): Form<ListenForm>,
) -> Guarded {
    let (_, session) = require_form_session(&state, &headers, &f.csrf).await?;
    let mut page = page_for(
        &state,
        &session.csrf_token,
        PageFrame::new(&state, Some(&session)),
    );
    page.listen_device = f.device.trim().to_string();
    match start_listening(&state.headset, &f.call, &f.device).await {
        Ok(label) => {
            tracing::info!(user = %session.username, call = %f.call.trim(), device = %page.listen_device, "listening to a call on the headset from the web UI");
            let note = format!("Listening to {label} on `{}`.", page.listen_device);
            state.headset.set_note(note.clone());
            page.headset_note = Some(note.clone());
            page.headset_on = true;
            page.page = page.page.notice(note);
            Ok(render(StatusCode::OK, &page))
        }
        Err(message) => {
            page.page = page.page.error(message);
            Err(render(StatusCode::BAD_REQUEST, &page))
        }
    }
}

/// Starts playing `call` (its id from the form) on the headset `device`; returns the call's
/// label, or says why not (naming the field at fault).
async fn start_listening(
    switch: &HeadsetSwitch,
    call: &str,
    device: &str,
) -> Result<String, String> {
    let id: callgate_common::ids::CallId = call
        .trim()
        .parse()
        .map_err(|_| format!("Call: `{}` is not a call from the list.", call.trim()))?;
    let device = check_device(device)?;
    let taps = crate::call_tap::live();
    let label = taps
        .calls()
        .iter()
        .find(|c| c.call == id)
        .map(listen_label)
        .ok_or_else(|| "Call: that call is not in progress any more.".to_string())?;
    let Some(stop) = switch.begin() else {
        return Err("Headset: a call is already patched to the headset; stop it first.".into());
    };
    let heard = taps.listen(id).map_err(|e| format!("Call: {e}."))?;
    listen_on(switch.clone(), device, heard, stop, label.clone()).await?;
    Ok(label)
}

#[cfg(feature = "alsa")]
async fn listen_on(
    switch: HeadsetSwitch,
    device: String,
    heard: tokio::sync::mpsc::Receiver<Vec<i16>>,
    stop: tokio::sync::watch::Receiver<bool>,
    label: String,
) -> Result<(), String> {
    let patch = tokio::task::spawn_blocking(move || {
        callgate_board::tech_audio::HeadsetPatch::listen(&device, 160)
    })
    .await
    .map_err(|e| format!("Headset: {e}."))?
    .map_err(|e| format!("Headset: {e}."))?;
    tokio::spawn(async move {
        let listened = super::headset::run_listening(patch, heard, stop).await;
        tracing::info!(end = ?listened.end, played = ?listened.played, "stopped listening to a call on the headset");
        switch.set_ended_note(listened.describe(&label));
    });
    Ok(())
}

#[cfg(not(feature = "alsa"))]
async fn listen_on(
    _switch: HeadsetSwitch,
    _device: String,
    _heard: tokio::sync::mpsc::Receiver<Vec<i16>>,
    _stop: tokio::sync::watch::Receiver<bool>,
    _label: String,
) -> Result<(), String> {
    Err(
        "Headset: this firmware was built without tech audio port support (the `alsa` \
         build feature)."
            .into(),
    )
}

/// The stop form.
#[derive(Deserialize)]
pub(super) struct HeadsetStopForm {
    csrf: String,
}

/// `POST /diagnostics/headset/stop`: stops listening; the patched call goes on.
pub(super) async fn headset_stop(
    State(state): State<WebState>,
    headers: HeaderMap,
    Form(f): Form<HeadsetStopForm>,
) -> Guarded {
    let (_, session) = require_form_session(&state, &headers, &f.csrf).await?;
    let stopped = state.headset.stop();
    tracing::info!(user = %session.username, stopped, "headset patch stop from the web UI");
    let mut page = page_for(
        &state,
        &session.csrf_token,
        PageFrame::new(&state, Some(&session)),
    );
    page.page = if stopped {
        page.page
            .notice("Stopped listening on the headset; the call goes on.")
    } else {
        page.page.error("No call is patched to the headset.")
    };
    page.headset_on = false;
    Ok(render(StatusCode::OK, &page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_summary_is_read_with_and_without_replies() {
        let ok = "PING 127.0.0.1 (127.0.0.1) 56(84) bytes of data.\n\
                  64 bytes from 127.0.0.1: icmp_seq=1 ttl=64 time=0.065 ms\n\n\
                  --- 127.0.0.1 ping statistics ---\n\
                  5 packets transmitted, 4 received, 20% packet loss, time 803ms\n\
                  rtt min/avg/max/mdev = 0.041/0.065/0.112/0.020 ms\n";
        let r = parse_ping(ok).unwrap();
        assert_eq!((r.transmitted, r.received), (5, 4));
        assert_eq!(r.loss_percent, 20.0);
        assert_eq!(r.rtt_ms, Some((0.041, 0.065, 0.112)));
        assert_eq!(
            r.to_string(),
            "5 sent, 4 received, 20% loss; round trip min/avg/max 0.041/0.065/0.112 ms"
        );
        let lost = "--- 192.0.2.1 ping statistics ---\n\
                    3 packets transmitted, 0 received, +3 errors, 100% packet loss, time 2002ms\n";
        let r = parse_ping(lost).unwrap();
        assert_eq!((r.received, r.loss_percent, r.rtt_ms), (0, 100.0, None));
        assert!(r.to_string().ends_with("no reply"));
        assert!(matches!(parse_ping("garbage"), Err(PingError::Failed(_))));
    }

    #[tokio::test]
    async fn ping_refuses_option_like_hosts_and_names_unknown_ones() {
        assert_eq!(ping("-f", 1).await, Err(PingError::BadHost("-f".into())));
        assert_eq!(ping("a b", 1).await, Err(PingError::BadHost("a b".into())));
        match ping("no-such-host.invalid", 1).await {
            Err(PingError::UnknownHost(h)) => assert_eq!(h, "no-such-host.invalid"),
            Err(PingError::NotInstalled) => panic!("scripts/setup installs iputils-ping"),
            other => panic!("{other:?}"),
        }
        let r = ping("127.0.0.1", 2).await.unwrap();
        assert_eq!((r.transmitted, r.received), (2, 2));
        assert!(r.rtt_ms.is_some());
    }

    #[tokio::test]
    async fn the_audio_test_names_a_bad_device_and_says_when_there_is_no_port() {
        let e = tech_audio_test("hw:0; rm -rf /").await.unwrap_err();
        assert!(e.starts_with("Device:"), "{e}");
        if cfg!(feature = "alsa") {
            let ok = tech_audio_test("null").await.unwrap();
            assert!(
                ok.contains("(8000 frames)") && ok.contains("silence"),
                "{ok}"
            );
            let e = tech_audio_test("hw:97").await.unwrap_err();
            assert!(e.starts_with("No usable tech audio port"), "{e}");
        } else {
            let e = tech_audio_test("default").await.unwrap_err();
            assert!(e.contains("without tech audio port support"), "{e}");
        }
    }

    #[test]
    fn levels_are_in_dbfs() {
        assert_eq!(level_dbfs(&[0; 80]), f64::NEG_INFINITY);
        let full: Vec<i16> = (0..80)
            .map(|i| if i % 2 == 0 { 32_767 } else { -32_768 })
            .collect();
        assert!(level_dbfs(&full).abs() < 0.01);
    }

    fn form(trunk: &str, to: &str, ring: &str, hold: &str) -> TestCallForm {
        TestCallForm {
            csrf: String::new(),
            trunk: trunk.into(),
            to: to.into(),
            ring_seconds: ring.into(),
            hold_seconds: hold.into(),
            headset: String::new(),
        }
    }

    #[test]
    fn an_old_timer_does_not_end_a_newer_trace() {
        let switch = SipTraceSwitch::default();
        let first = switch.start(UnixMillis(1_000), Some("call a".into()));
        let second = switch.start(UnixMillis(2_000), Some("call b".into()));
        assert!(
            !switch.stop(Some(first)),
            "the first trace's timer is stale"
        );
        assert_eq!(switch.until(), Some(UnixMillis(2_000)));
        assert_eq!(switch.scope().as_deref(), Some("call b"));
        assert!(switch.stop(Some(second)));
        assert_eq!(switch.scope(), None);
        assert_eq!(switch.until(), None);
        assert!(!switch.stop(None), "nothing left to stop");
    }

    #[test]
    fn a_bad_test_call_form_is_refused_naming_the_field() {
        let trunks = vec!["carrier-a".to_string()];
        let err = |f: TestCallForm| parse_form(&f, &trunks).unwrap_err();
        assert!(err(form("carrier-b", "123", "20", "2")).starts_with("Trunk:"));
        assert!(err(form("carrier-a", "12a3", "20", "2")).starts_with("Number:"));
        assert!(err(form("carrier-a", "+", "20", "2")).starts_with("Number:"));
        assert!(err(form("carrier-a", "123", "0", "2")).starts_with("Ring timeout:"));
        assert!(err(form("carrier-a", "123", "61", "2")).starts_with("Ring timeout:"));
        assert!(err(form("carrier-a", "123", "20", "-1")).starts_with("Hold:"));
        let ok = parse_form(&form("carrier-a", " +4930555 ", "20", "0"), &trunks).unwrap();
        assert_eq!(ok.to, "+4930555");
        assert_eq!(ok.ring_timeout, Duration::from_secs(20));
        assert_eq!(ok.hold, Duration::ZERO);
    }
}
