//! The interpreter in virtual time: every step kind, retries, timeouts, barge-in, branching,
//! variables and the step budget.

use super::*;
use crate::script::tests::{prompt_folder, EXAMPLE};

fn script(text: &str) -> Arc<RobotScript> {
    let dir = prompt_folder();
    Arc::new(RobotScript::parse(text, dir.path()).unwrap())
}

fn t(ms: i64) -> UnixMillis {
    UnixMillis(1_700_000_000_000 + ms)
}

fn drain(call: &mut RobotCall) -> Vec<RobotAction> {
    std::iter::from_fn(|| call.poll_action()).collect()
}

fn key(c: char) -> Digit {
    Digit::from_char(c).unwrap()
}

fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The playback id of the single Play/Say among `actions`.
fn playback_of(actions: &[RobotAction]) -> PlaybackId {
    let ids: Vec<PlaybackId> = actions
        .iter()
        .filter_map(|a| match a {
            RobotAction::Play { playback, .. } | RobotAction::Say { playback, .. } => {
                Some(*playback)
            }
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 1, "one playback in {actions:?}");
    ids[0]
}

/// Starts the example and plays the greeting to its end: the consent question is playing.
fn example_at_question(contact: &[(&str, &str)]) -> (RobotCall, PlaybackId) {
    let mut call = RobotCall::start(t(0), script(EXAMPLE), fields(contact));
    let greet = drain(&mut call);
    call.handle_playback_finished(t(2_000), playback_of(&greet));
    let ask = drain(&mut call);
    assert!(matches!(
        &ask[0],
        RobotAction::StartCollecting { step, max_digits: 1, terminator: None } if step == "ask_consent"
    ));
    assert!(matches!(&ask[1], RobotAction::Play { file, .. } if file.ends_with("consent.wav")));
    let question = playback_of(&ask);
    (call, question)
}

#[test]
fn say_fills_contact_fields_and_moves_on_when_finished() {
    let mut call = RobotCall::start(t(0), script(EXAMPLE), fields(&[("first_name", "Ada")]));
    let actions = drain(&mut call);
    assert!(matches!(
        &actions[..],
        [RobotAction::Say { step, text, voice: None, .. }]
            if step == "greet" && text == "Hello Ada, this is Acme Energy."
    ));
    assert!(call.missing_variables().is_empty());
    assert_eq!(call.poll_timeout(), None, "no timer while a prompt plays");
    call.handle_playback_finished(t(1_500), playback_of(&actions));
    assert!(matches!(
        drain(&mut call).first(),
        Some(RobotAction::StartCollecting { .. })
    ));
}

#[test]
fn a_default_fills_a_field_the_contact_lacks() {
    let mut call = RobotCall::start(t(0), script(EXAMPLE), Vec::new());
    assert!(matches!(
        &drain(&mut call)[..],
        [RobotAction::Say { text, .. }] if text == "Hello there, this is Acme Energy."
    ));
}

#[test]
fn a_field_with_no_value_and_no_default_reads_empty_and_is_reported() {
    let text = EXAMPLE.replace("[defaults]\nfirst_name = \"there\"\n", "");
    let mut call = RobotCall::start(t(0), script(&text), Vec::new());
    assert_eq!(call.missing_variables(), ["first_name"]);
    assert!(matches!(
        &drain(&mut call)[..],
        [RobotAction::Say { text, .. }] if text == "Hello , this is Acme Energy."
    ));
}

#[test]
fn a_key_over_the_question_interrupts_it_and_valid_input_transfers() {
    let (mut call, question) = example_at_question(&[]);
    call.handle_digit(t(2_300), key('1'));
    let actions = drain(&mut call);
    assert_eq!(
        actions,
        [
            RobotAction::StopPlayback { playback: question },
            RobotAction::StopCollecting {
                step: "ask_consent".into()
            },
            RobotAction::Transfer {
                step: "to_agent".into(),
                group: AgentGroupId(2)
            },
        ]
    );
    assert_eq!(call.variables()["consent"], "1");
    assert_eq!(call.variables()["input"], "1");
    assert_eq!(call.outcome().unwrap().disposition(), "transferred");
    // The stopped question's late "finished" changes nothing.
    call.handle_playback_finished(t(2_400), question);
    assert!(drain(&mut call).is_empty());
}

#[test]
fn the_timeout_starts_when_the_question_ends_and_early_timeouts_are_ignored() {
    let (mut call, question) = example_at_question(&[]);
    assert_eq!(call.poll_timeout(), None);
    call.handle_playback_finished(t(4_000), question);
    assert_eq!(call.poll_timeout(), Some(t(9_000)));
    call.handle_timeout(t(8_999));
    assert!(drain(&mut call).is_empty());
    assert_eq!(call.poll_timeout(), Some(t(9_000)));
}

#[test]
fn no_input_is_asked_again_retries_times_then_goes_to_on_no_input() {
    let (mut call, mut question) = example_at_question(&[]);
    let mut now = 4_000;
    for retry in 0..2 {
        call.handle_playback_finished(t(now), question);
        now += 5_000;
        call.handle_timeout(t(now));
        let again = drain(&mut call);
        assert!(
            matches!(&again[..], [RobotAction::Play { .. }]),
            "retry {retry}: {again:?}"
        );
        question = playback_of(&again);
        now += 3_000;
    }
    call.handle_playback_finished(t(now), question);
    call.handle_timeout(t(now + 5_000));
    assert_eq!(
        drain(&mut call),
        [
            RobotAction::StopCollecting {
                step: "ask_consent".into()
            },
            RobotAction::Hangup {
                step: "goodbye".into(),
                disposition: "no_response".into()
            }
        ]
    );
    assert_eq!(call.poll_timeout(), None);
    assert_eq!(call.outcome().unwrap().disposition(), "no_response");
}

#[test]
fn invalid_input_is_asked_again_and_a_later_valid_answer_counts() {
    let (mut call, question) = example_at_question(&[]);
    call.handle_playback_finished(t(4_000), question);
    call.handle_digit(t(5_000), key('9'));
    let again = drain(&mut call);
    assert!(
        matches!(&again[..], [RobotAction::Play { .. }]),
        "{again:?}"
    );
    call.handle_digit(t(5_500), key('2'));
    let end = drain(&mut call);
    assert!(
        matches!(
            &end[..],
            [RobotAction::StopPlayback { .. }, RobotAction::StopCollecting { .. }, RobotAction::Hangup { disposition, .. }]
                if disposition == "declined"
        ),
        "{end:?}"
    );
}

#[test]
fn invalid_input_past_the_retries_goes_to_on_invalid() {
    let text = EXAMPLE.replace(r#"on_invalid = "goodbye""#, r#"on_invalid = "declined""#);
    let mut call = RobotCall::start(t(0), script(&text), Vec::new());
    let greet = drain(&mut call);
    call.handle_playback_finished(t(1_000), playback_of(&greet));
    drain(&mut call);
    for i in 0..3 {
        call.handle_digit(t(2_000 + i), key('7'));
    }
    let actions = drain(&mut call);
    assert!(
        matches!(
            actions.last(),
            Some(RobotAction::Hangup { disposition, .. }) if disposition == "declined"
        ),
        "{actions:?}"
    );
}

const ACCOUNT: &str = r##"
format = 1
name = "account"
version = 1
start = "ask"
voice = "en-gb"

[steps.ask]
kind = "collect"
prompt = { say = "Enter your {{what}} then hash." }
max_digits = 6
min_digits = 3
terminator = "#"
timeout_ms = 4000
retries = 1
into = "account"
no_input_prompt = { say = "I did not hear you." }
invalid_prompt = { say = "That is too short." }
next = "thanks"
on_no_input = "bye"
on_invalid = "bye"

[steps.thanks]
kind = "say"
text = "Account {{account}}, thank you."
voice = "en-us+f3"
next = "bye"

[steps.bye]
kind = "hangup"
disposition = "done"
"##;

fn account_waiting() -> (RobotCall, i64) {
    let mut call = RobotCall::start(t(0), script(ACCOUNT), fields(&[("what", "account number")]));
    let ask = drain(&mut call);
    assert!(matches!(
        &ask[1],
        RobotAction::Say { text, voice: Some(v), .. } if text == "Enter your account number then hash." && v == "en-gb"
    ));
    call.handle_playback_finished(t(3_000), playback_of(&ask));
    (call, 3_000)
}

#[test]
fn the_terminator_ends_multi_digit_input_and_is_not_part_of_it() {
    let (mut call, now) = account_waiting();
    for (i, c) in "1234#".chars().enumerate() {
        call.handle_digit(t(now + 500 * i as i64), key(c));
    }
    let actions = drain(&mut call);
    assert!(
        matches!(
            &actions[..],
            [RobotAction::StopCollecting { .. }, RobotAction::Say { text, voice: Some(v), .. }]
                if text == "Account 1234, thank you." && v == "en-us+f3"
        ),
        "{actions:?}"
    );
    assert_eq!(call.variables()["account"], "1234");
}

#[test]
fn max_digits_ends_input_without_a_terminator() {
    let (mut call, now) = account_waiting();
    for c in "987654".chars() {
        call.handle_digit(t(now + 100), key(c));
    }
    drain(&mut call);
    assert_eq!(call.variables()["account"], "987654");
}

#[test]
fn the_inter_digit_timeout_completes_enough_digits() {
    let (mut call, now) = account_waiting();
    for (i, c) in "555".chars().enumerate() {
        call.handle_digit(t(now + 1_000 * i as i64), key(c));
    }
    assert_eq!(call.poll_timeout(), Some(t(now + 2_000 + 4_000)));
    call.handle_timeout(t(now + 6_000));
    assert_eq!(call.variables()["account"], "555");
}

#[test]
fn too_few_digits_play_the_invalid_notice_then_ask_again() {
    let (mut call, now) = account_waiting();
    call.handle_digit(t(now + 500), key('4'));
    call.handle_digit(t(now + 900), key('2'));
    call.handle_timeout(t(now + 4_900));
    let notice = drain(&mut call);
    assert!(matches!(&notice[..], [RobotAction::Say { text, .. }] if text == "That is too short."));
    assert_eq!(call.poll_timeout(), None, "no timer during the notice");
    call.handle_playback_finished(t(now + 6_000), playback_of(&notice));
    let again = drain(&mut call);
    assert!(
        matches!(&again[..], [RobotAction::Say { text, .. }] if text.starts_with("Enter your"))
    );
    call.handle_playback_finished(t(now + 8_000), playback_of(&again));
    assert_eq!(call.poll_timeout(), Some(t(now + 12_000)));
    call.handle_timeout(t(now + 12_000));
    let end = drain(&mut call);
    assert!(
        matches!(
            &end[..],
            [RobotAction::StopCollecting { .. }, RobotAction::Hangup { step, .. }] if step == "bye"
        ),
        "retries = 1: the second miss ends it: {end:?}"
    );
}

#[test]
fn no_input_plays_the_no_input_notice_and_digits_over_it_count() {
    let (mut call, now) = account_waiting();
    call.handle_timeout(t(now + 4_000));
    let notice = drain(&mut call);
    assert!(
        matches!(&notice[..], [RobotAction::Say { text, .. }] if text == "I did not hear you.")
    );
    // The caller types over the notice: it stops and the digits are taken.
    for c in "321#".chars() {
        call.handle_digit(t(now + 4_500), key(c));
    }
    let actions = drain(&mut call);
    assert_eq!(
        actions[0],
        RobotAction::StopPlayback {
            playback: playback_of(&notice)
        }
    );
    assert_eq!(call.variables()["account"], "321");
}

const TIERS: &str = r#"
format = 1
name = "tiers"
version = 7
start = "label"

[steps.label]
kind = "set"
var = "greeting"
value = "Dear {{tier}} customer"
next = "route"

[steps.route]
kind = "branch"
on = "tier"
cases = { gold = "vip", silver = "std" }
default = "plain"

[steps.vip]
kind = "transfer"
group = 9

[steps.std]
kind = "transfer"
group = 3
on_no_agent = "sorry"

[steps.sorry]
kind = "say"
text = "{{greeting}}, nobody is free."
next = "plain"

[steps.plain]
kind = "hangup"
disposition = "robot_only"
"#;

#[test]
fn branch_on_a_contact_field_and_set_variable() {
    for (tier, expected) in [
        ("gold", Some(AgentGroupId(9))),
        ("silver", Some(AgentGroupId(3))),
        ("bronze", None),
    ] {
        let mut call = RobotCall::start(t(0), script(TIERS), fields(&[("tier", tier)]));
        let actions = drain(&mut call);
        match expected {
            Some(group) => assert!(
                matches!(&actions[..], [RobotAction::Transfer { group: g, .. }] if *g == group),
                "{tier}: {actions:?}"
            ),
            None => assert!(
                matches!(&actions[..], [RobotAction::Hangup { disposition, .. }] if disposition == "robot_only"),
                "{tier}: {actions:?}"
            ),
        }
        assert_eq!(
            call.variables()["greeting"],
            format!("Dear {tier} customer")
        );
    }
}

#[test]
fn a_failed_transfer_goes_on_at_on_no_agent() {
    let mut call = RobotCall::start(t(0), script(TIERS), fields(&[("tier", "silver")]));
    drain(&mut call);
    call.handle_transfer_failed(t(2_000));
    let actions = drain(&mut call);
    assert!(matches!(
        &actions[..],
        [RobotAction::Say { text, .. }] if text == "Dear silver customer, nobody is free."
    ));
    assert_eq!(call.outcome(), None, "the script is running again");
}

#[test]
fn a_failed_transfer_without_on_no_agent_hangs_up() {
    let mut call = RobotCall::start(t(0), script(TIERS), fields(&[("tier", "gold")]));
    drain(&mut call);
    call.handle_transfer_failed(t(2_000));
    assert_eq!(
        drain(&mut call),
        [RobotAction::Hangup {
            step: "vip".into(),
            disposition: DISPOSITION_TRANSFER_FAILED.into()
        }]
    );
}

const MENU: &str = r#"
format = 1
name = "menu"
version = 1
start = "menu"
max_steps = 7

[steps.menu]
kind = "collect"
prompt = { say = "Press 1 to hear the news again." }
max_digits = 1
timeout_ms = 3000
retries = 0
next = "news"
on_no_input = "bye"
on_invalid = "bye"

[steps.news]
kind = "say"
text = "Here is the news."
next = "menu"

[steps.bye]
kind = "hangup"
disposition = "done"
"#;

#[test]
fn the_step_budget_ends_a_caller_driven_loop() {
    let mut call = RobotCall::start(t(0), script(MENU), Vec::new());
    let mut now = 0;
    let mut presses = 0;
    loop {
        let actions = drain(&mut call);
        if let Some(RobotAction::Hangup { disposition, .. }) = actions.last() {
            assert_eq!(disposition, DISPOSITION_STEP_BUDGET);
            break;
        }
        now += 1_000;
        match actions.last() {
            Some(RobotAction::Say { playback, text, .. }) if text.starts_with("Press") => {
                call.handle_digit(t(now), key('1'));
                presses += 1;
            }
            Some(RobotAction::Say { playback, .. }) => {
                call.handle_playback_finished(t(now), *playback)
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(presses < 100, "the budget never ended the loop");
    }
    assert_eq!(call.steps_run(), 8, "the eighth step was refused");
    assert_eq!(presses, 4);
}

#[test]
fn the_caller_hanging_up_ends_the_script_silently() {
    let (mut call, _) = example_at_question(&[]);
    call.handle_caller_hangup(t(3_000));
    assert!(drain(&mut call).is_empty());
    assert_eq!(
        call.outcome(),
        Some(&RobotOutcome::CallerHungUp {
            step: "ask_consent".into()
        })
    );
    call.handle_digit(t(3_100), key('1'));
    assert!(
        drain(&mut call).is_empty(),
        "digits after hangup do nothing"
    );
}

#[test]
fn a_playback_failure_hangs_up_with_its_disposition() {
    let mut call = RobotCall::start(t(0), script(EXAMPLE), Vec::new());
    let greet = drain(&mut call);
    call.handle_playback_failed(t(10), PlaybackId(999));
    assert!(
        drain(&mut call).is_empty(),
        "an unknown playback is ignored"
    );
    call.handle_playback_failed(t(10), playback_of(&greet));
    assert_eq!(
        drain(&mut call),
        [RobotAction::Hangup {
            step: "greet".into(),
            disposition: DISPOSITION_PLAYBACK_FAILED.into()
        }]
    );
}

#[test]
fn digits_outside_a_collect_step_are_ignored() {
    let mut call = RobotCall::start(t(0), script(EXAMPLE), Vec::new());
    drain(&mut call);
    call.handle_digit(t(100), key('1'));
    assert!(drain(&mut call).is_empty());
    assert!(!call.variables().contains_key("input"));
}

const SURVEY: &str = r#"
format = 1
name = "survey"
version = 2
start = "intro"

[steps.intro]
kind = "play"
file = "consent.wav"
next = "rate"

[steps.rate]
kind = "collect"
prompt = { say = "Rate us from 1 to 3." }
max_digits = 1
timeout_ms = 2000
retries = 0
next = "by_input"
on_no_input = "bye"
on_invalid = "bye"

[steps.by_input]
kind = "branch"
on = "input"
cases = { "3" = "happy" }
default = "bye"

[steps.happy]
kind = "set"
var = "score"
value = "top {{input}}"
next = "bye"

[steps.bye]
kind = "hangup"
disposition = "surveyed"
"#;

#[test]
fn a_play_step_plays_its_wav_and_moves_on_when_it_ends() {
    let mut call = RobotCall::start(t(0), script(SURVEY), Vec::new());
    let intro = drain(&mut call);
    match &intro[..] {
        [RobotAction::Play {
            step, file, prompt, ..
        }] => {
            assert_eq!(step, "intro");
            assert!(file.ends_with("consent.wav"));
            assert_eq!(prompt.len(), 800, "the decoded 0.1 s prompt");
        }
        other => panic!("expected one Play, got {other:?}"),
    }
    call.handle_playback_finished(t(100), PlaybackId(77));
    assert!(
        drain(&mut call).is_empty(),
        "another playback's end is ignored"
    );
    call.handle_playback_finished(t(100), playback_of(&intro));
    assert!(matches!(
        &drain(&mut call)[..],
        [RobotAction::StartCollecting { step, .. }, RobotAction::Say { .. }] if step == "rate"
    ));
}

#[test]
fn a_branch_on_the_last_input_takes_the_matching_case() {
    for (key_pressed, score) in [('3', Some("top 3")), ('1', None)] {
        let mut call = RobotCall::start(t(0), script(SURVEY), Vec::new());
        let intro = drain(&mut call);
        call.handle_playback_finished(t(100), playback_of(&intro));
        drain(&mut call);
        call.handle_digit(t(200), key(key_pressed));
        let end = drain(&mut call);
        assert!(matches!(
            end.last(),
            Some(RobotAction::Hangup { disposition, .. }) if disposition == "surveyed"
        ));
        assert_eq!(call.variables().get("score").map(String::as_str), score);
    }
}

/// Something the driver can report.
#[derive(Debug, Clone)]
enum Input {
    Finished(u32),
    Failed(u32),
    Key(char),
    Timeout,
    TransferFailed,
}

fn input() -> impl proptest::strategy::Strategy<Value = Input> {
    use proptest::prelude::*;
    prop_oneof![
        (0u32..6).prop_map(Input::Finished),
        (0u32..40).prop_map(Input::Failed),
        proptest::sample::select(vec!['1', '2', '3', '9', '#', '*']).prop_map(Input::Key),
        Just(Input::Timeout),
        Just(Input::TransferFailed),
    ]
}

proptest::proptest! {
    #[test]
    fn any_sequence_of_inputs_stays_within_the_step_budget(
        inputs in proptest::collection::vec((input(), 0i64..6_000), 0..200),
        which in 0usize..4,
    ) {
        let text = [EXAMPLE, ACCOUNT, TIERS, MENU][which];
        let script = script(text);
        let budget = script.max_steps();
        let mut call = RobotCall::start(t(0), script, fields(&[("tier", "silver")]));
        let mut now = 0;
        let mut last_playback = 0;
        for (input, step_ms) in inputs {
            for a in drain(&mut call) {
                if let RobotAction::Play { playback, .. } | RobotAction::Say { playback, .. } = a {
                    last_playback = playback.0;
                }
            }
            now += step_ms;
            match input {
                // Mostly the playback that is on, sometimes a stale one.
                Input::Finished(back) => call.handle_playback_finished(t(now), PlaybackId(last_playback.saturating_sub(back % 2 * back))),
                Input::Failed(id) => call.handle_playback_failed(t(now), PlaybackId(id)),
                Input::Key(c) => call.handle_digit(t(now), key(c)),
                Input::Timeout => call.handle_timeout(t(now)),
                Input::TransferFailed => call.handle_transfer_failed(t(now)),
            }
            proptest::prop_assert!(call.steps_run() <= budget + 1);
            if call.outcome().is_some() {
                proptest::prop_assert_eq!(call.poll_timeout(), None);
            }
        }
    }
}

#[test]
fn a_machine_call_starts_at_on_machine_and_a_script_without_it_leaves_no_message() {
    let text = EXAMPLE.replacen(
        "start = \"greet\"",
        "start = \"greet\"\non_machine = \"voicemail\"",
        1,
    ) + "\n[steps.voicemail]\nkind = \"say\"\ntext = \"Call us back, {{first_name}}.\"\nnext = \"left\"\n\n[steps.left]\nkind = \"hangup\"\ndisposition = \"machine_message_left\"\n";
    let mut call =
        RobotCall::start_on_machine(t(0), script(&text), fields(&[("first_name", "Ada")]))
            .expect("the script leaves a message");
    let said = drain(&mut call);
    assert!(matches!(
        &said[..],
        [RobotAction::Say { step, text, .. }] if step == "voicemail" && text == "Call us back, Ada."
    ));
    call.handle_playback_finished(t(1_000), playback_of(&said));
    assert!(matches!(
        &drain(&mut call)[..],
        [RobotAction::Hangup { disposition, .. }] if disposition == "machine_message_left"
    ));
    assert!(RobotCall::start_on_machine(t(0), script(EXAMPLE), fields(&[])).is_none());
}
