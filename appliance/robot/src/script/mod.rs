//! Robot scripts: the declarative, versioned format ([`mod@format`]), `{{variable}}` templates
//! ([`template`]) and the validated [`RobotScript`] the interpreter runs.
//!
//! Owns loading and validation: a script is refused at load, with an error naming the step
//! and field, when a target step does not exist, a value is out of range, a prompt file is
//! missing or not an 8 kHz WAV, a step cannot be reached from the start, or steps can loop
//! without waiting for the caller. Reads the script and its prompt files at load and never
//! again. Must not: run a call (see [`crate::call`]) or synthesise speech.

pub mod format;
pub mod template;

use callgate_common::ids::AgentGroupId;
use callgate_media::dtmf::Digit;
use callgate_media::prompt::Prompt;
use callgate_media::wav::WavError;
use format::{AnnouncementSpec, ScriptFile, StepSpec};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use template::{is_variable_name, Template};

/// The only script file format this build reads.
pub const FORMAT: u32 = 1;
/// Steps one call may run when the script does not say.
pub const DEFAULT_MAX_STEPS: u32 = 200;
/// The most steps a script may allow one call.
pub const MAX_STEPS_LIMIT: u32 = 10_000;

/// Why a script was refused at load.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ScriptError {
    /// The script file could not be read.
    #[error("cannot read script {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    /// Not valid TOML, a missing or unknown key, or a value of the wrong type (the message
    /// names the line and key).
    #[error("script is not valid: {0}")]
    Parse(String),
    /// A top-level key has a bad value.
    #[error("{field}: {reason}")]
    Field { field: &'static str, reason: String },
    /// A step's field has a bad value or names an unknown step.
    #[error("step {step:?}.{field}: {reason}")]
    Step {
        step: String,
        field: String,
        reason: String,
    },
    /// A prompt file does not exist.
    #[error("step {step:?}.{field}: prompt file {} not found", path.display())]
    PromptMissing {
        step: String,
        field: String,
        path: PathBuf,
    },
    /// A prompt file is not an 8 kHz WAV the appliance can play.
    #[error("step {step:?}.{field}: prompt file {}: {reason}", path.display())]
    PromptInvalid {
        step: String,
        field: String,
        path: PathBuf,
        reason: WavError,
    },
    /// No path from `start` leads to the step.
    #[error("step {step:?}: unreachable from the start step")]
    Unreachable { step: String },
    /// These steps form a cycle that can run without the caller pressing a key.
    #[error("steps {} loop without waiting for input", fmt_cycle(.steps))]
    LoopWithoutInput { steps: Vec<String> },
}

fn fmt_cycle(steps: &[String]) -> String {
    let mut names: Vec<String> = steps.iter().map(|s| format!("{s:?}")).collect();
    if let Some(first) = names.first().cloned() {
        names.push(first);
    }
    names.join(" -> ")
}

/// Index of a step in [`RobotScript`].
pub(crate) type StepIndex = usize;

/// A prompt or a text to speak.
#[derive(Debug, Clone)]
pub(crate) enum Announcement {
    Play { file: PathBuf, prompt: Prompt },
    Say(Template),
}

/// A validated collect step.
#[derive(Debug, Clone)]
pub(crate) struct Collect {
    pub(crate) prompt: Announcement,
    pub(crate) max_digits: usize,
    pub(crate) min_digits: usize,
    pub(crate) terminator: Option<Digit>,
    pub(crate) timeout_ms: i64,
    pub(crate) retries: u32,
    pub(crate) valid: Option<BTreeSet<String>>,
    pub(crate) into: Option<String>,
    pub(crate) no_input_prompt: Option<Announcement>,
    pub(crate) invalid_prompt: Option<Announcement>,
    pub(crate) next: StepIndex,
    pub(crate) on_no_input: StepIndex,
    pub(crate) on_invalid: StepIndex,
}

/// A validated step.
#[derive(Debug, Clone)]
pub(crate) enum StepKind {
    Play {
        file: PathBuf,
        prompt: Prompt,
        next: StepIndex,
    },
    Say {
        text: Template,
        voice: Option<String>,
        next: StepIndex,
    },
    Collect(Box<Collect>),
    Branch {
        on: String,
        cases: BTreeMap<String, StepIndex>,
        default: StepIndex,
    },
    Set {
        var: String,
        value: Template,
        next: StepIndex,
    },
    Transfer {
        group: AgentGroupId,
        on_no_agent: Option<StepIndex>,
    },
    Hangup {
        disposition: String,
    },
}

impl StepKind {
    /// Successors, each with whether taking it needs the caller to press keys.
    fn edges(&self) -> Vec<(StepIndex, bool)> {
        match self {
            StepKind::Play { next, .. }
            | StepKind::Say { next, .. }
            | StepKind::Set { next, .. } => {
                vec![(*next, false)]
            }
            StepKind::Collect(c) => {
                vec![(c.next, true), (c.on_invalid, true), (c.on_no_input, false)]
            }
            StepKind::Branch { cases, default, .. } => cases
                .values()
                .chain(std::iter::once(default))
                .map(|&s| (s, false))
                .collect(),
            StepKind::Transfer { on_no_agent, .. } => {
                on_no_agent.iter().map(|&s| (s, false)).collect()
            }
            StepKind::Hangup { .. } => Vec::new(),
        }
    }
}

/// A validated step with its id.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub(crate) id: String,
    pub(crate) kind: StepKind,
}

/// A script that passed validation, with its prompts decoded: what [`crate::RobotCall`] runs.
/// Share one between calls with an `Arc`.
#[derive(Debug, Clone)]
pub struct RobotScript {
    name: String,
    version: u64,
    voice: Option<String>,
    max_steps: u32,
    defaults: BTreeMap<String, String>,
    pub(crate) steps: Vec<Step>,
    pub(crate) start: StepIndex,
    pub(crate) on_machine: Option<StepIndex>,
}

impl RobotScript {
    /// Reads and validates the script at `path`; prompt files are relative to its folder.
    pub fn load(path: &Path) -> Result<RobotScript, ScriptError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScriptError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let folder = path.parent().unwrap_or(Path::new("."));
        RobotScript::parse(&text, folder)
    }

    /// Validates the script `text`; prompt files are read from `prompt_folder`.
    pub fn parse(text: &str, prompt_folder: &Path) -> Result<RobotScript, ScriptError> {
        let file: ScriptFile =
            toml::from_str(text).map_err(|e| ScriptError::Parse(e.to_string()))?;
        Validator {
            file: &file,
            prompt_folder,
        }
        .run()
    }

    /// The script's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The script's own version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The TTS voice of `say` steps that name none (`None`: the engine's default).
    pub fn voice(&self) -> Option<&str> {
        self.voice.as_deref()
    }

    /// Whether the script leaves a message on answering machines (`on_machine`).
    pub fn leaves_machine_message(&self) -> bool {
        self.on_machine.is_some()
    }

    /// Steps one call may run before it is hung up.
    pub fn max_steps(&self) -> u32 {
        self.max_steps
    }

    /// Values for variables a contact lacks.
    pub fn defaults(&self) -> &BTreeMap<String, String> {
        &self.defaults
    }

    /// The step ids, sorted.
    pub fn step_ids(&self) -> impl Iterator<Item = &str> {
        self.steps.iter().map(|s| s.id.as_str())
    }

    /// The variables the script reads that no step sets: those a contact's fields (or the
    /// script's defaults) must provide.
    pub fn contact_variables(&self) -> BTreeSet<String> {
        let mut read = BTreeSet::new();
        let mut set = BTreeSet::from(["input".to_owned()]);
        let read_template = |t: &Template, read: &mut BTreeSet<String>| {
            read.extend(t.variables().map(str::to_owned));
        };
        for step in &self.steps {
            match &step.kind {
                StepKind::Say { text, .. } => read_template(text, &mut read),
                StepKind::Set { var, value, .. } => {
                    read_template(value, &mut read);
                    set.insert(var.clone());
                }
                StepKind::Branch { on, .. } => {
                    read.insert(on.clone());
                }
                StepKind::Collect(c) => {
                    for a in [
                        Some(&c.prompt),
                        c.no_input_prompt.as_ref(),
                        c.invalid_prompt.as_ref(),
                    ]
                    .into_iter()
                    .flatten()
                    {
                        if let Announcement::Say(t) = a {
                            read_template(t, &mut read);
                        }
                    }
                    if let Some(into) = &c.into {
                        set.insert(into.clone());
                    }
                }
                _ => {}
            }
        }
        read.difference(&set).cloned().collect()
    }
}

struct Validator<'a> {
    file: &'a ScriptFile,
    prompt_folder: &'a Path,
}

fn step_err(step: &str, field: &str, reason: impl Into<String>) -> ScriptError {
    ScriptError::Step {
        step: step.to_owned(),
        field: field.to_owned(),
        reason: reason.into(),
    }
}

fn is_step_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Validator<'_> {
    fn run(&self) -> Result<RobotScript, ScriptError> {
        let f = self.file;
        if f.format != FORMAT {
            return Err(ScriptError::Field {
                field: "format",
                reason: format!(
                    "must be {FORMAT} (this build reads format {FORMAT} only), found {}",
                    f.format
                ),
            });
        }
        if f.name.trim().is_empty() {
            return Err(ScriptError::Field {
                field: "name",
                reason: "must not be empty".into(),
            });
        }
        if f.version == 0 {
            return Err(ScriptError::Field {
                field: "version",
                reason: "must be 1 or more".into(),
            });
        }
        let max_steps = f.max_steps.unwrap_or(DEFAULT_MAX_STEPS);
        if !(1..=MAX_STEPS_LIMIT).contains(&max_steps) {
            return Err(ScriptError::Field {
                field: "max_steps",
                reason: format!("must be 1..={MAX_STEPS_LIMIT}"),
            });
        }
        if f.voice.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return Err(ScriptError::Field {
                field: "voice",
                reason: "must not be empty".into(),
            });
        }
        if let Some(bad) = f.defaults.keys().find(|k| !is_variable_name(k)) {
            return Err(ScriptError::Field {
                field: "defaults",
                reason: format!("{bad:?} is not a variable name (letters, digits and _)"),
            });
        }
        if f.steps.is_empty() {
            return Err(ScriptError::Field {
                field: "steps",
                reason: "a script needs at least one step".into(),
            });
        }
        if let Some(bad) = f.steps.keys().find(|k| !is_step_id(k)) {
            return Err(ScriptError::Field {
                field: "steps",
                reason: format!("{bad:?} is not a step id (letters, digits, _ and -)"),
            });
        }
        let index: BTreeMap<&str, StepIndex> = f
            .steps
            .keys()
            .enumerate()
            .map(|(i, k)| (k.as_str(), i))
            .collect();
        let start = *index
            .get(f.start.as_str())
            .ok_or_else(|| ScriptError::Field {
                field: "start",
                reason: format!("unknown step {:?}", f.start),
            })?;
        let on_machine = f
            .on_machine
            .as_deref()
            .map(|m| {
                index.get(m).copied().ok_or_else(|| ScriptError::Field {
                    field: "on_machine",
                    reason: format!("unknown step {m:?}"),
                })
            })
            .transpose()?;
        let mut steps = Vec::with_capacity(f.steps.len());
        for (id, spec) in &f.steps {
            steps.push(Step {
                id: id.clone(),
                kind: self.step(id, spec, &index)?,
            });
        }
        check_reachable(&steps, [start].into_iter().chain(on_machine))?;
        check_no_loop_without_input(&steps)?;
        Ok(RobotScript {
            name: f.name.clone(),
            version: f.version,
            voice: f.voice.clone(),
            max_steps,
            defaults: f.defaults.clone(),
            steps,
            start,
            on_machine,
        })
    }

    fn step(
        &self,
        id: &str,
        spec: &StepSpec,
        index: &BTreeMap<&str, StepIndex>,
    ) -> Result<StepKind, ScriptError> {
        let target = |field: &str, name: &str| -> Result<StepIndex, ScriptError> {
            index
                .get(name)
                .copied()
                .ok_or_else(|| step_err(id, field, format!("unknown step {name:?}")))
        };
        let template = |field: &str, text: &str| -> Result<Template, ScriptError> {
            Template::parse(text).map_err(|reason| step_err(id, field, reason))
        };
        let variable = |field: &str, name: &str| -> Result<String, ScriptError> {
            if is_variable_name(name) {
                Ok(name.to_owned())
            } else {
                Err(step_err(
                    id,
                    field,
                    format!("{name:?} is not a variable name (letters, digits and _)"),
                ))
            }
        };
        Ok(match spec {
            StepSpec::Play(p) => StepKind::Play {
                prompt: self.prompt(id, "file", &p.file)?,
                file: PathBuf::from(&p.file),
                next: target("next", &p.next)?,
            },
            StepSpec::Say(s) => {
                if s.text.trim().is_empty() {
                    return Err(step_err(id, "text", "must not be empty"));
                }
                if s.voice.as_deref().is_some_and(|v| v.trim().is_empty()) {
                    return Err(step_err(id, "voice", "must not be empty"));
                }
                StepKind::Say {
                    text: template("text", &s.text)?,
                    voice: s.voice.clone(),
                    next: target("next", &s.next)?,
                }
            }
            StepSpec::Collect(c) => {
                if !(1..=32).contains(&c.max_digits) {
                    return Err(step_err(id, "max_digits", "must be 1..=32"));
                }
                let min_digits = c.min_digits.unwrap_or(1);
                if !(1..=c.max_digits).contains(&min_digits) {
                    return Err(step_err(
                        id,
                        "min_digits",
                        format!("must be 1..={} (max_digits)", c.max_digits),
                    ));
                }
                if !(1_000..=60_000).contains(&c.timeout_ms) {
                    return Err(step_err(id, "timeout_ms", "must be 1000..=60000"));
                }
                if c.retries > 5 {
                    return Err(step_err(id, "retries", "must be 0..=5"));
                }
                let terminator = match &c.terminator {
                    None => None,
                    Some(t) => {
                        let mut chars = t.chars();
                        match (chars.next().and_then(Digit::from_char), chars.next()) {
                            (Some(d), None) => Some(d),
                            _ => {
                                return Err(step_err(
                                    id,
                                    "terminator",
                                    format!("{t:?} is not one DTMF key (0-9, *, #, A-D)"),
                                ))
                            }
                        }
                    }
                };
                let valid = match &c.valid {
                    None => None,
                    Some(list) => {
                        if list.is_empty() {
                            return Err(step_err(
                                id,
                                "valid",
                                "must list at least one input, or be left out",
                            ));
                        }
                        for v in list {
                            let keys_ok = v.chars().all(|ch| Digit::from_char(ch).is_some());
                            let n = v.chars().count() as u32;
                            if !keys_ok || !(min_digits..=c.max_digits).contains(&n) {
                                return Err(step_err(
                                    id,
                                    "valid",
                                    format!(
                                        "{v:?} is not {min_digits}..={} DTMF keys",
                                        c.max_digits
                                    ),
                                ));
                            }
                            if terminator.is_some_and(|t| v.contains(t.as_char())) {
                                return Err(step_err(
                                    id,
                                    "valid",
                                    format!("{v:?} contains the terminator"),
                                ));
                            }
                        }
                        Some(list.iter().cloned().collect())
                    }
                };
                let into = c.into.as_deref().map(|v| variable("into", v)).transpose()?;
                Ok::<_, ScriptError>(StepKind::Collect(Box::new(Collect {
                    prompt: self.announcement(id, "prompt", &c.prompt)?,
                    max_digits: c.max_digits as usize,
                    min_digits: min_digits as usize,
                    terminator,
                    timeout_ms: i64::from(c.timeout_ms),
                    retries: c.retries,
                    valid,
                    into,
                    no_input_prompt: c
                        .no_input_prompt
                        .as_ref()
                        .map(|a| self.announcement(id, "no_input_prompt", a))
                        .transpose()?,
                    invalid_prompt: c
                        .invalid_prompt
                        .as_ref()
                        .map(|a| self.announcement(id, "invalid_prompt", a))
                        .transpose()?,
                    next: target("next", &c.next)?,
                    on_no_input: target("on_no_input", &c.on_no_input)?,
                    on_invalid: target("on_invalid", &c.on_invalid)?,
                })))?
            }
            StepSpec::Branch(b) => {
                let mut cases = BTreeMap::new();
                for (value, to) in &b.cases {
                    cases.insert(value.clone(), target(&format!("cases.{value:?}"), to)?);
                }
                StepKind::Branch {
                    on: variable("on", &b.on)?,
                    cases,
                    default: target("default", &b.default)?,
                }
            }
            StepSpec::Set(s) => StepKind::Set {
                var: variable("var", &s.var)?,
                value: template("value", &s.value)?,
                next: target("next", &s.next)?,
            },
            StepSpec::Transfer(t) => StepKind::Transfer {
                group: t.group,
                on_no_agent: t
                    .on_no_agent
                    .as_deref()
                    .map(|s| target("on_no_agent", s))
                    .transpose()?,
            },
            StepSpec::Hangup(h) => {
                if h.disposition.trim().is_empty() || h.disposition.len() > 64 {
                    return Err(step_err(id, "disposition", "must be 1..=64 characters"));
                }
                StepKind::Hangup {
                    disposition: h.disposition.clone(),
                }
            }
        })
    }

    fn announcement(
        &self,
        id: &str,
        field: &str,
        spec: &AnnouncementSpec,
    ) -> Result<Announcement, ScriptError> {
        Ok(match spec {
            AnnouncementSpec::Play(file) => Announcement::Play {
                prompt: self.prompt(id, &format!("{field}.play"), file)?,
                file: PathBuf::from(file),
            },
            AnnouncementSpec::Say(text) => {
                if text.trim().is_empty() {
                    return Err(step_err(id, &format!("{field}.say"), "must not be empty"));
                }
                Announcement::Say(
                    Template::parse(text).map_err(|r| step_err(id, &format!("{field}.say"), r))?,
                )
            }
        })
    }

    /// Reads and decodes a prompt file, refusing paths that leave the prompt folder.
    fn prompt(&self, id: &str, field: &str, file: &str) -> Result<Prompt, ScriptError> {
        let relative = Path::new(file);
        if file.is_empty()
            || relative
                .components()
                .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(step_err(
                id,
                field,
                format!("{file:?} must be a relative path inside the prompt folder"),
            ));
        }
        let path = self.prompt_folder.join(relative);
        let bytes = std::fs::read(&path).map_err(|_| ScriptError::PromptMissing {
            step: id.to_owned(),
            field: field.to_owned(),
            path: path.clone(),
        })?;
        Prompt::from_wav(&bytes).map_err(|reason| ScriptError::PromptInvalid {
            step: id.to_owned(),
            field: field.to_owned(),
            path,
            reason,
        })
    }
}

fn check_reachable(
    steps: &[Step],
    roots: impl IntoIterator<Item = StepIndex>,
) -> Result<(), ScriptError> {
    let mut seen = vec![false; steps.len()];
    let mut stack: Vec<StepIndex> = roots.into_iter().collect();
    while let Some(s) = stack.pop() {
        if std::mem::replace(&mut seen[s], true) {
            continue;
        }
        stack.extend(steps[s].kind.edges().into_iter().map(|(to, _)| to));
    }
    match seen.iter().position(|&r| !r) {
        Some(i) => Err(ScriptError::Unreachable {
            step: steps[i].id.clone(),
        }),
        None => Ok(()),
    }
}

/// Refuses a cycle made only of edges the script takes without caller input.
fn check_no_loop_without_input(steps: &[Step]) -> Result<(), ScriptError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut mark = vec![Mark::New; steps.len()];
    for root in 0..steps.len() {
        if mark[root] != Mark::New {
            continue;
        }
        // Depth-first, keeping the current path to report the cycle.
        let mut path: Vec<(StepIndex, Vec<StepIndex>)> = Vec::new();
        let silent = |s: StepIndex| -> Vec<StepIndex> {
            steps[s]
                .kind
                .edges()
                .into_iter()
                .filter(|&(_, input)| !input)
                .map(|(to, _)| to)
                .collect()
        };
        mark[root] = Mark::OnPath;
        path.push((root, silent(root)));
        while let Some((node, pending)) = path.last_mut() {
            let node = *node;
            match pending.pop() {
                Some(to) => match mark[to] {
                    Mark::OnPath => {
                        let from = path.iter().position(|(n, _)| *n == to).unwrap_or(0);
                        return Err(ScriptError::LoopWithoutInput {
                            steps: path[from..]
                                .iter()
                                .map(|(n, _)| steps[*n].id.clone())
                                .collect(),
                        });
                    }
                    Mark::New => {
                        mark[to] = Mark::OnPath;
                        path.push((to, silent(to)));
                    }
                    Mark::Done => {}
                },
                None => {
                    mark[node] = Mark::Done;
                    path.pop();
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
