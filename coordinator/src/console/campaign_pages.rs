//! Campaign pages: the list, the create/edit form with every field of
//! [`CampaignSpec`] (errors shown next to their field), start/pause/resume/stop/archive, a
//! live panel per campaign; contact lists with CSV upload, import progress and the per-row
//! error report (the import itself is [`crate::contacts::import`]).

use super::audit;
use super::auth::Permission;
use super::web::{failure, message, render, when, Fields, Frame, Page, SignedIn};
use super::{ConsoleError, ConsoleState};
use crate::campaigns::{
    self, ApplianceShare, Campaign, CampaignAction, CampaignError, CampaignKind, CampaignSpec,
    DialMode, PriorityWeights, RetryPolicy, RetryRule,
};
use crate::contacts::{self, import, ContactList, ContactListId, ImportStatus};
use askama::Template;
use axum::extract::{Form, Multipart, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use callgate_common::compliance::CallingWindow;
use std::collections::HashMap;

/// Kinds as (value, label).
const KINDS: [(&str, &str); 3] = [
    ("marketing", "Marketing"),
    ("service", "Service"),
    ("collections", "Collections"),
];
/// Dial modes as (value, label).
const MODES: [(&str, &str); 4] = [
    ("preview", "Preview"),
    ("progressive", "Progressive"),
    ("predictive", "Predictive"),
    ("agentless", "Agentless (robot)"),
];
/// Weekdays as (value, label), Monday = 0.
const DAYS: [(&str, &str); 7] = [
    ("0", "Mon"),
    ("1", "Tue"),
    ("2", "Wed"),
    ("3", "Thu"),
    ("4", "Fri"),
    ("5", "Sat"),
    ("6", "Sun"),
];
/// Retry outcomes as (field prefix, label).
const RETRIES: [(&str, &str); 4] = [
    ("retry.busy", "Busy"),
    ("retry.no_answer", "No answer"),
    ("retry.failed", "Failed"),
    ("retry.machine", "Answering machine"),
];

/// The campaign form's values and its error, by field path.
pub struct CampaignForm {
    values: Fields,
    error_field: String,
    error: String,
}

impl CampaignForm {
    /// A value to put back in the field.
    pub fn v(&self, name: &str) -> &str {
        self.values.get(name)
    }
    /// Whether a multi-value field holds `value`.
    pub fn has(&self, name: &str, value: &str) -> bool {
        self.values.all(name).contains(&value)
    }
    /// The error to show next to `name` (an error on `name`, `name.x` or `name[i]...`).
    pub fn err(&self, name: &str) -> &str {
        let f = self.error_field.as_str();
        let hit = f == name
            || (f.starts_with(name) && matches!(f.as_bytes().get(name.len()), Some(b'.' | b'[')))
            || (name.starts_with(f)
                && !f.is_empty()
                && name.as_bytes().get(f.len()) == Some(&b'.'));
        if hit {
            &self.error
        } else {
            ""
        }
    }
}

fn minutes_text(m: u16) -> String {
    format!("{:02}:{:02}", m / 60, m % 60)
}

/// The form's fields for `spec`.
pub fn fields_of(spec: &CampaignSpec) -> Fields {
    let mut f: Vec<(String, String)> = Vec::new();
    let mut put = |k: &str, v: String| f.push((k.to_string(), v));
    put("name", spec.name.clone());
    put("kind", serde_plain(&spec.kind));
    put("dial_mode", serde_plain(&spec.dial_mode));
    put(
        "compliance_profile_id",
        spec.compliance_profile_id.to_string(),
    );
    put("starts_on", spec.starts_on.clone().unwrap_or_default());
    put("ends_on", spec.ends_on.clone().unwrap_or_default());
    put(
        "calling_window.start",
        minutes_text(spec.calling_window.start_minute),
    );
    put(
        "calling_window.end",
        minutes_text(spec.calling_window.end_minute),
    );
    for d in &spec.calling_window.days {
        put("calling_window.days", d.to_string());
    }
    put(
        "calling_window.holidays",
        spec.calling_window.holidays.join(", "),
    );
    put("caller_id", spec.caller_id.clone());
    put("script", spec.script.clone());
    put("disposition_codes", spec.disposition_codes.join(", "));
    put(
        "conversion_dispositions",
        spec.conversion_dispositions.join(", "),
    );
    put("wrap_up_seconds", spec.wrap_up_seconds.to_string());
    for (prefix, rule) in [
        ("retry.busy", spec.retry.busy),
        ("retry.no_answer", spec.retry.no_answer),
        ("retry.failed", spec.retry.failed),
        ("retry.machine", spec.retry.machine),
    ] {
        put(
            &format!("{prefix}.delay_seconds"),
            rule.delay_seconds.to_string(),
        );
        put(&format!("{prefix}.backoff"), rule.backoff.to_string());
        put(
            &format!("{prefix}.max_attempts"),
            rule.max_attempts.to_string(),
        );
    }
    put(
        "priority_weights.urgency",
        spec.priority_weights.urgency.to_string(),
    );
    put(
        "priority_weights.customer_value",
        spec.priority_weights.customer_value.to_string(),
    );
    put(
        "appliances",
        spec.appliances
            .iter()
            .map(|a| format!("{} {}", a.appliance, a.share))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    for l in &spec.contact_lists {
        put("contact_lists", l.to_string());
    }
    if spec.recording_consent_announcement {
        put("recording_consent_announcement", "1".into());
    }
    Fields(f)
}

fn serde_plain<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn parse_enum<T: serde::de::DeserializeOwned>(field: &str, v: &str) -> Result<T, ConsoleError> {
    serde_json::from_value(serde_json::Value::String(v.to_string()))
        .map_err(|_| ConsoleError::invalid(field, format!("{v:?} is not one of the choices")))
}

fn number<T: std::str::FromStr>(field: &str, v: &str) -> Result<T, ConsoleError> {
    v.trim()
        .parse()
        .map_err(|_| ConsoleError::invalid(field, format!("{v:?} is not a number")))
}

fn minutes(field: &str, v: &str) -> Result<u16, ConsoleError> {
    let bad = || ConsoleError::invalid(field, format!("{v:?} is not a time of day (HH:MM)"));
    let (h, m) = v.trim().split_once(':').ok_or_else(bad)?;
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m >= 60 || h > 24 || (h == 24 && m > 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn split_list(v: &str) -> Vec<String> {
    v.split([',', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The spec a submitted form describes; the error names the field at fault.
pub fn spec_of(f: &Fields) -> Result<CampaignSpec, ConsoleError> {
    let opt = |v: &str| Some(v.trim().to_string()).filter(|s| !s.is_empty());
    let rule = |prefix: &str| -> Result<RetryRule, ConsoleError> {
        let k = |s: &str| format!("{prefix}.{s}");
        Ok(RetryRule {
            delay_seconds: number(&k("delay_seconds"), f.get(&k("delay_seconds")))?,
            backoff: number(&k("backoff"), f.get(&k("backoff")))?,
            max_attempts: number(&k("max_attempts"), f.get(&k("max_attempts")))?,
        })
    };
    let mut appliances = Vec::new();
    for (i, line) in f
        .get("appliances")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        let mut parts = line.split_whitespace();
        let appliance = parts.next().unwrap_or_default().to_string();
        let share = match parts.next() {
            None => 1,
            Some(s) => number(&format!("appliances[{i}].share"), s)?,
        };
        appliances.push(ApplianceShare { appliance, share });
    }
    let mut days = Vec::new();
    for d in f.all("calling_window.days") {
        days.push(number::<u8>("calling_window.days", d)?);
    }
    let mut contact_lists = Vec::new();
    for (i, l) in f.all("contact_lists").into_iter().enumerate() {
        contact_lists.push(number(&format!("contact_lists[{i}]"), l)?);
    }
    Ok(CampaignSpec {
        name: f.get("name").trim().to_string(),
        kind: parse_enum::<CampaignKind>("kind", f.get("kind"))?,
        dial_mode: parse_enum::<DialMode>("dial_mode", f.get("dial_mode"))?,
        compliance_profile_id: number("compliance_profile_id", f.get("compliance_profile_id"))?,
        starts_on: opt(f.get("starts_on")),
        ends_on: opt(f.get("ends_on")),
        calling_window: CallingWindow {
            start_minute: minutes("calling_window.start", f.get("calling_window.start"))?,
            end_minute: minutes("calling_window.end", f.get("calling_window.end"))?,
            days,
            holidays: split_list(f.get("calling_window.holidays")),
        },
        caller_id: f.get("caller_id").trim().to_string(),
        script: f.get("script").to_string(),
        disposition_codes: split_list(f.get("disposition_codes")),
        conversion_dispositions: split_list(f.get("conversion_dispositions")),
        wrap_up_seconds: number("wrap_up_seconds", f.get("wrap_up_seconds"))?,
        retry: RetryPolicy {
            busy: rule("retry.busy")?,
            no_answer: rule("retry.no_answer")?,
            failed: rule("retry.failed")?,
            machine: rule("retry.machine")?,
        },
        priority_weights: PriorityWeights {
            urgency: number(
                "priority_weights.urgency",
                f.get("priority_weights.urgency"),
            )?,
            customer_value: number(
                "priority_weights.customer_value",
                f.get("priority_weights.customer_value"),
            )?,
        },
        appliances,
        contact_lists,
        recording_consent_announcement: f.checked("recording_consent_announcement"),
    })
}

fn default_spec(profile: i64) -> CampaignSpec {
    CampaignSpec {
        name: String::new(),
        kind: CampaignKind::Service,
        dial_mode: DialMode::Progressive,
        compliance_profile_id: profile,
        starts_on: None,
        ends_on: None,
        calling_window: CallingWindow::us_default(),
        caller_id: String::new(),
        script: String::new(),
        disposition_codes: Vec::new(),
        conversion_dispositions: Vec::new(),
        wrap_up_seconds: 30,
        retry: RetryPolicy::default(),
        priority_weights: PriorityWeights::default(),
        appliances: Vec::new(),
        contact_lists: Vec::new(),
        recording_consent_announcement: false,
    }
}

fn console_error(e: CampaignError) -> ConsoleError {
    match e {
        CampaignError::Invalid { field, reason } => ConsoleError::Invalid { field, reason },
        CampaignError::BadTransition { .. } => ConsoleError::invalid("state", e.to_string()),
        CampaignError::NotFound(_) => ConsoleError::NotFound("campaign"),
        CampaignError::Db(e) => ConsoleError::Db(e),
    }
}

struct CampaignRow {
    c: Campaign,
    updated: String,
}

#[derive(Template)]
#[template(path = "console/campaigns.html")]
struct ListPage {
    page: Frame,
    rows: Vec<CampaignRow>,
    can_edit: bool,
}

pub async fn list(State(state): State<ConsoleState>, me: SignedIn) -> Page {
    me.require(Permission::View)?;
    let all = all_campaigns(&state)
        .await
        .map_err(|e| failure(me.frame(), e))?;
    Ok(render(
        StatusCode::OK,
        &ListPage {
            page: me.frame(),
            rows: all
                .into_iter()
                .map(|c| CampaignRow {
                    updated: when(c.updated_at),
                    c,
                })
                .collect(),
            can_edit: me.may(Permission::RunCampaigns),
        },
    ))
}

/// Every campaign, by id.
pub async fn all_campaigns(state: &ConsoleState) -> Result<Vec<Campaign>, CampaignError> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = campaigns::page(&state.store, after, 500).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        out.extend(page);
    }
    Ok(out)
}

#[derive(Template)]
#[template(path = "console/campaign_form.html")]
struct FormPage {
    page: Frame,
    campaign: Option<Campaign>,
    form: CampaignForm,
    profiles: Vec<(i64, String)>,
    lists: Vec<ContactList>,
    kinds: [(&'static str, &'static str); 3],
    modes: [(&'static str, &'static str); 4],
    days: [(&'static str, &'static str); 7],
    retries: [(&'static str, &'static str); 4],
    csrf: String,
    can_edit: bool,
    actions: Vec<(&'static str, &'static str)>,
}

async fn form_page(
    state: &ConsoleState,
    me: &SignedIn,
    campaign: Option<Campaign>,
    values: Fields,
    error: Option<ConsoleError>,
    notice: Option<String>,
) -> Page {
    let profiles = crate::compliance::page_profiles(&state.store, 0, 1000)
        .await
        .map_err(|e| failure(me.frame(), e))?
        .into_iter()
        .map(|p| (p.id, p.name))
        .collect();
    let lists = contacts::page_lists(&state.store, 0, 1000)
        .await
        .map_err(|e| failure(me.frame(), e))?;
    let (error_field, error_text) = match &error {
        Some(ConsoleError::Invalid { field, reason }) => (field.clone(), reason.clone()),
        Some(other) => (String::new(), other.to_string()),
        None => (String::new(), String::new()),
    };
    let mut frame = me.frame();
    if error.is_some() {
        frame = frame.error(if error_field.is_empty() {
            error_text.clone()
        } else {
            format!("{error_field}: {error_text}")
        });
    }
    if let Some(n) = notice {
        frame = frame.notice(n);
    }
    let can_edit =
        me.may(Permission::RunCampaigns) && campaign.as_ref().is_none_or(|c| c.state.editable());
    let actions = match &campaign {
        Some(c) if me.may(Permission::RunCampaigns) => [
            ("schedule", "Start"),
            ("pause", "Pause"),
            ("resume", "Resume"),
            ("stop", "Stop"),
            ("archive", "Archive"),
        ]
        .into_iter()
        .filter(|(a, _)| {
            a.parse::<CampaignAction>()
                .is_ok_and(|a| c.state.after(a).is_ok())
        })
        .collect(),
        _ => Vec::new(),
    };
    let code = match &error {
        Some(ConsoleError::Invalid { .. }) => StatusCode::UNPROCESSABLE_ENTITY,
        Some(_) => StatusCode::BAD_REQUEST,
        None => StatusCode::OK,
    };
    Ok(render(
        code,
        &FormPage {
            page: frame,
            campaign,
            form: CampaignForm {
                values,
                error_field,
                error: error_text,
            },
            profiles,
            lists,
            kinds: KINDS,
            modes: MODES,
            days: DAYS,
            retries: RETRIES,
            csrf: me.session.csrf_token.clone(),
            can_edit,
            actions,
        },
    ))
}

pub async fn new_form(State(state): State<ConsoleState>, me: SignedIn) -> Page {
    me.require(Permission::RunCampaigns)?;
    let first_profile = crate::compliance::page_profiles(&state.store, 0, 1)
        .await
        .map_err(|e| failure(me.frame(), e))?
        .first()
        .map_or(0, |p| p.id);
    form_page(
        &state,
        &me,
        None,
        fields_of(&default_spec(first_profile)),
        None,
        None,
    )
    .await
}

pub async fn create(
    State(state): State<ConsoleState>,
    me: SignedIn,
    Form(f): Form<Fields>,
) -> Page {
    me.require_form(Permission::RunCampaigns, f.get("csrf"))?;
    let created = match spec_of(&f) {
        Ok(spec) => create_audited(&state, &me.actor(), spec).await,
        Err(e) => Err(e),
    };
    match created {
        Ok(c) => Ok(Redirect::to(&format!("/campaigns/{}?created=1", c.id)).into_response()),
        Err(e @ ConsoleError::Db(_)) => Err(failure(me.frame(), e).into()),
        Err(e) => form_page(&state, &me, None, f, Some(e), None).await,
    }
}

async fn load(state: &ConsoleState, me: &SignedIn, id: i64) -> Result<Campaign, Response> {
    campaigns::get(&state.store, id).await.map_err(|e| match e {
        CampaignError::NotFound(_) => message(StatusCode::NOT_FOUND, me.frame(), "Not found", e),
        other => failure(me.frame(), other),
    })
}

#[derive(serde::Deserialize)]
pub struct DetailQuery {
    created: Option<String>,
    done: Option<String>,
}

/// Creates a campaign and its audit row in one transaction.
async fn create_audited(
    state: &ConsoleState,
    actor: &audit::Actor,
    spec: CampaignSpec,
) -> Result<Campaign, ConsoleError> {
    let mut tx = state.store.begin_write().await?;
    let c = campaigns::create_in(&mut tx, spec)
        .await
        .map_err(console_error)?;
    let target = format!("campaign:{}", c.id);
    audit::record(
        &mut tx,
        actor,
        "campaign.create",
        &target,
        None::<&Campaign>,
        Some(&c),
    )
    .await?;
    tx.commit().await?;
    Ok(c)
}

/// Edits a campaign and writes its audit row (before and after) in one transaction.
async fn edit_audited(
    state: &ConsoleState,
    actor: &audit::Actor,
    id: i64,
    spec: CampaignSpec,
) -> Result<Campaign, ConsoleError> {
    let mut tx = state.store.begin_write().await?;
    let before = campaigns::get_in(&mut tx, id)
        .await
        .map_err(console_error)?;
    let after = campaigns::edit_in(&mut tx, id, spec)
        .await
        .map_err(console_error)?;
    let target = format!("campaign:{id}");
    audit::record(
        &mut tx,
        actor,
        "campaign.edit",
        &target,
        Some(&before),
        Some(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

/// Applies a lifecycle step and writes its audit row in one transaction; then does what the
/// step does after it commits (a stop returns the leases).
async fn apply_audited(
    state: &ConsoleState,
    actor: &audit::Actor,
    id: i64,
    act: CampaignAction,
) -> Result<Campaign, CampaignError> {
    let mut tx = state.store.begin_write().await?;
    let before = campaigns::get_in(&mut tx, id).await?;
    let after = campaigns::apply_in(&mut tx, id, act).await?;
    let target = format!("campaign:{id}");
    audit::record(
        &mut tx,
        actor,
        &format!("campaign.{act}"),
        &target,
        Some(&before),
        Some(&after),
    )
    .await
    .map_err(|e| match e {
        ConsoleError::Db(db) => CampaignError::Db(db),
        other => CampaignError::Invalid {
            field: "audit".into(),
            reason: other.to_string(),
        },
    })?;
    tx.commit().await?;
    campaigns::after_apply(&state.store, &after).await?;
    Ok(after)
}

pub async fn detail(
    State(state): State<ConsoleState>,
    me: SignedIn,
    Path(id): Path<i64>,
    axum::extract::Query(q): axum::extract::Query<DetailQuery>,
) -> Page {
    me.require(Permission::View)?;
    let c = load(&state, &me, id).await?;
    let notice = if q.created.is_some() {
        Some("Campaign created.".to_string())
    } else {
        q.done.map(|d| format!("Campaign {d}."))
    };
    let fields = fields_of(&c.spec);
    form_page(&state, &me, Some(c), fields, None, notice).await
}

pub async fn edit(
    State(state): State<ConsoleState>,
    me: SignedIn,
    Path(id): Path<i64>,
    Form(f): Form<Fields>,
) -> Page {
    me.require_form(Permission::RunCampaigns, f.get("csrf"))?;
    let before = load(&state, &me, id).await?;
    let edited = match spec_of(&f) {
        Ok(spec) => edit_audited(&state, &me.actor(), id, spec).await,
        Err(e) => Err(e),
    };
    match edited {
        Ok(_) => Ok(Redirect::to(&format!("/campaigns/{id}?done=saved")).into_response()),
        Err(e @ ConsoleError::Db(_)) => Err(failure(me.frame(), e).into()),
        Err(e) => form_page(&state, &me, Some(before), f, Some(e), None).await,
    }
}

pub async fn action(
    State(state): State<ConsoleState>,
    me: SignedIn,
    Path(id): Path<i64>,
    Form(f): Form<Fields>,
) -> Page {
    me.require_form(Permission::RunCampaigns, f.get("csrf"))?;
    let before = load(&state, &me, id).await?;
    let Ok(act) = f.get("action").parse::<CampaignAction>() else {
        return Err(message(
            StatusCode::BAD_REQUEST,
            me.frame(),
            "Bad request",
            "action: unknown",
        )
        .into());
    };
    match apply_audited(&state, &me.actor(), id, act).await {
        Ok(after) => {
            Ok(Redirect::to(&format!("/campaigns/{id}?done={}", after.state)).into_response())
        }
        Err(CampaignError::Db(e)) => Err(failure(me.frame(), e).into()),
        Err(e) => {
            let fields = fields_of(&before.spec);
            form_page(
                &state,
                &me,
                Some(before),
                fields,
                Some(console_error(e)),
                None,
            )
            .await
        }
    }
}

#[derive(Template)]
#[template(path = "console/lists.html")]
struct ListsPage {
    page: Frame,
    lists: Vec<ContactList>,
    imports: HashMap<i64, i64>,
    csrf: String,
    can_upload: bool,
}

async fn lists_response(
    state: &ConsoleState,
    me: &SignedIn,
    frame: Frame,
    code: StatusCode,
) -> Page {
    let lists = contacts::page_lists(&state.store, 0, 1000)
        .await
        .map_err(|e| failure(me.frame(), e))?;
    let latest: Vec<(i64, i64)> =
        sqlx::query_as("SELECT list_id, MAX(id) FROM contact_imports GROUP BY list_id")
            .fetch_all(state.store.pool())
            .await
            .map_err(|e| failure(me.frame(), e))?;
    Ok(render(
        code,
        &ListsPage {
            page: frame,
            lists,
            imports: latest.into_iter().collect(),
            csrf: me.session.csrf_token.clone(),
            can_upload: me.may(Permission::RunCampaigns),
        },
    ))
}

pub async fn lists(State(state): State<ConsoleState>, me: SignedIn) -> Page {
    me.require(Permission::View)?;
    lists_response(&state, &me, me.frame(), StatusCode::OK).await
}

/// Creates the list when asked, records the import and its audit row, in one transaction;
/// the rows are read afterwards, in the background.
async fn begin_import_audited(
    state: &ConsoleState,
    actor: &audit::Actor,
    list_id: Option<i64>,
    list_name: &str,
    region: &str,
    size: u64,
) -> Result<(ContactList, i64), contacts::ContactError> {
    let mut tx = state.store.begin_write().await?;
    let list = match list_id {
        Some(id) => contacts::get_list(&state.store, id).await?,
        None => contacts::create_list_in(&mut tx, list_name, region).await?,
    };
    let import_id = import::begin_import_in(&mut tx, ContactListId(list.id), Some(size)).await?;
    let after = serde_json::json!({"list": list, "import_id": import_id, "bytes": size});
    let target = format!("list:{}", list.id);
    audit::record(
        &mut tx,
        actor,
        "contacts.import",
        &target,
        None::<&ContactList>,
        Some(&after),
    )
    .await
    .map_err(|e| match e {
        ConsoleError::Db(db) => contacts::ContactError::Db(db),
        other => contacts::ContactError::Db(sqlx::Error::Protocol(other.to_string())),
    })?;
    tx.commit().await?;
    Ok((list, import_id))
}

/// The largest upload accepted.
pub const MAX_UPLOAD_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Streams a multipart CSV upload to a file, starts the import in the background and
/// sends the browser to its progress page.
pub async fn upload(State(state): State<ConsoleState>, me: SignedIn, mut parts: Multipart) -> Page {
    let mut csrf = String::new();
    let mut list_name = String::new();
    let mut region = String::from("US");
    let mut list_id: Option<i64> = None;
    let mut saved: Option<(std::path::PathBuf, u64)> = None;
    let bad = |me: &SignedIn, e: String| {
        Err::<Response, super::web::Refusal>(
            message(StatusCode::BAD_REQUEST, me.frame(), "Upload refused", e).into(),
        )
    };
    loop {
        let field = match parts.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return bad(&me, format!("the upload was cut short: {e}")),
        };
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            // The CSRF token comes first in the form; refuse before storing anything.
            me.require_form(Permission::RunCampaigns, &csrf)?;
            let path = state
                .upload_dir
                .join(format!("{}.csv", super::auth::random_hex(12)));
            match stream_to_file(field, &path).await {
                Ok(n) => saved = Some((path, n)),
                Err(e) => {
                    let _ = tokio::fs::remove_file(&path).await;
                    return bad(&me, e);
                }
            }
        } else {
            let text = match field.text().await {
                Ok(t) => t,
                Err(e) => return bad(&me, format!("{name}: {e}")),
            };
            match name.as_str() {
                "csrf" => csrf = text,
                "list_name" => list_name = text.trim().to_string(),
                "default_region" => region = text.trim().to_string(),
                "list_id" if !text.trim().is_empty() => list_id = text.trim().parse().ok(),
                _ => {}
            }
        }
    }
    me.require_form(Permission::RunCampaigns, &csrf)?;
    let Some((path, size)) = saved else {
        let frame = me.frame().error("file: choose a CSV file to upload");
        return lists_response(&state, &me, frame, StatusCode::BAD_REQUEST).await;
    };
    if list_id.is_none() && list_name.is_empty() {
        let _ = tokio::fs::remove_file(&path).await;
        let frame = me
            .frame()
            .error("list_name: name the new list or choose an existing one");
        return lists_response(&state, &me, frame, StatusCode::BAD_REQUEST).await;
    }
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) => return Err(failure(me.frame(), e).into()),
    };
    let begun = begin_import_audited(&state, &me.actor(), list_id, &list_name, &region, size).await;
    let (list, import_id) = match begun {
        Ok(b) => b,
        Err(contacts::ContactError::Db(e)) => {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(failure(me.frame(), e).into());
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&path).await;
            let frame = me.frame().error(e);
            return lists_response(&state, &me, frame, StatusCode::BAD_REQUEST).await;
        }
    };
    let (store, vault) = (state.store.clone(), state.vault.clone());
    tokio::spawn(async move {
        let result = import::run_import(
            &store,
            &vault,
            ContactListId(list.id),
            import_id,
            std::io::BufReader::new(file),
            Some(size),
            |_| {},
        )
        .await;
        if let Err(e) = result {
            tracing::warn!(import_id, error = %e, "console contact import failed");
        }
        let _ = tokio::fs::remove_file(&path).await;
    });
    Ok(Redirect::to(&format!("/imports/{import_id}")).into_response())
}

async fn stream_to_file(
    mut field: axum::extract::multipart::Field<'_>,
    path: &std::path::Path,
) -> Result<u64, String> {
    use tokio::io::AsyncWriteExt;
    let mut out = tokio::fs::File::create(path)
        .await
        .map_err(|e| format!("storing the upload: {e}"))?;
    let mut total = 0u64;
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| format!("the upload was cut short: {e}"))?
    {
        total += chunk.len() as u64;
        if total > MAX_UPLOAD_BYTES {
            return Err(format!("file: larger than {MAX_UPLOAD_BYTES} bytes"));
        }
        out.write_all(&chunk)
            .await
            .map_err(|e| format!("storing the upload: {e}"))?;
    }
    out.flush()
        .await
        .map_err(|e| format!("storing the upload: {e}"))?;
    Ok(total)
}

#[derive(Template)]
#[template(path = "console/import.html")]
struct ImportPage {
    page: Frame,
    status: ImportStatus,
    list: ContactList,
    percent: u64,
    running: bool,
}

pub async fn import_page(
    State(state): State<ConsoleState>,
    me: SignedIn,
    Path(id): Path<i64>,
) -> Page {
    me.require(Permission::View)?;
    let status = contacts::import_status(&state.store, id)
        .await
        .map_err(|e| failure(me.frame(), e))?
        .ok_or_else(|| {
            message(
                StatusCode::NOT_FOUND,
                me.frame(),
                "Not found",
                "no such import",
            )
        })?;
    let list = contacts::get_list(&state.store, status.list_id)
        .await
        .map_err(|e| failure(me.frame(), e))?;
    let percent = match status.bytes_total {
        Some(t) if t > 0 => (status.bytes_read.max(0) as u64 * 100 / t as u64).min(100),
        _ => 0,
    };
    let percent = if status.state == "done" { 100 } else { percent };
    Ok(render(
        StatusCode::OK,
        &ImportPage {
            page: me.frame(),
            running: status.state == "running",
            status,
            list,
            percent,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_survives_the_form_round_trip() {
        let mut spec = default_spec(3);
        spec.name = "Renewals".into();
        spec.caller_id = "+14155550100".into();
        spec.calling_window.days = vec![0, 2, 4];
        spec.calling_window.holidays = vec!["2026-12-25".into()];
        spec.disposition_codes = vec!["sale".into(), "callback".into()];
        spec.appliances = vec![ApplianceShare {
            appliance: "branch-1".into(),
            share: 3,
        }];
        spec.contact_lists = vec![7, 9];
        spec.recording_consent_announcement = true;
        spec.starts_on = Some("2026-11-01".into());
        assert_eq!(spec_of(&fields_of(&spec)).unwrap(), spec);
    }

    #[test]
    fn a_bad_value_names_its_field_and_the_error_shows_next_to_it() {
        let mut f = fields_of(&default_spec(1));
        for (k, v) in f.0.iter_mut() {
            if k == "retry.busy.max_attempts" {
                *v = "three".into();
            }
        }
        let e = spec_of(&f).unwrap_err();
        let (field, _) = super::super::web::field_error(&e);
        assert_eq!(field, "retry.busy.max_attempts");
        let form = CampaignForm {
            values: f,
            error_field: "appliances[1].share".into(),
            error: "must be 1 to 1000".into(),
        };
        assert_eq!(form.err("appliances"), "must be 1 to 1000");
        assert_eq!(form.err("caller_id"), "");
        let window = CampaignForm {
            values: Fields::default(),
            error_field: "calling_window".into(),
            error: "bad".into(),
        };
        assert_eq!(window.err("calling_window.start"), "bad");
        assert!(minutes("x", "25:00").is_err() && minutes("x", "08:30").unwrap() == 510);
    }
}
