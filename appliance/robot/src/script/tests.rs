//! Loading and validation of robot scripts.

use super::*;
use callgate_media::wav::pcm16_header;

/// The example of the format's documentation, kept here so the doc cannot drift.
pub(crate) const EXAMPLE: &str = r#"
format = 1
name = "Payment reminder"
version = 3
start = "greet"

[defaults]
first_name = "there"

[steps.greet]
kind = "say"
text = "Hello {{first_name}}, this is Acme Energy."
next = "ask_consent"

[steps.ask_consent]
kind = "collect"
prompt = { play = "consent.wav" }
max_digits = 1
timeout_ms = 5000
retries = 2
valid = ["1", "2"]
into = "consent"
next = "route"
on_no_input = "goodbye"
on_invalid = "goodbye"

[steps.route]
kind = "branch"
on = "consent"
cases = { "1" = "to_agent", "2" = "declined" }
default = "goodbye"

[steps.to_agent]
kind = "transfer"
group = 2
on_no_agent = "goodbye"

[steps.declined]
kind = "hangup"
disposition = "declined"

[steps.goodbye]
kind = "hangup"
disposition = "no_response"
"#;

/// A folder holding `consent.wav` (0.1 s of silence, 8 kHz).
pub(crate) fn prompt_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut wav = pcm16_header(1, 800).to_vec();
    wav.extend(std::iter::repeat_n(0u8, 1600));
    std::fs::write(dir.path().join("consent.wav"), wav).unwrap();
    dir
}

fn load(text: &str) -> Result<RobotScript, ScriptError> {
    let dir = prompt_folder();
    RobotScript::parse(text, dir.path())
}

fn error_text(text: &str) -> String {
    load(text).unwrap_err().to_string()
}

#[test]
fn the_documented_example_loads() {
    let s = load(EXAMPLE).unwrap();
    assert_eq!(s.name(), "Payment reminder");
    assert_eq!(s.version(), 3);
    assert_eq!(s.max_steps(), DEFAULT_MAX_STEPS);
    assert_eq!(s.step_ids().count(), 6);
    assert_eq!(
        s.contact_variables().into_iter().collect::<Vec<_>>(),
        ["first_name"],
        "consent is set by the collect step"
    );
}

#[test]
fn the_format_doc_example_matches_the_tested_one() {
    let doc = include_str!("format.rs");
    let in_doc: String = doc
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .skip_while(|l| !l.starts_with("```toml"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .map(|l| format!("{l}\n"))
        .collect();
    let dir = prompt_folder();
    RobotScript::parse(&in_doc, dir.path()).expect("the example in format.rs loads");
}

#[test]
fn retries_out_of_range_names_the_step_and_field() {
    let text = EXAMPLE.replace("retries = 2", "retries = 9");
    assert_eq!(
        error_text(&text),
        r#"step "ask_consent".retries: must be 0..=5"#
    );
}

#[test]
fn an_unknown_target_names_the_step_field_and_target() {
    let text = EXAMPLE.replace(r#"next = "route""#, r#"next = "rout""#);
    assert_eq!(
        error_text(&text),
        r#"step "ask_consent".next: unknown step "rout""#
    );
    let text = EXAMPLE.replace(r#""2" = "declined""#, r#""2" = "nowhere""#);
    assert_eq!(
        error_text(&text),
        r#"step "route".cases."2": unknown step "nowhere""#
    );
    let text = EXAMPLE.replace(r#"start = "greet""#, r#"start = "hello""#);
    assert_eq!(error_text(&text), r#"start: unknown step "hello""#);
}

#[test]
fn an_unknown_key_is_refused_with_its_name() {
    let text = EXAMPLE.replace("retries = 2", "retries = 2\nretrys = 3");
    let e = error_text(&text);
    assert!(e.contains("retrys"), "{e}");
    let text = EXAMPLE.replace("version = 3", "version = 3\ncolour = 1");
    assert!(error_text(&text).contains("colour"));
    let text = EXAMPLE.replace(r#"kind = "say""#, r#"kind = "sing""#);
    assert!(error_text(&text).contains("sing"));
}

#[test]
fn a_missing_prompt_file_is_named() {
    let text = EXAMPLE.replace("consent.wav", "consnet.wav");
    let e = load(&text).unwrap_err();
    match &e {
        ScriptError::PromptMissing { step, field, path } => {
            assert_eq!(step, "ask_consent");
            assert_eq!(field, "prompt.play");
            assert!(path.ends_with("consnet.wav"));
        }
        other => panic!("expected PromptMissing, got {other:?}"),
    }
    assert!(e.to_string().contains("consnet.wav"));
}

#[test]
fn a_prompt_that_is_not_8khz_is_refused_with_the_reason() {
    let dir = prompt_folder();
    let mut wav = pcm16_header(1, 4).to_vec();
    wav[24..28].copy_from_slice(&44_100u32.to_le_bytes());
    wav.extend([0u8; 8]);
    std::fs::write(dir.path().join("consent.wav"), wav).unwrap();
    let e = RobotScript::parse(EXAMPLE, dir.path()).unwrap_err();
    assert!(matches!(
        e,
        ScriptError::PromptInvalid {
            reason: WavError::UnsupportedRate(44_100),
            ..
        }
    ));
}

#[test]
fn a_prompt_path_leaving_the_prompt_folder_is_refused() {
    for bad in ["../consent.wav", "/etc/passwd"] {
        let text = EXAMPLE.replace("consent.wav", bad);
        assert!(
            error_text(&text).contains("relative path inside the prompt folder"),
            "{bad}"
        );
    }
}

#[test]
fn an_unreachable_step_is_refused() {
    let text = format!("{EXAMPLE}\n[steps.orphan]\nkind = \"hangup\"\ndisposition = \"x\"\n");
    assert_eq!(
        error_text(&text),
        r#"step "orphan": unreachable from the start step"#
    );
}

#[test]
fn a_loop_without_input_is_refused() {
    let text = r#"
format = 1
name = "spin"
version = 1
start = "a"
[steps.a]
kind = "say"
text = "hi"
next = "b"
[steps.b]
kind = "set"
var = "x"
value = "1"
next = "a"
"#;
    assert_eq!(
        error_text(text),
        r#"steps "a" -> "b" -> "a" loop without waiting for input"#
    );
}

#[test]
fn a_loop_through_no_input_is_refused_but_one_through_input_is_allowed() {
    let looping = |edge: &str| {
        format!(
            r#"
format = 1
name = "menu"
version = 1
start = "menu"
[steps.menu]
kind = "collect"
prompt = {{ say = "Press 1 to hear this again" }}
max_digits = 1
timeout_ms = 3000
retries = 1
next = "{next}"
on_no_input = "{no_input}"
on_invalid = "bye"
[steps.again]
kind = "say"
text = "Again."
next = "menu"
[steps.bye]
kind = "hangup"
disposition = "done"
"#,
            next = if edge == "next" { "again" } else { "bye" },
            no_input = if edge == "no_input" { "again" } else { "bye" },
        )
    };
    load(&looping("next")).expect("a loop the caller drives is fine");
    assert!(matches!(
        load(&looping("no_input")),
        Err(ScriptError::LoopWithoutInput { .. })
    ));
}

#[test]
fn a_transfer_retry_loop_is_refused() {
    let text = r#"
format = 1
name = "hold"
version = 1
start = "t"
[steps.t]
kind = "transfer"
group = 1
on_no_agent = "sorry"
[steps.sorry]
kind = "say"
text = "Please hold."
next = "t"
"#;
    assert!(matches!(
        load(text),
        Err(ScriptError::LoopWithoutInput { .. })
    ));
}

#[test]
fn other_bad_values_name_their_field() {
    let cases = [
        ("format = 1", "format = 2", "format: must be 1"),
        (
            "max_digits = 1",
            "max_digits = 0",
            r#"step "ask_consent".max_digits: must be 1..=32"#,
        ),
        (
            "timeout_ms = 5000",
            "timeout_ms = 10",
            r#"step "ask_consent".timeout_ms: must be 1000..=60000"#,
        ),
        (
            r#"valid = ["1", "2"]"#,
            r#"valid = ["1", "x"]"#,
            r#"step "ask_consent".valid: "x" is not 1..=1 DTMF keys"#,
        ),
        (
            r#"into = "consent""#,
            r#"into = "con sent""#,
            r#"step "ask_consent".into: "con sent" is not a variable name"#,
        ),
        (
            "{{first_name}}",
            "{{first_name",
            r#"step "greet".text: `{{` at byte 6 is never closed"#,
        ),
        (
            r#"disposition = "declined""#,
            r#"disposition = """#,
            r#"step "declined".disposition: must be 1..=64 characters"#,
        ),
        (
            "max_digits = 1",
            "max_digits = 1\nterminator = \"##\"",
            r###"step "ask_consent".terminator: "##" is not one DTMF key"###,
        ),
    ];
    for (from, to, expected) in cases {
        let text = EXAMPLE.replacen(from, to, 1);
        let e = error_text(&text);
        assert!(e.starts_with(expected), "{to}: got {e}");
    }
}

#[test]
fn a_missing_required_key_is_named() {
    let text = EXAMPLE.replace("retries = 2\n", "");
    let e = error_text(&text);
    assert!(e.contains("retries"), "{e}");
}

#[test]
fn load_reads_prompts_beside_the_script_file() {
    let dir = prompt_folder();
    let path = dir.path().join("reminder.toml");
    std::fs::write(&path, EXAMPLE).unwrap();
    assert_eq!(RobotScript::load(&path).unwrap().version(), 3);
    assert!(matches!(
        RobotScript::load(&dir.path().join("nope.toml")),
        Err(ScriptError::Read { .. })
    ));
}

proptest::proptest! {
    #[test]
    fn a_damaged_script_is_refused_or_loaded_never_a_panic(
        cut in 0usize..1_200,
        len in 0usize..40,
        insert in "[ -~\n]{0,12}",
    ) {
        let mut text = EXAMPLE.to_owned();
        let start = cut.min(text.len());
        let end = (start + len).min(text.len());
        text.replace_range(start..end, &insert);
        let dir = prompt_folder();
        let _ = RobotScript::parse(&text, dir.path());
    }

    #[test]
    fn template_parsing_never_panics_and_plain_text_renders_as_itself(text in "[ -~]{0,60}") {
        if let Ok(t) = Template::parse(&text) {
            if !text.contains("{{") {
                proptest::prop_assert_eq!(t.render(&Default::default()), text);
            }
        }
    }
}

/// The example with a message for answering machines.
fn with_machine_message(on_machine: &str) -> String {
    EXAMPLE.replacen(
        "start = \"greet\"",
        &format!("start = \"greet\"\non_machine = \"{on_machine}\""),
        1,
    ) + "\n[steps.voicemail]\nkind = \"say\"\ntext = \"Please call Acme back.\"\nnext = \"left\"\n\n[steps.left]\nkind = \"hangup\"\ndisposition = \"machine_message_left\"\n"
}

#[test]
fn steps_reached_only_from_on_machine_are_reachable() {
    let s = load(&with_machine_message("voicemail")).unwrap();
    assert!(s.leaves_machine_message());
    assert!(!load(EXAMPLE).unwrap().leaves_machine_message());
}

#[test]
fn an_unknown_on_machine_step_is_named() {
    let e = error_text(&with_machine_message("voicemale"));
    assert!(e.contains("on_machine") && e.contains("voicemale"), "{e}");
}
