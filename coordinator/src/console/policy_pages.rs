//! The routing-policy editor (ordered rules: priority, condition, action) with validation and
//! a preview of which rule a sample contact hits ([`RoutingPolicy::decide`]); do-not-call
//! management; compliance profiles. The rules, lists and profiles are
//! [`crate::routing`]'s and [`crate::compliance`]'s: this module only turns forms into
//! their types and back, and audits every change.

use super::audit;
use super::auth::Permission;
use super::dnc_upload::RowError;
use super::web::{failure, render, when, Fields, Frame, Page, SignedIn};
use super::{ConsoleError, ConsoleState};
use crate::compliance::{self, DncView, NewDnc, PolicyError, StoredProfile};
use crate::routing::{
    self, CallFacts, Condition, RouteAction, RoutingError, RoutingPolicy, RoutingRule,
};
use askama::Template;
use axum::extract::{Form, State};
use axum::http::StatusCode;
use callgate_common::compliance::ComplianceProfile;

/// Blank rows offered under the existing rules.
const BLANK_RULES: usize = 2;

/// Conditions a rule's builder combines with "all of" / "any of" beside its first one.
const EXTRA_CLAUSES: usize = 2;

/// One more condition of a rule's builder (kind empty: unused).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Clause {
    pub kind: String,
    pub key: String,
    pub value: String,
}

/// One rule row of the editor, as text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleRow {
    pub priority: String,
    pub name: String,
    /// The condition builder's kind: `always`, `tag`, `field`, `last_outcome`,
    /// `campaign`, or `json` (or empty: `when` as JSON).
    pub kind: String,
    /// The builder's field name (kind `field`).
    pub key: String,
    /// The builder's value (tag, field value, outcome, campaign id).
    pub value: String,
    /// The condition as JSON (kind `json`).
    pub when: String,
    /// How the first clause and the `extra` ones combine: `all` (the default) or `any`.
    pub join: String,
    /// Further builder clauses; those with an empty kind are unused.
    pub extra: Vec<Clause>,
    pub action: String,
    pub target: String,
    pub error: String,
}

fn rows_of(policy: &RoutingPolicy) -> Vec<RuleRow> {
    let mut rows: Vec<RuleRow> = policy
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let (action, target) = match &r.then {
                RouteAction::AgentGroup(g) => ("agent_group", g.to_string()),
                RouteAction::LastAgent { fallback_group } => {
                    ("last_agent", fallback_group.to_string())
                }
                RouteAction::RobotScript(s) => ("robot_script", s.clone()),
            };
            let (clauses, join) = match &r.when {
                Condition::All(parts) => (builder_clauses(parts), "all"),
                Condition::Any(parts) => (builder_clauses(parts), "any"),
                simple => (builder_clauses(std::slice::from_ref(simple)), "all"),
            };
            let mut clauses = clauses.unwrap_or_else(|| {
                vec![Clause {
                    kind: "json".into(),
                    ..Clause::default()
                }]
            });
            let first = clauses.remove(0);
            clauses.resize(EXTRA_CLAUSES, Clause::default());
            RuleRow {
                priority: ((i + 1) * 10).to_string(),
                name: r.name.clone(),
                kind: first.kind,
                key: first.key,
                value: first.value,
                when: serde_json::to_string(&r.when).expect("conditions serialise"),
                join: join.into(),
                extra: clauses,
                action: action.into(),
                target,
                error: String::new(),
            }
        })
        .collect();
    rows.extend((0..BLANK_RULES).map(|_| RuleRow {
        kind: "tag".into(),
        join: "all".into(),
        extra: vec![Clause::default(); EXTRA_CLAUSES],
        ..RuleRow::default()
    }));
    rows
}

/// `parts` as builder clauses, when there are 1 to 1 + [`EXTRA_CLAUSES`] of them and none
/// is itself compound; `None`: the condition is edited as JSON.
fn builder_clauses(parts: &[Condition]) -> Option<Vec<Clause>> {
    if parts.is_empty() || parts.len() > 1 + EXTRA_CLAUSES {
        return None;
    }
    parts
        .iter()
        .map(|c| {
            let (kind, key, value) = match c {
                Condition::Always => ("always", String::new(), String::new()),
                Condition::Tag(t) => ("tag", String::new(), t.clone()),
                Condition::Field { name, equals } => ("field", name.clone(), equals.clone()),
                Condition::LastOutcome(o) => ("last_outcome", String::new(), o.clone()),
                Condition::Campaign(c) => ("campaign", String::new(), c.to_string()),
                Condition::All(_) | Condition::Any(_) => return None,
            };
            Some(Clause {
                kind: kind.into(),
                key,
                value,
            })
        })
        .collect()
}

fn rows_from(f: &Fields) -> Vec<RuleRow> {
    let mut rows = Vec::new();
    for i in 0.. {
        let k = |s: &str| format!("rule.{i}.{s}");
        if !f
            .0
            .iter()
            .any(|(name, _)| name.starts_with(&format!("rule.{i}.")))
        {
            break;
        }
        rows.push(RuleRow {
            priority: f.get(&k("priority")).trim().to_string(),
            name: f.get(&k("name")).trim().to_string(),
            kind: f.get(&k("kind")).trim().to_string(),
            key: f.get(&k("key")).trim().to_string(),
            value: f.get(&k("value")).trim().to_string(),
            when: f.get(&k("when")).trim().to_string(),
            join: f.get(&k("join")).trim().to_string(),
            extra: (0..EXTRA_CLAUSES)
                .map(|j| Clause {
                    kind: f.get(&k(&format!("extra.{j}.kind"))).trim().to_string(),
                    key: f.get(&k(&format!("extra.{j}.key"))).trim().to_string(),
                    value: f.get(&k(&format!("extra.{j}.value"))).trim().to_string(),
                })
                .collect(),
            action: f.get(&k("action")).to_string(),
            target: f.get(&k("target")).trim().to_string(),
            error: String::new(),
        });
    }
    rows
}

/// A row's condition: from the builder (kind, field name, value, and the further clauses
/// combined by "all of" / "any of"), or its JSON text when the kind is `json` or absent.
fn condition_of(r: &RuleRow) -> Result<Condition, String> {
    if matches!(r.kind.as_str(), "" | "json") {
        return clause_condition(&r.kind, &r.key, &r.value, &r.when);
    }
    let first = clause_condition(&r.kind, &r.key, &r.value, "")?;
    let mut parts = vec![first];
    for (j, c) in r.extra.iter().enumerate() {
        if c.kind.is_empty() {
            continue;
        }
        if c.kind == "json" {
            return Err(format!(
                "condition {}: JSON only as the first condition",
                j + 2
            ));
        }
        parts.push(
            clause_condition(&c.kind, &c.key, &c.value, "")
                .map_err(|e| format!("condition {}: {e}", j + 2))?,
        );
    }
    if parts.len() == 1 {
        return Ok(parts.remove(0));
    }
    match r.join.as_str() {
        "" | "all" => Ok(Condition::All(parts)),
        "any" => Ok(Condition::Any(parts)),
        other => Err(format!("{other:?} is neither \"all\" nor \"any\"")),
    }
}

/// One builder clause's condition, or `when` parsed as JSON for kind `json` or none.
fn clause_condition(kind: &str, key: &str, value: &str, when: &str) -> Result<Condition, String> {
    let given = || {
        if value.is_empty() {
            Err(format!("{kind}: give a value"))
        } else {
            Ok(value.to_string())
        }
    };
    Ok(match kind {
        "always" => Condition::Always,
        "tag" => Condition::Tag(given()?),
        "last_outcome" => Condition::LastOutcome(given()?),
        "field" => {
            if key.is_empty() {
                return Err("field: give the field's name".into());
            }
            Condition::Field {
                name: key.to_string(),
                equals: given()?,
            }
        }
        "campaign" => Condition::Campaign(
            given()?
                .parse()
                .map_err(|_| format!("campaign: {value:?} is not a campaign id"))?,
        ),
        "" | "json" => serde_json::from_str(when).map_err(|e| {
            format!(
                "{e} (e.g. \"always\", {{\"tag\":\"complaint\"}}, \
                 {{\"field\":{{\"name\":\"tier\",\"equals\":\"platinum\"}}}}, \
                 {{\"last_outcome\":\"unresolved\"}}, {{\"campaign\":3}}, {{\"all\":[...]}}, {{\"any\":[...]}})"
            )
        })?,
        other => return Err(format!("{other:?} is not one of the kinds")),
    })
}

/// The policy the rows describe, rules ordered by priority (ties keep their row order);
/// rows with no name are left out. `Err((row, message))` names the row at fault.
pub fn policy_of(rows: &[RuleRow]) -> Result<(RoutingPolicy, Vec<usize>), (usize, String)> {
    let mut used: Vec<(i64, usize, RoutingRule)> = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        if r.name.is_empty() {
            continue;
        }
        let priority: i64 = r.priority.parse().map_err(|_| {
            (
                i,
                format!("priority: {:?} is not a whole number", r.priority),
            )
        })?;
        let when = condition_of(r).map_err(|e| (i, format!("condition: {e}")))?;
        let group = || -> Result<i64, (usize, String)> {
            r.target.parse().map_err(|_| {
                (
                    i,
                    format!("action: {:?} is not an agent group id", r.target),
                )
            })
        };
        let then = match r.action.as_str() {
            "agent_group" => RouteAction::AgentGroup(group()?),
            "last_agent" => RouteAction::LastAgent {
                fallback_group: group()?,
            },
            "robot_script" => RouteAction::RobotScript(r.target.clone()),
            other => return Err((i, format!("action: {other:?} is not one of the choices"))),
        };
        used.push((
            priority,
            i,
            RoutingRule {
                name: r.name.clone(),
                when,
                then,
            },
        ));
    }
    used.sort_by_key(|(p, i, _)| (*p, *i));
    let order = used.iter().map(|(_, i, _)| *i).collect();
    Ok((
        RoutingPolicy {
            rules: used.into_iter().map(|(_, _, r)| r).collect(),
        },
        order,
    ))
}

/// The row a `rules[n]...` error of the sorted policy points at.
fn row_of_field(field: &str, order: &[usize]) -> Option<usize> {
    let n: usize = field
        .strip_prefix("rules[")?
        .split(']')
        .next()?
        .parse()
        .ok()?;
    order.get(n).copied()
}

/// A sample contact for the preview.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub campaign: String,
    pub fields: String,
    pub tags: String,
    pub last_outcome: String,
    pub result: Option<String>,
}

fn facts_of(s: &Sample) -> Result<CallFacts, String> {
    let campaign = match s.campaign.trim() {
        "" => None,
        c => Some(
            c.parse()
                .map_err(|_| format!("campaign: {c:?} is not a campaign id"))?,
        ),
    };
    let mut fields = std::collections::BTreeMap::new();
    for line in s.fields.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("fields: {line:?} is not name=value"))?;
        fields.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(CallFacts {
        campaign,
        fields,
        tags: s
            .tags
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        last_outcome: Some(s.last_outcome.trim().to_string()).filter(|o| !o.is_empty()),
    })
}

fn describe(action: &RouteAction) -> String {
    match action {
        RouteAction::AgentGroup(g) => format!("agent group {g}"),
        RouteAction::LastAgent { fallback_group } => {
            format!("the last agent, else agent group {fallback_group}")
        }
        RouteAction::RobotScript(s) => format!("robot script {s:?}"),
    }
}

#[derive(Template)]
#[template(path = "console/routing.html")]
struct RoutingPage {
    page: Frame,
    version: String,
    rows: Vec<RuleRow>,
    sample: Sample,
    groups: Vec<(i64, String)>,
    csrf: String,
    can_edit: bool,
    actions: [(&'static str, &'static str); 3],
    kinds: [(&'static str, &'static str); 6],
    joins: [(&'static str, &'static str); 2],
}

async fn routing_response(
    state: &ConsoleState,
    me: &SignedIn,
    frame: Frame,
    code: StatusCode,
    rows: Option<Vec<RuleRow>>,
    sample: Sample,
) -> Page {
    let current = match routing::current(&state.store).await {
        Ok(v) => Some(v),
        Err(RoutingError::NoPolicy) => None,
        Err(e) => return Err(failure(me.frame(), e).into()),
    };
    let groups: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, name FROM agent_groups ORDER BY id")
            .fetch_all(state.store.pool())
            .await
            .map_err(|e| failure(me.frame(), e))?;
    let rows = rows.unwrap_or_else(|| {
        rows_of(
            &current
                .as_ref()
                .map_or(RoutingPolicy { rules: Vec::new() }, |c| c.policy.clone()),
        )
    });
    Ok(render(
        code,
        &RoutingPage {
            page: frame,
            version: current.map_or("none saved yet".into(), |c| {
                format!("version {} of {}", c.version, when(c.created_at))
            }),
            rows,
            sample,
            groups,
            csrf: me.session.csrf_token.clone(),
            can_edit: me.may(Permission::EditRouting),
            joins: [("all", "all of"), ("any", "any of")],
            kinds: [
                ("tag", "has tag"),
                ("field", "field equals"),
                ("last_outcome", "last outcome is"),
                ("campaign", "campaign is"),
                ("always", "always"),
                ("json", "JSON"),
            ],
            actions: [
                ("agent_group", "agent group"),
                ("last_agent", "last agent, else group"),
                ("robot_script", "robot script"),
            ],
        },
    ))
}

pub async fn routing_page(State(state): State<ConsoleState>, me: SignedIn) -> Page {
    me.require(Permission::View)?;
    routing_response(
        &state,
        &me,
        me.frame(),
        StatusCode::OK,
        None,
        Sample::default(),
    )
    .await
}

fn sample_of(f: &Fields) -> Sample {
    Sample {
        campaign: f.get("sample.campaign").to_string(),
        fields: f.get("sample.fields").to_string(),
        tags: f.get("sample.tags").to_string(),
        last_outcome: f.get("sample.last_outcome").to_string(),
        result: None,
    }
}

/// The database error behind an audit failure (the only way writing one fails).
fn db_of(e: ConsoleError) -> sqlx::Error {
    match e {
        ConsoleError::Db(db) => db,
        other => sqlx::Error::Protocol(other.to_string()),
    }
}

pub async fn routing_save(
    State(state): State<ConsoleState>,
    me: SignedIn,
    Form(f): Form<Fields>,
) -> Page {
    me.require_form(Permission::EditRouting, f.get("csrf"))?;
    let mut rows = rows_from(&f);
    let sample = sample_of(&f);
    let (policy, order) = match policy_of(&rows) {
        Ok(p) => p,
        Err((i, msg)) => {
            rows[i].error = msg.clone();
            let frame = me.frame().error(format!("rule {}: {msg}", i + 1));
            return routing_response(
                &state,
                &me,
                frame,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(rows),
                sample,
            )
            .await;
        }
    };
    let saved = async {
        let mut tx = state.store.begin_write().await?;
        let before = match routing::current_in(&mut tx).await {
            Ok(v) => Some(v),
            Err(RoutingError::Db(e)) => return Err(RoutingError::Db(e)),
            Err(_) => None,
        };
        let saved = routing::save_in(&mut tx, policy).await?;
        audit::record(
            &mut tx,
            &me.actor(),
            "routing.save",
            "routing",
            before.as_ref(),
            Some(&saved),
        )
        .await
        .map_err(|e| RoutingError::Db(db_of(e)))?;
        tx.commit().await?;
        Ok::<_, RoutingError>(saved)
    }
    .await;
    match saved {
        Ok(saved) => {
            let frame = me
                .frame()
                .notice(format!("Routing policy version {} saved.", saved.version));
            routing_response(&state, &me, frame, StatusCode::OK, None, sample).await
        }
        Err(RoutingError::Invalid { field, reason }) => {
            let msg = format!("{field}: {reason}");
            if let Some(i) = row_of_field(&field, &order) {
                rows[i].error = reason.clone();
            }
            let frame = me.frame().error(msg);
            routing_response(
                &state,
                &me,
                frame,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(rows),
                sample,
            )
            .await
        }
        Err(e) => Err(failure(me.frame(), e).into()),
    }
}

pub async fn routing_preview(
    State(state): State<ConsoleState>,
    me: SignedIn,
    Form(f): Form<Fields>,
) -> Page {
    me.require_form(Permission::View, f.get("csrf"))?;
    let mut rows = rows_from(&f);
    let mut sample = sample_of(&f);
    let (policy, _) = match policy_of(&rows) {
        Ok(p) => p,
        Err((i, msg)) => {
            rows[i].error = msg.clone();
            let frame = me.frame().error(format!("rule {}: {msg}", i + 1));
            return routing_response(
                &state,
                &me,
                frame,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(rows),
                sample,
            )
            .await;
        }
    };
    if let Err(e) = policy.validate() {
        let frame = me.frame().error(e.to_string());
        return routing_response(
            &state,
            &me,
            frame,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(rows),
            sample,
        )
        .await;
    }
    let facts = match facts_of(&sample) {
        Ok(f) => f,
        Err(e) => {
            let frame = me.frame().error(e);
            return routing_response(
                &state,
                &me,
                frame,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(rows),
                sample,
            )
            .await;
        }
    };
    sample.result = Some(match policy.decide(&facts) {
        Some((name, action)) => format!("Rule {name:?} decides: {}.", describe(action)),
        None => "No rule matches: the appliance's default routing applies.".into(),
    });
    routing_response(&state, &me, me.frame(), StatusCode::OK, Some(rows), sample).await
}

#[derive(Template)]
#[template(path = "console/dnc.html")]
struct DncPage {
    page: Frame,
    entries: Vec<(DncView, String, String)>,
    csrf: String,
    can_edit: bool,
    row_errors: Vec<RowError>,
}

pub(super) async fn dnc_response(
    state: &ConsoleState,
    me: &SignedIn,
    frame: Frame,
    code: StatusCode,
    row_errors: Vec<RowError>,
) -> Page {
    let entries = compliance::page_dnc(&state.store, 0, 100_000)
        .await
        .map_err(|e| failure(me.frame(), e))?;
    Ok(render(
        code,
        &DncPage {
            page: frame,
            entries: entries
                .into_iter()
                .rev()
                .take(500)
                .map(|d| {
                    let expires = d.expires_at.map_or("never".into(), when);
                    let created = when(d.created_at);
                    (d, expires, created)
                })
                .collect(),
            csrf: me.session.csrf_token.clone(),
            can_edit: me.may(Permission::EditCompliance),
            row_errors,
        },
    ))
}

pub async fn dnc_page(State(state): State<ConsoleState>, me: SignedIn) -> Page {
    me.require(Permission::View)?;
    dnc_response(&state, &me, me.frame(), StatusCode::OK, Vec::new()).await
}

/// An expiry date (`YYYY-MM-DD`, UTC midnight) as milliseconds; blank: permanent.
pub(super) fn expiry_of(text: &str) -> Result<Option<i64>, ConsoleError> {
    match text.trim() {
        "" => Ok(None),
        d => {
            let date: jiff::civil::Date = d.parse().map_err(|_| {
                ConsoleError::invalid("expires_on", format!("{d:?} is not a YYYY-MM-DD date"))
            })?;
            let ts = date
                .to_zoned(jiff::tz::TimeZone::UTC)
                .map_err(|e| ConsoleError::invalid("expires_on", e.to_string()))?
                .timestamp();
            Ok(Some(ts.as_millisecond()))
        }
    }
}

fn dnc_of_form(f: &Fields) -> Result<NewDnc, ConsoleError> {
    let campaign_id = match f.get("campaign_id").trim() {
        "" => None,
        c => Some(c.parse().map_err(|_| {
            ConsoleError::invalid("campaign_id", format!("{c:?} is not a campaign id"))
        })?),
    };
    let expires_at = expiry_of(f.get("expires_on"))?;
    Ok(NewDnc {
        number: f.get("number").trim().to_string(),
        campaign_id,
        expires_at,
        reason: f.get("reason").trim().to_string(),
    })
}

pub async fn dnc_add(
    State(state): State<ConsoleState>,
    me: SignedIn,
    Form(f): Form<Fields>,
) -> Page {
    me.require_form(Permission::EditCompliance, f.get("csrf"))?;
    let entry = match dnc_of_form(&f) {
        Ok(e) => e,
        Err(e) => {
            let frame = me.frame().error(e);
            return dnc_response(
                &state,
                &me,
                frame,
                StatusCode::UNPROCESSABLE_ENTITY,
                Vec::new(),
            )
            .await;
        }
    };
    let added = async {
        let mut tx = state.store.begin_write().await?;
        let added =
            compliance::add_dnc_in(&mut tx, &state.vault, std::slice::from_ref(&entry)).await?;
        let target = format!("dnc:{}", added[0].id);
        audit::record(
            &mut tx,
            &me.actor(),
            "dnc.add",
            &target,
            None::<&DncView>,
            Some(&added[0]),
        )
        .await
        .map_err(|e| PolicyError::Db(db_of(e)))?;
        tx.commit().await?;
        Ok::<_, PolicyError>(added)
    }
    .await;
    match added {
        Ok(added) => {
            let frame = me.frame().notice(format!(
                "{} added to the do-not-call list.",
                added[0].number
            ));
            dnc_response(&state, &me, frame, StatusCode::OK, Vec::new()).await
        }
        Err(PolicyError::Invalid { reason, .. }) => {
            let frame = me.frame().error(format!("number: {reason}"));
            dnc_response(
                &state,
                &me,
                frame,
                StatusCode::UNPROCESSABLE_ENTITY,
                Vec::new(),
            )
            .await
        }
        Err(e) => Err(failure(me.frame(), e).into()),
    }
}

/// `POST /dnc/{id}/remove`: takes one entry off the list (compliance officers and admins);
/// the appliances holding the number hear of it through the DNC deltas.
pub async fn dnc_remove(
    State(state): State<ConsoleState>,
    me: SignedIn,
    axum::extract::Path(id): axum::extract::Path<i64>,
    Form(f): Form<Fields>,
) -> Page {
    me.require_form(Permission::EditCompliance, f.get("csrf"))?;
    let before = compliance::page_dnc(&state.store, id.saturating_sub(1), 1)
        .await
        .map_err(|e| failure(me.frame(), e))?
        .into_iter()
        .find(|d| d.id == id);
    let Some(before) = before else {
        let frame = me.frame().error(format!("No do-not-call entry {id}."));
        return dnc_response(&state, &me, frame, StatusCode::NOT_FOUND, Vec::new()).await;
    };
    let removed = async {
        let mut tx = state.store.begin_write().await?;
        if compliance::remove_dnc_in(&mut tx, id).await? {
            let target = format!("dnc:{id}");
            audit::record(
                &mut tx,
                &me.actor(),
                "dnc.remove",
                &target,
                Some(&before),
                None::<&DncView>,
            )
            .await
            .map_err(|e| PolicyError::Db(db_of(e)))?;
        }
        tx.commit().await?;
        Ok::<_, PolicyError>(())
    }
    .await;
    removed.map_err(|e| failure(me.frame(), e))?;
    let frame = me
        .frame()
        .notice(format!("{} taken off the do-not-call list.", before.number));
    dnc_response(&state, &me, frame, StatusCode::OK, Vec::new()).await
}

#[derive(Template)]
#[template(path = "console/profiles.html")]
struct ProfilesPage {
    page: Frame,
    /// Each profile: stored, its JSON (or the typed text), open, its name (or the typed
    /// one), the error of its last save.
    profiles: Vec<(StoredProfile, String, bool, String, String)>,
    csrf: String,
    can_edit: bool,
    name: String,
    body: String,
}

/// A profile edit that was refused: the typed name and rules, and why.
struct Refused {
    id: i64,
    name: String,
    body: String,
    error: String,
}

async fn profiles_response(
    state: &ConsoleState,
    me: &SignedIn,
    frame: Frame,
    code: StatusCode,
    name: String,
    body: String,
    refused: Option<Refused>,
) -> Page {
    let profiles = compliance::page_profiles(&state.store, 0, 1000)
        .await
        .map_err(|e| failure(me.frame(), e))?;
    Ok(render(
        code,
        &ProfilesPage {
            page: frame,
            profiles: profiles
                .into_iter()
                .map(|p| match &refused {
                    Some(r) if r.id == p.id => {
                        (p, r.body.clone(), true, r.name.clone(), r.error.clone())
                    }
                    _ => {
                        let json =
                            serde_json::to_string_pretty(&p.profile).expect("profiles serialise");
                        let name = p.name.clone();
                        (p, json, false, name, String::new())
                    }
                })
                .collect(),
            csrf: me.session.csrf_token.clone(),
            can_edit: me.may(Permission::EditCompliance),
            name,
            body,
        },
    ))
}

/// `POST /profiles/{id}`: replaces a profile's name and rules (compliance officers and
/// admins), audited with the profile before and after in the same transaction.
pub async fn profile_update(
    State(state): State<ConsoleState>,
    me: SignedIn,
    axum::extract::Path(id): axum::extract::Path<i64>,
    Form(f): Form<Fields>,
) -> Page {
    me.require_form(Permission::EditCompliance, f.get("csrf"))?;
    let (name, body) = (f.get("name").trim().to_string(), f.get("body").to_string());
    let template =
        serde_json::to_string_pretty(&ComplianceProfile::us()).expect("profiles serialise");
    let parsed: Result<ComplianceProfile, String> =
        serde_json::from_str(&body).map_err(|e| format!("body: {e}"));
    let updated = match parsed {
        Ok(p) => async {
            let mut tx = state.store.begin_write().await?;
            let (before, after) = compliance::update_profile_in(&mut tx, id, &name, p).await?;
            let target = format!("profile:{id}");
            audit::record(
                &mut tx,
                &me.actor(),
                "profile.edit",
                &target,
                Some(&before),
                Some(&after),
            )
            .await
            .map_err(|e| PolicyError::Db(db_of(e)))?;
            tx.commit().await?;
            Ok::<_, PolicyError>(after)
        }
        .await
        .map_err(|e| match e {
            PolicyError::Db(db) => Err(db),
            PolicyError::NoSuchProfile(_) => Ok((StatusCode::NOT_FOUND, e.to_string())),
            other => Ok((StatusCode::UNPROCESSABLE_ENTITY, other.to_string())),
        }),
        Err(msg) => Err(Ok((StatusCode::UNPROCESSABLE_ENTITY, msg))),
    };
    match updated {
        Ok(p) => {
            let frame = me.frame().notice(format!("Profile {} saved.", p.name));
            profiles_response(
                &state,
                &me,
                frame,
                StatusCode::OK,
                String::new(),
                template,
                None,
            )
            .await
        }
        Err(Ok((code, msg))) => {
            let frame = me.frame().error(format!("profile {id}: {msg}"));
            let refused = Refused {
                id,
                name,
                body,
                error: msg,
            };
            profiles_response(
                &state,
                &me,
                frame,
                code,
                String::new(),
                template,
                Some(refused),
            )
            .await
        }
        Err(Err(db)) => Err(failure(me.frame(), db).into()),
    }
}

pub async fn profiles_page(State(state): State<ConsoleState>, me: SignedIn) -> Page {
    me.require(Permission::View)?;
    let template =
        serde_json::to_string_pretty(&ComplianceProfile::us()).expect("profiles serialise");
    profiles_response(
        &state,
        &me,
        me.frame(),
        StatusCode::OK,
        String::new(),
        template,
        None,
    )
    .await
}

pub async fn profile_create(
    State(state): State<ConsoleState>,
    me: SignedIn,
    Form(f): Form<Fields>,
) -> Page {
    me.require_form(Permission::EditCompliance, f.get("csrf"))?;
    let (name, body) = (f.get("name").trim().to_string(), f.get("body").to_string());
    let parsed: Result<ComplianceProfile, String> =
        serde_json::from_str(&body).map_err(|e| format!("body: {e}"));
    let created = match parsed {
        Ok(p) => async {
            let mut tx = state.store.begin_write().await?;
            let p = compliance::create_profile_in(&mut tx, &name, p).await?;
            let target = format!("profile:{}", p.id);
            audit::record(
                &mut tx,
                &me.actor(),
                "profile.create",
                &target,
                None::<&StoredProfile>,
                Some(&p),
            )
            .await
            .map_err(|e| PolicyError::Db(db_of(e)))?;
            tx.commit().await?;
            Ok::<_, PolicyError>(p)
        }
        .await
        .map_err(|e| match e {
            PolicyError::Db(db) => Err(db),
            other => Ok(other.to_string()),
        }),
        Err(msg) => Err(Ok(msg)),
    };
    match created {
        Ok(p) => {
            let frame = me.frame().notice(format!("Profile {} created.", p.name));
            profiles_response(
                &state,
                &me,
                frame,
                StatusCode::OK,
                String::new(),
                body,
                None,
            )
            .await
        }
        Err(Ok(msg)) => {
            let frame = me.frame().error(msg);
            profiles_response(
                &state,
                &me,
                frame,
                StatusCode::UNPROCESSABLE_ENTITY,
                name,
                body,
                None,
            )
            .await
        }
        Err(Err(db)) => Err(failure(me.frame(), db).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(priority: &str, name: &str, when: &str, action: &str, target: &str) -> RuleRow {
        RuleRow {
            priority: priority.into(),
            name: name.into(),
            kind: String::new(),
            key: String::new(),
            value: String::new(),
            when: when.into(),
            action: action.into(),
            target: target.into(),
            ..RuleRow::default()
        }
    }

    #[test]
    fn saved_rules_come_back_in_the_builder_and_compound_ones_as_json() {
        let policy = RoutingPolicy {
            rules: vec![
                RoutingRule {
                    name: "t".into(),
                    when: Condition::Field {
                        name: "tier".into(),
                        equals: "gold".into(),
                    },
                    then: RouteAction::AgentGroup(1),
                },
                RoutingRule {
                    name: "a".into(),
                    when: Condition::All(vec![
                        Condition::Tag("x".into()),
                        Condition::Any(vec![Condition::Always]),
                    ]),
                    then: RouteAction::AgentGroup(1),
                },
                RoutingRule {
                    name: "b".into(),
                    when: Condition::Any(vec![
                        Condition::Tag("complaint".into()),
                        Condition::LastOutcome("unresolved".into()),
                        Condition::Campaign(4),
                    ]),
                    then: RouteAction::AgentGroup(2),
                },
            ],
        };
        let rows = rows_of(&policy);
        assert_eq!(
            (
                rows[0].kind.as_str(),
                rows[0].key.as_str(),
                rows[0].value.as_str()
            ),
            ("field", "tier", "gold")
        );
        assert_eq!(rows[1].kind, "json", "nested all/any stay JSON");
        assert_eq!(
            (
                rows[2].kind.as_str(),
                rows[2].value.as_str(),
                rows[2].join.as_str()
            ),
            ("tag", "complaint", "any")
        );
        let extra: Vec<(&str, &str)> = rows[2]
            .extra
            .iter()
            .map(|c| (c.kind.as_str(), c.value.as_str()))
            .collect();
        assert_eq!(extra, [("last_outcome", "unresolved"), ("campaign", "4")]);
        assert_eq!(
            rows[3].kind, "tag",
            "blank rows start with the commonest kind"
        );
        assert_eq!(rows[3].extra.len(), EXTRA_CLAUSES);
        // And they make the same policy again.
        assert_eq!(policy_of(&rows).unwrap().0, policy);
    }

    #[test]
    fn rows_become_rules_in_priority_order_and_the_preview_picks_the_first_that_holds() {
        let rows = vec![
            row(
                "20",
                "platinum",
                r#"{"field":{"name":"tier","equals":"platinum"}}"#,
                "agent_group",
                "2",
            ),
            row(
                "10",
                "complaints",
                r#"{"tag":"complaint"}"#,
                "agent_group",
                "3",
            ),
            row("", "", "", "agent_group", ""),
            row(
                "30",
                "everyone else",
                r#""always""#,
                "robot_script",
                "survey",
            ),
        ];
        let (policy, order) = policy_of(&rows).unwrap();
        assert_eq!(order, vec![1, 0, 3]);
        let names: Vec<&str> = policy.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["complaints", "platinum", "everyone else"]);
        let facts = facts_of(&Sample {
            fields: "tier = Platinum".into(),
            tags: "complaint, vip".into(),
            ..Sample::default()
        })
        .unwrap();
        assert_eq!(policy.decide(&facts).unwrap().0, "complaints");
        let facts = facts_of(&Sample {
            fields: "tier=platinum".into(),
            ..Sample::default()
        })
        .unwrap();
        assert_eq!(policy.decide(&facts).unwrap().0, "platinum");
        assert_eq!(row_of_field("rules[1].then", &order), Some(0));
    }

    #[test]
    fn builder_clauses_combine_as_all_of_or_any_of_and_unused_ones_are_left_out() {
        let clause = |kind: &str, key: &str, value: &str| Clause {
            kind: kind.into(),
            key: key.into(),
            value: value.into(),
        };
        let mut r = RuleRow {
            priority: "10".into(),
            name: "platinum complaints".into(),
            kind: "field".into(),
            key: "tier".into(),
            value: "platinum".into(),
            join: "all".into(),
            extra: vec![clause("tag", "", "complaint"), Clause::default()],
            action: "agent_group".into(),
            target: "2".into(),
            ..RuleRow::default()
        };
        let both = vec![
            Condition::Field {
                name: "tier".into(),
                equals: "platinum".into(),
            },
            Condition::Tag("complaint".into()),
        ];
        assert_eq!(condition_of(&r), Ok(Condition::All(both.clone())));
        r.join = "any".into();
        assert_eq!(condition_of(&r), Ok(Condition::Any(both.clone())));
        let facts = |fields: &str, tags: &str| {
            facts_of(&Sample {
                fields: fields.into(),
                tags: tags.into(),
                ..Sample::default()
            })
            .unwrap()
        };
        let any = policy_of(std::slice::from_ref(&r)).unwrap().0;
        assert!(any.decide(&facts("", "complaint")).is_some());
        r.join = "all".into();
        let all = policy_of(std::slice::from_ref(&r)).unwrap().0;
        assert!(all.decide(&facts("", "complaint")).is_none());
        assert!(all.decide(&facts("tier=platinum", "complaint")).is_some());
        // Only the first clause in use: no All/Any around it.
        r.extra = vec![Clause::default(); EXTRA_CLAUSES];
        assert_eq!(condition_of(&r), Ok(both[0].clone()));
        // A bad further clause is named by its place; so is a join that is neither.
        r.extra[1] = clause("field", "", "gold");
        assert_eq!(
            condition_of(&r),
            Err("condition 3: field: give the field's name".into())
        );
        r.extra[1] = clause("json", "", "");
        assert!(condition_of(&r)
            .unwrap_err()
            .starts_with("condition 3: JSON only"));
        r.extra[1] = clause("tag", "", "vip");
        r.join = "either".into();
        assert!(condition_of(&r).unwrap_err().contains("\"either\""));
    }

    #[test]
    fn a_bad_row_is_named_with_what_is_wrong() {
        let rows = vec![
            row("10", "ok", r#""always""#, "agent_group", "1"),
            row("x", "bad priority", r#""always""#, "agent_group", "1"),
        ];
        assert_eq!(policy_of(&rows).unwrap_err().0, 1);
        let rows = vec![row(
            "10",
            "bad condition",
            "{tag: complaint}",
            "agent_group",
            "1",
        )];
        let (i, msg) = policy_of(&rows).unwrap_err();
        assert!(i == 0 && msg.starts_with("condition:"), "{msg}");
        let rows = vec![row(
            "10",
            "bad group",
            r#""always""#,
            "last_agent",
            "experts",
        )];
        assert!(policy_of(&rows)
            .unwrap_err()
            .1
            .contains("not an agent group id"));
        assert!(facts_of(&Sample {
            fields: "tier".into(),
            ..Sample::default()
        })
        .is_err());
    }
}
