//! Robot calls against SIPp as the customer, with the real espeak-ng: the dialer dials, the
//! `RobotPlacement` runs the campaign's script on the answered call, SIPp plays the
//! customer's side (a capture generated here: line noise and key presses) and expects our
//! BYE; the call record in the outbox carries the script's disposition. A transfer goes to
//! the desk's hook (a stand-in here; the real desk adapter is tested in
//! `robot_transfer_sipp`) with the customer's audio.

mod dialer_support;
mod robot_support;

use callgate_appliance::dialer::placement::Announcement;
use callgate_appliance::media::LegAudio;
use callgate_appliance::recording::RecordingSettings;
use callgate_appliance::robot_call::{
    AgentTransfer, RobotPlacement, SpeechCache, TransferRequest, TransferResult,
};
use callgate_common::ids::{AgentGroupId, AgentId};
use callgate_common::wire::CallOutcome;
use callgate_media::prompt::Prompt;
use callgate_robot::EspeakNg;
use dialer_support::Rig;
use futures_util::future::BoxFuture;
use robot_support::*;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Greets the contact by name, asks for 1 or 2 (one retry), and hangs up with what they
/// chose; silence ends as `no_response`.
const CONFIRM: &str = r#"
format = 1
name = "appointment"
version = 4
start = "greet"

[defaults]
first_name = "there"

[steps.greet]
kind = "say"
text = "Hello {{first_name}}."
next = "ask"

[steps.ask]
kind = "collect"
prompt = { say = "Press 1 to confirm, 2 to cancel." }
max_digits = 1
timeout_ms = 2500
retries = 1
valid = ["1", "2"]
into = "choice"
next = "route"
on_no_input = "no_answer"
on_invalid = "no_answer"

[steps.route]
kind = "branch"
on = "choice"
cases = { "1" = "confirmed", "2" = "cancelled" }
default = "no_answer"

[steps.confirmed]
kind = "hangup"
disposition = "confirmed"

[steps.cancelled]
kind = "hangup"
disposition = "cancelled"

[steps.no_answer]
kind = "hangup"
disposition = "no_response"
"#;

fn robot(prompts: &Path) -> RobotPlacement {
    RobotPlacement::new(
        Arc::new(SpeechCache::new(Arc::new(EspeakNg::default()), 64)),
        prompts,
        Announcement::new(
            Prompt::tones(&[(440.0, 600, 100)], 8_000),
            CallOutcome::AnsweredHuman,
        ),
    )
}

/// One `CONFIRM` call to a SIPp callee that says nothing (20 s of line noise), as `contact`.
async fn a_call_to_a_silent_callee(contact: u64) -> callgate_common::wire::CallRecord {
    let pcap = callee_pcap(&line_noise(20_000), &[], KeyStyle::Rfc4733);
    let callee = Callee::start("robot_callee.xml", &pcap);
    let mut rig = Rig::new().await;
    let placement = robot(rig.dir.path());
    let brief = robot_brief(Some(CONFIRM));
    placement.set_campaign(brief_of(&brief)).unwrap();
    one_call(
        &mut rig,
        &callee,
        Arc::new(placement),
        brief,
        one_contact(contact, &[]),
    )
    .await
}

fn rms(samples: impl Iterator<Item = i16>) -> f64 {
    let (mut sum, mut n) = (0.0, 0usize);
    for s in samples {
        sum += f64::from(s) * f64::from(s);
        n += 1;
    }
    (sum / n.max(1) as f64).sqrt()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callee_pressing_1_gets_the_scripts_disposition_on_the_call_record() {
    // The key goes 4 s after the answer: after the greeting, over or after the question.
    let pcap = callee_pcap(&line_noise(9_000), &[(4_000, '1')], KeyStyle::Rfc4733);
    let callee = Callee::start("robot_callee.xml", &pcap);
    let mut rig = Rig::new().await;
    // Recorded, so the test can hear what the robot said.
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(rig.dir.path().join("id.txt"))
        .output()
        .expect("age-keygen (package age) is installed by scripts/setup");
    assert!(out.status.success());
    let recipient = String::from_utf8(
        Command::new("age-keygen")
            .arg("-y")
            .arg(rig.dir.path().join("id.txt"))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let recordings = rig.dir.path().join("recordings");
    rig.recording = Some(
        RecordingSettings {
            recipients: vec![recipient.trim().to_owned()],
            directory: Some(recordings.clone()),
            ..RecordingSettings::default()
        }
        .validate(rig.dir.path())
        .unwrap(),
    );
    let placement = robot(rig.dir.path());
    let brief = robot_brief(Some(CONFIRM));
    placement.set_campaign(brief_of(&brief)).unwrap();
    let record = one_call(
        &mut rig,
        &callee,
        Arc::new(placement.clone()),
        brief,
        one_contact(1, &[("first_name", "Ada")]),
    )
    .await;
    assert_eq!(record.outcome, CallOutcome::AnsweredHuman);
    assert_eq!(
        record.disposition.as_deref(),
        Some("confirmed"),
        "{record:?}\n{}",
        callee.errors()
    );
    let talked = record.ended_at.0 - record.answered_at.unwrap().0;
    assert!(
        (3_900..9_000).contains(&talked),
        "the call lasted until the key press at 4 s: {talked} ms"
    );
    // What the customer heard: the robot's speech on the right channel.
    assert!(record.recording_segments >= 1);
    let (file,): (String,) = sqlx::query_as(
        "SELECT file_name FROM recording_segments WHERE call_id = $1 ORDER BY segment_index",
    )
    .bind(record.call.to_string())
    .fetch_one(rig.store.pool())
    .await
    .unwrap();
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(rig.dir.path().join("id.txt"))
        .arg(recordings.join(&file))
        .output()
        .unwrap();
    assert!(out.status.success());
    let samples: Vec<i16> = out.stdout[44..]
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let robot_side = rms(samples.iter().skip(1).step_by(2).copied());
    assert!(
        robot_side > 300.0,
        "the robot spoke: right channel RMS {robot_side}"
    );
    // The customer leg's quality is stored with the call.
    let legs: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT leg_index, role, packets_received FROM call_leg_quality WHERE call_id = $1",
    )
    .bind(record.call.to_string())
    .fetch_all(rig.store.pool())
    .await
    .unwrap();
    assert_eq!(legs.len(), 1, "{legs:?}");
    assert_eq!((legs[0].0, legs[0].1.as_str()), (0, "customer"));
    assert!(legs[0].2 > 100, "the callee's RTP was counted: {legs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_callee_is_asked_twice_then_ends_as_no_response() {
    let record = a_call_to_a_silent_callee(2).await;
    assert_eq!(record.outcome, CallOutcome::AnsweredHuman);
    assert_eq!(record.disposition.as_deref(), Some("no_response"));
    // Greeting + two questions + two 2.5 s waits: more than 5 s of call.
    let talked = record.ended_at.0 - record.answered_at.unwrap().0;
    assert!(talked > 5_000, "asked twice and waited twice: {talked} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_technician_can_listen_to_a_robot_script_call_and_hears_the_script() {
    // The headset's side: find the robot call among the listenable ones, listen, and keep
    // what is heard until the call's media ends.
    let headset = tokio::spawn(async {
        let taps = callgate_appliance::call_tap::live();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let call = loop {
            if let Some(c) = taps
                .calls()
                .into_iter()
                .find(|c| c.what == "robot script call")
            {
                break c.call;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no robot call was ever listenable: {:?}",
                taps.calls()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let mut frames = taps.listen(call).expect("the robot call takes a listener");
        let mut heard = Vec::new();
        while let Some(f) = frames.recv().await {
            heard.extend(f);
        }
        (call, heard)
    });
    let record = a_call_to_a_silent_callee(4).await;
    assert_eq!(record.disposition.as_deref(), Some("no_response"));
    let (call, heard) = headset.await.unwrap();
    assert_eq!(call, record.call, "the listened call is the robot's");
    // Several seconds of call (greeting, two questions, two waits), at 8 kHz.
    assert!(heard.len() > 3 * 8_000, "heard {} samples", heard.len());
    let loudest = heard
        .chunks(1_600)
        .map(|w| rms(w.iter().copied()))
        .fold(0.0, f64::max);
    assert!(
        loudest > 1_000.0,
        "the script's speech is heard: rms {loudest:.0}"
    );
    assert!(
        callgate_appliance::call_tap::live().calls().is_empty(),
        "the tap point goes with the call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_band_key_press_is_heard_when_the_carrier_has_no_telephone_event() {
    let pcap = callee_pcap(&line_noise(9_000), &[(4_000, '2')], KeyStyle::InBand);
    let callee = Callee::start("robot_callee_inband.xml", &pcap);
    let mut rig = Rig::new().await;
    let placement = robot(rig.dir.path());
    let brief = robot_brief(Some(CONFIRM));
    placement.set_campaign(brief_of(&brief)).unwrap();
    let record = one_call(
        &mut rig,
        &callee,
        Arc::new(placement),
        brief,
        one_contact(3, &[("first_name", "Grace")]),
    )
    .await;
    assert_eq!(
        record.disposition.as_deref(),
        Some("cancelled"),
        "{record:?}\n{}",
        callee.errors()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_whose_script_is_refused_gets_the_announcement() {
    let pcap = callee_pcap(&line_noise(5_000), &[], KeyStyle::Rfc4733);
    let callee = Callee::start("robot_callee.xml", &pcap);
    let mut rig = Rig::new().await;
    let placement = robot(rig.dir.path());
    let broken = CONFIRM.replace("next = \"route\"", "next = \"rout\"");
    let brief = robot_brief(Some(&broken));
    let e = placement.set_campaign(brief_of(&brief)).unwrap_err();
    assert!(
        e.to_string()
            .contains(r#"step "ask".next: unknown step "rout""#),
        "{e}"
    );
    let status = placement.statuses()[0].to_string();
    assert!(
        status.contains("refused") && status.contains("announcement"),
        "{status}"
    );
    let record = one_call(
        &mut rig,
        &callee,
        Arc::new(placement),
        brief,
        one_contact(4, &[]),
    )
    .await;
    assert_eq!(record.outcome, CallOutcome::AnsweredHuman);
    assert_eq!(
        record.disposition, None,
        "the announcement has no disposition"
    );
    let talked = record.ended_at.0 - record.answered_at.unwrap().0;
    assert!(
        talked < 3_000,
        "the 0.7 s announcement, then BYE: {talked} ms"
    );
}

/// A desk stand-in behind the transfer hook: listens to the customer for a second, says
/// something, and reports the agent and their disposition.
struct DeskStandIn {
    heard: mpsc::UnboundedSender<(AgentGroupId, usize, Option<String>)>,
}

impl AgentTransfer for DeskStandIn {
    fn transfer(&self, request: TransferRequest) -> BoxFuture<'static, TransferResult> {
        let heard = self.heard.clone();
        Box::pin(async move {
            let TransferRequest {
                group,
                mut audio,
                variables,
                ..
            } = request;
            let mut frames = 0;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
            while let Ok(Some(a)) =
                tokio::time::timeout_at(deadline, audio.from_customer.recv()).await
            {
                if matches!(a, LegAudio::Frame(_)) {
                    frames += 1;
                }
            }
            for _ in 0..25 {
                if audio.to_customer.send(vec![3_000; 160]).await.is_err() {
                    break;
                }
            }
            let _ = heard.send((group, frames, variables.get("choice").cloned()));
            TransferResult::Talked {
                agent: AgentId(7),
                disposition: Some("sale".into()),
            }
        })
    }
}

fn transfer() -> String {
    transfer_script("to an agent", "Press 1 to speak to an agent.", 6000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_hands_the_customers_audio_to_the_desk_hook_and_records_its_agent() {
    let pcap = callee_pcap(&line_noise(9_000), &[(2_000, '1')], KeyStyle::Rfc4733);
    let callee = Callee::start("robot_callee.xml", &pcap);
    let mut rig = Rig::new().await;
    let placement = robot(rig.dir.path());
    let (tx, mut heard) = mpsc::unbounded_channel();
    placement.set_transfer(Some(Arc::new(DeskStandIn { heard: tx })));
    let brief = robot_brief(Some(&transfer()));
    placement.set_campaign(brief_of(&brief)).unwrap();
    let record = one_call(
        &mut rig,
        &callee,
        Arc::new(placement),
        brief,
        one_contact(5, &[]),
    )
    .await;
    let (group, frames, choice) = heard.try_recv().expect("the hook was called");
    assert_eq!(group, AgentGroupId(2));
    assert_eq!(
        choice.as_deref(),
        Some("1"),
        "the script's variables go along"
    );
    assert!(
        frames >= 30,
        "the customer's audio reached the desk: {frames} frames in 1 s"
    );
    assert_eq!(record.agent, Some(AgentId(7)));
    assert_eq!(record.disposition.as_deref(), Some("sale"));
    assert_eq!(record.outcome, CallOutcome::AnsweredHuman);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_without_a_desk_follows_on_no_agent() {
    let pcap = callee_pcap(&line_noise(9_000), &[(2_000, '1')], KeyStyle::Rfc4733);
    let callee = Callee::start("robot_callee.xml", &pcap);
    let mut rig = Rig::new().await;
    let placement = robot(rig.dir.path());
    let brief = robot_brief(Some(&transfer()));
    placement.set_campaign(brief_of(&brief)).unwrap();
    let record = one_call(
        &mut rig,
        &callee,
        Arc::new(placement),
        brief,
        one_contact(6, &[]),
    )
    .await;
    assert_eq!(record.disposition.as_deref(), Some("no_agent"));
    assert_eq!(record.agent, None);
}

/// What the dispatcher does for a call the routing policy sends to a named robot script.
struct RoutedTo(RobotPlacement, &'static str);

impl callgate_appliance::dialer::placement::AnsweredCallPlacement for RoutedTo {
    fn place(
        &self,
        mut call: callgate_appliance::dialer::placement::AnsweredCall,
    ) -> BoxFuture<
        'static,
        Result<
            callgate_appliance::dialer::placement::Placement,
            callgate_appliance::dialer::DialerError,
        >,
    > {
        call.robot_script = Some(self.1.to_owned());
        self.0.place(call)
    }
}

const ENDS_WITH: &str = r#"
format = 1
name = "NAME"
version = 1
start = "bye"

[steps.bye]
kind = "hangup"
disposition = "NAME_ran"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_routed_to_a_named_script_runs_that_script_not_the_campaigns() {
    let callee = Callee::start(
        "robot_callee.xml",
        &callee_pcap(&line_noise(6_000), &[], KeyStyle::Rfc4733),
    );
    let mut rig = Rig::new().await;
    let placement = robot(rig.dir.path());
    let brief = robot_brief(Some(&ENDS_WITH.replace("NAME", "campaigns")));
    placement.set_campaign(brief_of(&brief)).unwrap();
    // Another campaign held by the box brings the script the routing rule names.
    let mut other = brief_of(&robot_brief(Some(&ENDS_WITH.replace("NAME", "survey")))).clone();
    other.campaign = callgate_common::ids::CampaignId(99);
    placement.set_campaign(&other).unwrap();
    let record = one_call(
        &mut rig,
        &callee,
        Arc::new(RoutedTo(placement, "survey")),
        brief,
        one_contact(1, &[]),
    )
    .await;
    assert_eq!(record.outcome, CallOutcome::AnsweredHuman);
    assert_eq!(record.disposition.as_deref(), Some("survey_ran"));
}
