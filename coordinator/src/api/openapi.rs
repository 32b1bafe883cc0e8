//! The OpenAPI 3.0 document served at `/api/openapi.json`, built once from the shapes the
//! handlers accept and return. `scripts/test` runs schemathesis against it, so a response
//! that strays from this document fails the build.

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use std::sync::OnceLock;

/// `GET /api/openapi.json`.
pub(super) async fn serve() -> Response {
    Json(document().clone()).into_response()
}

/// The document.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn int() -> Value {
    json!({ "type": "integer", "format": "int64" })
}

fn nullable(mut v: Value) -> Value {
    v["nullable"] = json!(true);
    v
}

fn obj(props: Value, required: &[&str], closed: bool) -> Value {
    let mut o = json!({ "type": "object", "properties": props, "required": required });
    if closed {
        o["additionalProperties"] = json!(false);
    }
    o
}

fn page_of(item: &str) -> Value {
    obj(
        json!({ "items": { "type": "array", "items": r(item) }, "next_after": nullable(int()) }),
        &["items", "next_after"],
        false,
    )
}

fn problem_responses(codes: &[u16]) -> Map<String, Value> {
    let mut m = Map::new();
    for c in codes {
        m.insert(
            c.to_string(),
            json!({
                "description": "problem",
                "content": { "application/problem+json": { "schema": r("Problem") } }
            }),
        );
    }
    m
}

struct Op {
    id: &'static str,
    summary: &'static str,
    scope: &'static str,
    params: Vec<Value>,
    body: Option<Value>,
    ok: (u16, Option<Value>),
    errors: &'static [u16],
    /// Operations (by id) that take this response's `id` as their `id` path parameter.
    links: &'static [&'static str],
}

fn op(o: Op) -> Value {
    let mut responses = problem_responses(o.errors);
    let mut auth = problem_responses(&[401, 403]);
    responses.append(&mut auth);
    let mut ok = match o.ok.1 {
        Some(schema) => {
            json!({ "description": "success", "content": { "application/json": { "schema": schema } } })
        }
        None => json!({ "description": "success, no content" }),
    };
    if !o.links.is_empty() {
        let mut links = Map::new();
        for target in o.links {
            links.insert(
                target.to_string(),
                json!({ "operationId": target, "parameters": { "id": "$response.body#/id" } }),
            );
        }
        ok["links"] = Value::Object(links);
    }
    responses.insert(o.ok.0.to_string(), ok);
    let mut v = json!({
        "operationId": o.id,
        "summary": o.summary,
        "description": format!("Needs the `{}` scope (or `admin`).", o.scope),
        "parameters": o.params,
        "responses": responses,
        "security": [{ "bearer": [] }],
    });
    if let Some(b) = o.body {
        v["requestBody"] = b;
    }
    v
}

fn json_body(schema: Value) -> Option<Value> {
    Some(json!({ "required": true, "content": { "application/json": { "schema": schema } } }))
}

fn path_param(name: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true,
            "schema": { "type": "integer", "format": "int64", "minimum": 1 } })
}

fn paging() -> Vec<Value> {
    vec![
        json!({ "name": "after", "in": "query", "required": false, "schema": { "type": "integer", "format": "int64" } }),
        json!({ "name": "limit", "in": "query", "required": false, "schema": { "type": "integer", "minimum": 1, "maximum": 500 } }),
    ]
}

fn window_schema() -> Value {
    obj(
        json!({
            "start_minute": { "type": "integer", "minimum": 0, "maximum": 1440 },
            "end_minute": { "type": "integer", "minimum": 0, "maximum": 1440 },
            "days": { "type": "array", "items": { "type": "integer", "minimum": 0, "maximum": 6 } },
            "holidays": { "type": "array", "items": { "type": "string", "format": "date" } },
        }),
        &["start_minute", "end_minute", "days", "holidays"],
        false,
    )
}

fn profile_props(with_id: bool) -> Value {
    let mut p = json!({
        "name": { "type": "string" },
        "jurisdiction": { "type": "string", "enum": ["Us", "Uk"] },
        "abandon": obj(json!({
            "cap_permille": { "type": "integer", "minimum": 0 },
            "window_ms": int(),
        }), &["cap_permille", "window_ms"], false),
        "lockout_after_abandon_ms": nullable(int()),
        "caps": obj(json!({
            "per_day": { "type": "integer", "minimum": 0 },
            "per_week": { "type": "integer", "minimum": 0 },
        }), &["per_day", "per_week"], false),
        "window": r("CallingWindow"),
        "recording_consent_announcement": { "type": "boolean" },
        "retention_days": { "type": "integer", "minimum": 0 },
    });
    if with_id {
        p["id"] = int();
    }
    p
}

const PROFILE_REQUIRED: &[&str] = &[
    "name",
    "jurisdiction",
    "abandon",
    "caps",
    "window",
    "recording_consent_announcement",
    "retention_days",
];

fn retry_rule() -> Value {
    obj(
        json!({
            "delay_seconds": { "type": "integer", "minimum": 0 },
            "backoff": { "type": "number", "minimum": 1, "maximum": 10 },
            "max_attempts": { "type": "integer", "minimum": 0, "maximum": 50 },
        }),
        &["delay_seconds", "max_attempts"],
        false,
    )
}

fn campaign_props() -> Value {
    json!({
        "name": { "type": "string", "minLength": 1, "maxLength": 200 },
        "kind": { "type": "string", "enum": ["marketing", "service", "collections"] },
        "dial_mode": { "type": "string", "enum": ["preview", "progressive", "predictive", "agentless"] },
        "compliance_profile_id": int(),
        "starts_on": nullable(json!({ "type": "string", "format": "date" })),
        "ends_on": nullable(json!({ "type": "string", "format": "date" })),
        "calling_window": r("CallingWindow"),
        "caller_id": { "type": "string", "description": "E.164, e.g. +14155550100" },
        "script": { "type": "string" },
        "disposition_codes": { "type": "array", "items": { "type": "string" } },
        "wrap_up_seconds": { "type": "integer", "minimum": 0, "maximum": 3600 },
        "retry": obj(json!({
            "busy": r("RetryRule"), "no_answer": r("RetryRule"),
            "failed": r("RetryRule"), "machine": r("RetryRule"),
        }), &["busy", "no_answer", "failed", "machine"], false),
        "priority_weights": obj(json!({
            "urgency": { "type": "number", "minimum": 0 },
            "customer_value": { "type": "number", "minimum": 0 },
        }), &["urgency", "customer_value"], false),
        "appliances": { "type": "array", "items": obj(json!({
            "appliance": { "type": "string" },
            "share": { "type": "integer", "minimum": 1, "maximum": 1000 },
        }), &["appliance", "share"], false) },
        "contact_lists": { "type": "array", "items": int() },
        "recording_consent_announcement": { "type": "boolean" },
    })
}

const CAMPAIGN_REQUIRED: &[&str] = &[
    "name",
    "kind",
    "dial_mode",
    "compliance_profile_id",
    "calling_window",
    "caller_id",
];

fn schemas() -> Value {
    let mut campaign = campaign_props();
    for (k, v) in [
        ("id", int()),
        (
            "state",
            json!({ "type": "string", "enum": ["draft", "scheduled", "paused", "stopped", "archived"] }),
        ),
        ("version", int()),
        ("created_at", int()),
        ("updated_at", int()),
    ] {
        campaign[k] = v;
    }
    let mut campaign_required: Vec<&str> = CAMPAIGN_REQUIRED.to_vec();
    campaign_required.extend(["id", "state", "version", "created_at", "updated_at"]);
    let mut profile_required = PROFILE_REQUIRED.to_vec();
    profile_required.push("id");
    json!({
        "Problem": obj(json!({
            "type": { "type": "string" }, "title": { "type": "string" },
            "status": { "type": "integer" }, "detail": { "type": "string" },
            "field": { "type": "string", "description": "the input at fault" },
        }), &["type", "title", "status", "detail"], false),
        "ContactList": obj(json!({
            "id": int(), "name": { "type": "string" }, "default_region": { "type": "string" },
            "contacts": int(), "created_at": int(),
        }), &["id", "name", "default_region", "contacts", "created_at"], false),
        "NewContactList": obj(json!({
            "name": { "type": "string", "minLength": 1, "maxLength": 200 },
            "default_region": { "type": "string", "description": "ISO 3166 alpha-2, e.g. US" },
        }), &["name", "default_region"], true),
        "Contact": obj(json!({
            "id": int(),
            "number": { "type": "string", "description": "masked unless the token has contacts:reveal" },
            "time_zones": { "type": "array", "items": { "type": "string" } },
            "external_id": nullable(json!({ "type": "string" })),
            "urgency": { "type": "number" }, "customer_value": { "type": "number" },
            "fields": { "type": "object" },
            "tags": { "type": "array", "items": { "type": "string" } },
        }), &["id", "number", "time_zones", "external_id", "urgency", "customer_value", "fields", "tags"], false),
        "ImportStatus": obj(json!({
            "id": int(), "list_id": int(),
            "state": { "type": "string", "enum": ["running", "done", "failed"] },
            "bytes_total": nullable(int()), "bytes_read": int(), "rows_seen": int(),
            "rows_imported": int(), "rows_duplicate": int(), "rows_rejected": int(),
            "failure": nullable(json!({ "type": "string" })),
            "errors": { "type": "array", "items": obj(json!({
                "line": int(), "reason": { "type": "string" },
            }), &["line", "reason"], false) },
        }), &["id", "list_id", "state", "bytes_total", "bytes_read", "rows_seen", "rows_imported", "rows_duplicate", "rows_rejected", "failure", "errors"], false),
        "CallingWindow": window_schema(),
        "ComplianceProfile": obj(profile_props(true), &profile_required, false),
        "NewComplianceProfile": obj(profile_props(false), PROFILE_REQUIRED, true),
        "DncImportReport": obj(json!({
            "rows_seen": int(), "added": int(), "rejected": int(),
            "errors": { "type": "array", "items": obj(json!({
                "line": int(), "reason": { "type": "string" },
            }), &["line", "reason"], false) },
        }), &["rows_seen", "added", "rejected", "errors"], false),
        "DncEntry": obj(json!({
            "id": int(), "number": { "type": "string" },
            "campaign_id": nullable(int()), "expires_at": nullable(int()),
            "reason": { "type": "string" }, "created_at": int(),
        }), &["id", "number", "campaign_id", "expires_at", "reason", "created_at"], false),
        "NewDncEntry": obj(json!({
            "number": { "type": "string", "description": "E.164" },
            "campaign_id": nullable(int()),
            "expires_at": nullable(int()),
            "reason": { "type": "string", "maxLength": 500 },
        }), &["number"], true),
        "RetryRule": retry_rule(),
        "CampaignSpec": obj(campaign_props(), CAMPAIGN_REQUIRED, true),
        "Campaign": obj(campaign, &campaign_required, false),
        "LeaseRequest": obj(json!({
            "appliance": { "type": "string" },
            "max_contacts": { "type": "integer", "minimum": 1, "maximum": 10000 },
            "ttl_seconds": { "type": "integer", "minimum": 1, "maximum": 604800 },
        }), &["appliance", "max_contacts"], true),
        "ContactLease": obj(json!({
            "id": int(), "campaign_id": int(), "appliance": { "type": "string" },
            "issued_at": int(), "expires_at": int(), "refused": int(),
            "contacts": { "type": "array", "items": obj(json!({
                "contact_id": int(), "number": { "type": "string" },
                "time_zones": { "type": "array", "items": { "type": "string" } },
                "attempts": int(), "fields": { "type": "object" },
                "tags": { "type": "array", "items": { "type": "string" } },
            }), &["contact_id", "number", "time_zones", "attempts", "fields", "tags"], false) },
        }), &["id", "campaign_id", "appliance", "issued_at", "expires_at", "contacts", "refused"], false),
        "PacingGrant": obj(json!({
            "campaign_id": int(), "max_concurrent": { "type": "integer" },
            "max_attempts_per_minute": { "type": "integer" }, "abandon_budget": int(),
            "expires_at": int(),
        }), &["campaign_id", "max_concurrent", "max_attempts_per_minute", "abandon_budget", "expires_at"], false),
        "AttemptResult": obj(json!({
            "appliance": { "type": "string" },
            "attempt_id": { "type": "string", "format": "uuid" },
            "campaign_id": int(), "contact_id": int(), "lease_id": int(),
            "outcome": { "type": "string", "enum": ["answered_human", "answered_machine", "busy", "no_answer", "rejected", "failed", "abandoned"] },
            "started_at": int(), "ended_at": int(),
            "sip_status": nullable(json!({ "type": "integer", "minimum": 0, "maximum": 65535 })),
        }), &["appliance", "attempt_id", "campaign_id", "contact_id", "lease_id", "outcome", "started_at", "ended_at"], true),
        "AttemptApplied": obj(json!({
            "applied": { "type": "boolean" },
            "contact_state": { "type": "string", "enum": ["ready", "leased", "done", "blocked", "exhausted"] },
            "next_attempt_at": nullable(int()),
        }), &["applied", "contact_state", "next_attempt_at"], false),
    })
}

/// Schemas of agents, routing and call tasks (a second `json!` keeps macro depth low).
fn people_and_tasks_schemas() -> Value {
    json!({
        "AgentGroup": obj(json!({
            "id": int(), "name": { "type": "string" }, "description": { "type": "string" },
        }), &["id", "name", "description"], false),
        "NewAgentGroup": obj(json!({
            "name": { "type": "string", "minLength": 1, "maxLength": 100 },
            "description": { "type": "string", "maxLength": 1000 },
        }), &["name"], true),
        "Agent": obj(json!({
            "id": int(), "name": { "type": "string" }, "branch": { "type": "string" },
            "skills": { "type": "array", "items": { "type": "string" } },
            "sip_username": { "type": "string" }, "login": { "type": "string" },
            "enabled": { "type": "boolean" },
            "groups": { "type": "array", "items": int() },
            "updated_at": int(),
        }), &["id", "name", "branch", "skills", "sip_username", "login", "enabled", "groups", "updated_at"], false),
        "NewAgent": obj(json!({
            "name": { "type": "string" }, "branch": { "type": "string" },
            "skills": { "type": "array", "items": { "type": "string" } },
            "sip_username": { "type": "string" }, "login": { "type": "string" },
            "password": { "type": "string", "minLength": 8, "maxLength": 256, "format": "password" },
            "groups": { "type": "array", "items": int() },
        }), &["name", "branch", "sip_username", "login", "password"], true),
        "AgentPatch": obj(json!({
            "name": nullable(json!({ "type": "string" })),
            "skills": nullable(json!({ "type": "array", "items": { "type": "string" } })),
            "enabled": nullable(json!({ "type": "boolean" })),
            "password": nullable(json!({ "type": "string", "minLength": 8, "maxLength": 256 })),
            "groups": nullable(json!({ "type": "array", "items": int() })),
        }), &[], true),
        "RoutingCondition": {
            "description": "always | {field:{name,equals}} | {tag} | {last_outcome} | {campaign} | {all:[...]} | {any:[...]}",
            "oneOf": [
                { "type": "string", "enum": ["always"] },
                obj(json!({ "field": obj(json!({ "name": { "type": "string" }, "equals": { "type": "string" } }), &["name", "equals"], true) }), &["field"], true),
                obj(json!({ "tag": { "type": "string" } }), &["tag"], true),
                obj(json!({ "last_outcome": { "type": "string" } }), &["last_outcome"], true),
                obj(json!({ "campaign": int() }), &["campaign"], true),
                obj(json!({ "all": { "type": "array", "items": {} } }), &["all"], true),
                obj(json!({ "any": { "type": "array", "items": {} } }), &["any"], true),
            ],
        },
        "RouteAction": {
            "oneOf": [
                obj(json!({ "agent_group": int() }), &["agent_group"], true),
                obj(json!({ "last_agent": obj(json!({ "fallback_group": int() }), &["fallback_group"], true) }), &["last_agent"], true),
                obj(json!({ "robot_script": { "type": "string" } }), &["robot_script"], true),
            ],
        },
        "RoutingPolicy": obj(json!({
            "rules": { "type": "array", "items": obj(json!({
                "name": { "type": "string" },
                "when": r("RoutingCondition"),
                "then": r("RouteAction"),
            }), &["name", "when", "then"], true) },
        }), &["rules"], true),
        "RoutingPolicyVersion": obj(json!({
            "version": int(), "created_at": int(),
            "rules": { "type": "array", "items": obj(json!({
                "name": { "type": "string" }, "when": {}, "then": {},
            }), &["name", "when", "then"], false) },
        }), &["version", "created_at", "rules"], false),
        "NewCallTask": obj(json!({
            "customer_id": { "type": "string" }, "script_id": { "type": "string" },
            "callback_url": { "type": "string", "format": "uri" },
            "max_retries": { "type": "integer", "minimum": 0, "maximum": 20 },
            "preferred_time": nullable(int()),
        }), &["customer_id", "script_id", "callback_url"], true),
        "CallTask": obj(json!({
            "id": int(), "customer_id": { "type": "string" }, "script_id": { "type": "string" },
            "callback_url": { "type": "string" }, "max_retries": int(),
            "preferred_time": nullable(int()),
            "state": { "type": "string", "enum": ["queued", "completed", "failed"] },
            "result": nullable(json!({ "type": "object" })),
            "created_at": int(),
            "delivery": nullable(obj(json!({
                "state": { "type": "string", "enum": ["pending", "delivered", "given_up"] },
                "attempts": int(), "next_attempt_at": nullable(int()),
                "last_status": nullable(int()), "last_error": nullable(json!({ "type": "string" })),
                "delivered_at": nullable(int()),
            }), &["state", "attempts", "next_attempt_at", "last_status", "last_error", "delivered_at"], false)),
            "callback_secret": { "type": "string", "description": "only when created: the HMAC key of X-Callgate-Signature" },
        }), &["id", "customer_id", "script_id", "callback_url", "max_retries", "preferred_time", "state", "result", "created_at", "delivery"], false),
        "CallTaskResult": obj(json!({
            "outcome": { "type": "string", "enum": ["completed", "failed"] },
            "detail": { "type": "string", "maxLength": 2000 },
            "attempts": { "type": "integer", "minimum": 0 },
        }), &["outcome"], true),
    })
}

fn appliance_schemas() -> Value {
    let text = || json!({ "type": "string" });
    let view = json!({
        "name": { "type": "string" },
        "site": text(),
        "state": { "type": "string", "enum": ["registered", "enrolled", "revoked"] },
        "created_at": int(),
        "cert_not_after": nullable(int()),
        "online": { "type": "boolean" },
        "online_since": nullable(int()),
        "offline_since": nullable(int()),
        "last_seen_at": nullable(int()),
        "firmware": nullable(text()),
        "active_calls": nullable(int()),
        "outbox_depth": nullable(int()),
    });
    let view_required = [
        "name",
        "site",
        "state",
        "created_at",
        "cert_not_after",
        "online",
        "online_since",
        "offline_since",
        "last_seen_at",
        "firmware",
        "active_calls",
        "outbox_depth",
    ];
    let mut registered = view.clone();
    registered["claim_code"] = json!({ "type": "string", "description": "shown once: the installer types it into the box" });
    registered["claim_expires_at"] = int();
    let mut registered_required = view_required.to_vec();
    registered_required.extend(["claim_code", "claim_expires_at"]);
    json!({
        "Appliance": obj(view, &view_required, true),
        "RegisteredAppliance": obj(registered, &registered_required, true),
        "NewAppliance": obj(json!({
            "name": { "type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$" },
            "site": { "type": "string", "minLength": 1, "maxLength": 200, "pattern": "\\S" },
        }), &["name", "site"], true),
        "AppliancePage": obj(
            json!({ "items": { "type": "array", "items": r("Appliance") }, "next_after": nullable(json!({ "type": "string" })) }),
            &["items", "next_after"],
            false,
        ),
        "ApplianceLimits": obj(json!({
            "max_concurrent": { "type": "integer", "minimum": 0, "maximum": 100000 },
            "max_attempts_per_minute": { "type": "integer", "minimum": 0, "maximum": 100000 },
        }), &["max_concurrent", "max_attempts_per_minute"], true),
        "ApplianceLimitsView": obj(json!({
            "appliance": { "type": "string" },
            "max_concurrent": int(),
            "max_attempts_per_minute": int(),
            "custom": { "type": "boolean", "description": "false: the [sync.dialer] defaults apply" },
        }), &["appliance", "max_concurrent", "max_attempts_per_minute", "custom"], true),
    })
}

fn all_schemas() -> Value {
    let mut all = schemas();
    for more in [people_and_tasks_schemas(), appliance_schemas()] {
        if let (Some(a), Value::Object(more)) = (all.as_object_mut(), more) {
            a.extend(more);
        }
    }
    all
}

fn name_param() -> Value {
    json!({ "name": "name", "in": "path", "required": true,
            "schema": { "type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$" } })
}

fn build() -> Value {
    let id = || path_param("id");
    let mut paths = Map::new();
    let mut put = |path: &str, method: &str, o: Op| {
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[method] = op(o);
    };
    put(
        "/api/v1/contact-lists",
        "get",
        Op {
            id: "listContactLists",
            links: &[],
            summary: "List contact lists",
            scope: "contacts:read",
            params: paging(),
            body: None,
            ok: (200, Some(page_of("ContactList"))),
            errors: &[400, 422],
        },
    );
    put(
        "/api/v1/contact-lists",
        "post",
        Op {
            id: "createContactList",
            links: &["getContactList", "listContacts", "importContacts"],
            summary: "Create a contact list",
            scope: "contacts:write",
            params: vec![],
            body: json_body(r("NewContactList")),
            ok: (201, Some(r("ContactList"))),
            errors: &[400, 409, 422],
        },
    );
    put(
        "/api/v1/contact-lists/{id}",
        "get",
        Op {
            id: "getContactList",
            links: &[],
            summary: "One contact list",
            scope: "contacts:read",
            params: vec![id()],
            body: None,
            ok: (200, Some(r("ContactList"))),
            errors: &[400, 404],
        },
    );
    let mut p = vec![id()];
    p.extend(paging());
    put(
        "/api/v1/contact-lists/{id}/contacts",
        "get",
        Op {
            id: "listContacts",
            links: &[],
            summary: "A list's contacts (numbers masked without contacts:reveal)",
            scope: "contacts:read",
            params: p,
            body: None,
            ok: (200, Some(page_of("Contact"))),
            errors: &[400, 404, 422],
        },
    );
    put(
        "/api/v1/contact-lists/{id}/imports",
        "post",
        Op {
            id: "importContacts",
            links: &["getImport"],
            summary: "Import a CSV file into a list (streams; progress at /api/v1/imports/{id})",
            scope: "contacts:write",
            params: vec![id()],
            body: Some(
                json!({ "required": true, "content": { "text/csv": { "schema": { "type": "string" } } } }),
            ),
            ok: (202, Some(r("ImportStatus"))),
            errors: &[400, 404, 413, 422],
        },
    );
    put(
        "/api/v1/imports/{id}",
        "get",
        Op {
            id: "getImport",
            links: &[],
            summary: "An import's progress and refused rows",
            scope: "contacts:read",
            params: vec![id()],
            body: None,
            ok: (200, Some(r("ImportStatus"))),
            errors: &[400, 404],
        },
    );
    put(
        "/api/v1/contacts/{id}",
        "get",
        Op {
            id: "getContact",
            links: &[],
            summary: "One contact",
            scope: "contacts:read",
            params: vec![id()],
            body: None,
            ok: (200, Some(r("Contact"))),
            errors: &[400, 404],
        },
    );
    put(
        "/api/v1/compliance-profiles",
        "get",
        Op {
            id: "listComplianceProfiles",
            links: &[],
            summary: "List compliance profiles",
            scope: "compliance:read",
            params: paging(),
            body: None,
            ok: (200, Some(page_of("ComplianceProfile"))),
            errors: &[400, 422],
        },
    );
    put(
        "/api/v1/compliance-profiles",
        "post",
        Op {
            id: "createComplianceProfile",
            links: &["getComplianceProfile"],
            summary: "Create a compliance profile",
            scope: "compliance:write",
            params: vec![],
            body: json_body(r("NewComplianceProfile")),
            ok: (201, Some(r("ComplianceProfile"))),
            errors: &[400, 409, 422],
        },
    );
    put(
        "/api/v1/compliance-profiles/{id}",
        "get",
        Op {
            id: "getComplianceProfile",
            links: &[],
            summary: "One compliance profile",
            scope: "compliance:read",
            params: vec![id()],
            body: None,
            ok: (200, Some(r("ComplianceProfile"))),
            errors: &[400, 404],
        },
    );
    put(
        "/api/v1/dnc",
        "get",
        Op {
            id: "listDnc",
            links: &[],
            summary:
                "Do-not-call entries in id order (also the delta feed: pass the last id as after)",
            scope: "compliance:read",
            params: paging(),
            body: None,
            ok: (200, Some(page_of("DncEntry"))),
            errors: &[400, 422],
        },
    );
    put(
        "/api/v1/dnc",
        "post",
        Op {
            id: "addDnc",
            links: &[],
            summary: "Add do-not-call entries in bulk (all or none)",
            scope: "compliance:write",
            params: vec![],
            body: json_body(
                json!({ "type": "array", "items": r("NewDncEntry"), "minItems": 1, "maxItems": 10000 }),
            ),
            ok: (
                201,
                Some(obj(
                    json!({ "items": { "type": "array", "items": r("DncEntry") } }),
                    &["items"],
                    false,
                )),
            ),
            errors: &[400, 422],
        },
    );
    put(
        "/api/v1/campaigns",
        "get",
        Op {
            id: "listCampaigns",
            links: &[],
            summary: "List campaigns",
            scope: "campaigns:read",
            params: paging(),
            body: None,
            ok: (200, Some(page_of("Campaign"))),
            errors: &[400, 422],
        },
    );
    put(
        "/api/v1/campaigns",
        "post",
        Op {
            id: "createCampaign",
            links: &[
                "getCampaign",
                "editCampaign",
                "campaignAction",
                "leaseContacts",
                "getPacingGrant",
            ],
            summary: "Create a campaign (draft)",
            scope: "campaigns:write",
            params: vec![],
            body: json_body(r("CampaignSpec")),
            ok: (201, Some(r("Campaign"))),
            errors: &[400, 422],
        },
    );
    put(
        "/api/v1/campaigns/{id}",
        "get",
        Op {
            id: "getCampaign",
            links: &[],
            summary: "One campaign",
            scope: "campaigns:read",
            params: vec![id()],
            body: None,
            ok: (200, Some(r("Campaign"))),
            errors: &[400, 404],
        },
    );
    put(
        "/api/v1/campaigns/{id}",
        "put",
        Op {
            id: "editCampaign",
            links: &[],
            summary: "Replace a campaign's settings (draft, scheduled or paused)",
            scope: "campaigns:write",
            params: vec![id()],
            body: json_body(r("CampaignSpec")),
            ok: (200, Some(r("Campaign"))),
            errors: &[400, 404, 409, 422],
        },
    );
    put(
        "/api/v1/campaigns/{id}/actions/{action}",
        "post",
        Op {
            id: "campaignAction",
            links: &[],
            summary: "Schedule, pause, resume, stop or archive a campaign",
            scope: "campaigns:write",
            params: vec![
                id(),
                json!({ "name": "action", "in": "path", "required": true,
            "schema": { "type": "string", "enum": ["schedule", "pause", "resume", "stop", "archive"] } }),
            ],
            body: None,
            ok: (200, Some(r("Campaign"))),
            errors: &[400, 404, 409],
        },
    );
    put(
        "/api/v1/campaigns/{id}/leases",
        "post",
        Op {
            id: "leaseContacts",
            links: &["returnLease"],
            summary: "Lease the campaign's next contacts to an appliance",
            scope: "dialer",
            params: vec![id()],
            body: json_body(r("LeaseRequest")),
            ok: (201, Some(r("ContactLease"))),
            errors: &[400, 404, 409, 422],
        },
    );
    put(
        "/api/v1/campaigns/{id}/grant",
        "get",
        Op {
            id: "getPacingGrant",
            links: &[],
            summary: "The pacing grant for an appliance on this campaign",
            scope: "dialer",
            params: vec![
                id(),
                json!({ "name": "appliance", "in": "query", "required": true, "schema": { "type": "string" } }),
                json!({ "name": "max_concurrent", "in": "query", "required": false, "schema": { "type": "integer", "minimum": 0, "maximum": 10000 } }),
                json!({ "name": "max_attempts_per_minute", "in": "query", "required": false, "schema": { "type": "integer", "minimum": 0, "maximum": 100000 } }),
            ],
            body: None,
            ok: (200, Some(r("PacingGrant"))),
            errors: &[400, 404, 422],
        },
    );
    put(
        "/api/v1/leases/{id}/return",
        "post",
        Op {
            id: "returnLease",
            links: &[],
            summary: "Return a lease early; its untried contacts go back to the queue",
            scope: "dialer",
            params: vec![id()],
            body: None,
            ok: (204, None),
            errors: &[400, 404],
        },
    );
    put(
        "/api/v1/attempt-results",
        "post",
        Op {
            id: "reportAttemptResult",
            links: &[],
            summary: "Report one attempt's result (idempotent by attempt_id)",
            scope: "dialer",
            params: vec![],
            body: json_body(r("AttemptResult")),
            ok: (200, Some(r("AttemptApplied"))),
            errors: &[400, 404, 422],
        },
    );
    put(
        "/api/v1/agent-groups",
        "get",
        Op {
            id: "listAgentGroups",
            links: &[],
            summary: "List agent groups",
            scope: "agents:read",
            params: paging(),
            body: None,
            ok: (200, Some(page_of("AgentGroup"))),
            errors: &[400, 422],
        },
    );
    put(
        "/api/v1/agent-groups",
        "post",
        Op {
            id: "createAgentGroup",
            links: &[],
            summary: "Create an agent group",
            scope: "agents:write",
            params: vec![],
            body: json_body(r("NewAgentGroup")),
            ok: (201, Some(r("AgentGroup"))),
            errors: &[400, 409, 422],
        },
    );
    put(
        "/api/v1/agents",
        "get",
        Op {
            id: "listAgents",
            links: &[],
            summary: "List agents",
            scope: "agents:read",
            params: paging(),
            body: None,
            ok: (200, Some(page_of("Agent"))),
            errors: &[400, 422],
        },
    );
    put(
        "/api/v1/agents",
        "post",
        Op {
            id: "createAgent",
            links: &["getAgent", "updateAgent"],
            summary: "Create an agent (password stored as argon2id)",
            scope: "agents:write",
            params: vec![],
            body: json_body(r("NewAgent")),
            ok: (201, Some(r("Agent"))),
            errors: &[400, 409, 422],
        },
    );
    put(
        "/api/v1/agents/{id}",
        "get",
        Op {
            id: "getAgent",
            links: &[],
            summary: "One agent",
            scope: "agents:read",
            params: vec![id()],
            body: None,
            ok: (200, Some(r("Agent"))),
            errors: &[400, 404],
        },
    );
    put(
        "/api/v1/agents/{id}",
        "patch",
        Op {
            id: "updateAgent",
            links: &[],
            summary: "Change an agent (disable, rename, skills, groups, password)",
            scope: "agents:write",
            params: vec![id()],
            body: json_body(r("AgentPatch")),
            ok: (200, Some(r("Agent"))),
            errors: &[400, 404, 422],
        },
    );
    put(
        "/api/v1/routing-policy",
        "get",
        Op {
            id: "getRoutingPolicy",
            links: &[],
            summary: "The routing policy in force (newest version)",
            scope: "routing:read",
            params: vec![],
            body: None,
            ok: (200, Some(r("RoutingPolicyVersion"))),
            errors: &[404],
        },
    );
    put(
        "/api/v1/routing-policy",
        "put",
        Op {
            id: "saveRoutingPolicy",
            links: &[],
            summary: "Save a new version of the routing policy",
            scope: "routing:write",
            params: vec![],
            body: json_body(r("RoutingPolicy")),
            ok: (200, Some(r("RoutingPolicyVersion"))),
            errors: &[400, 422],
        },
    );
    put(
        "/api/v1/call-tasks",
        "post",
        Op {
            id: "createCallTask",
            links: &["getCallTask", "reportCallTaskResult"],
            summary: "Create a one-off call task; its result is POSTed, signed, to callback_url",
            scope: "call-tasks:write",
            params: vec![],
            body: json_body(r("NewCallTask")),
            ok: (201, Some(r("CallTask"))),
            errors: &[400, 422],
        },
    );
    put(
        "/api/v1/call-tasks/{id}",
        "get",
        Op {
            id: "getCallTask",
            links: &[],
            summary: "A call task with its result and webhook delivery state",
            scope: "call-tasks:read",
            params: vec![id()],
            body: None,
            ok: (200, Some(r("CallTask"))),
            errors: &[400, 404],
        },
    );
    put(
        "/api/v1/call-tasks/{id}/result",
        "post",
        Op {
            id: "reportCallTaskResult",
            links: &[],
            summary: "Report a call task's result; queues its webhook",
            scope: "dialer",
            params: vec![id()],
            body: json_body(r("CallTaskResult")),
            ok: (200, Some(r("CallTask"))),
            errors: &[400, 404, 409, 422],
        },
    );
    put(
        "/api/v1/dnc/import",
        "post",
        Op {
            id: "importDnc",
            links: &[],
            summary: "Bulk do-not-call import from CSV (columns phone, campaign_id, expires_at, reason); every refused row is answered with its line",
            scope: "compliance:write",
            params: vec![
                json!({ "name": "default_region", "in": "query", "required": false, "schema": { "type": "string" } }),
                json!({ "name": "campaign_id", "in": "query", "required": false, "schema": { "type": "integer", "format": "int64" } }),
                json!({ "name": "expires_at", "in": "query", "required": false, "schema": { "type": "integer", "format": "int64" } }),
                json!({ "name": "reason", "in": "query", "required": false, "schema": { "type": "string" } }),
            ],
            body: Some(
                json!({ "required": true, "content": { "text/csv": { "schema": { "type": "string" } } } }),
            ),
            ok: (200, Some(r("DncImportReport"))),
            errors: &[400, 413, 422],
        },
    );
    put(
        "/api/v1/dnc/{id}",
        "delete",
        Op {
            id: "removeDnc",
            links: &[],
            summary: "Remove one do-not-call entry (appliances holding the number are told)",
            scope: "compliance:write",
            params: vec![id()],
            body: None,
            ok: (204, None),
            errors: &[400, 404],
        },
    );
    put(
        "/api/v1/appliances",
        "get",
        Op {
            id: "listAppliances",
            links: &[],
            summary: "Appliances by name, with presence, firmware and last telemetry (after: the last name of the previous page)",
            scope: "appliances:read",
            params: vec![
                json!({ "name": "after", "in": "query", "required": false, "schema": { "type": "string" } }),
                json!({ "name": "limit", "in": "query", "required": false, "schema": { "type": "integer", "minimum": 1, "maximum": 500 } }),
            ],
            body: None,
            ok: (200, Some(r("AppliancePage"))),
            errors: &[400, 422],
        },
    );
    put(
        "/api/v1/appliances",
        "post",
        Op {
            id: "registerAppliance",
            links: &[],
            summary: "Register an appliance; answers its one-time claim code (24 h)",
            scope: "appliances:write",
            params: vec![],
            body: json_body(r("NewAppliance")),
            ok: (201, Some(r("RegisteredAppliance"))),
            errors: &[400, 409, 422],
        },
    );
    put(
        "/api/v1/appliances/{name}",
        "get",
        Op {
            id: "getAppliance",
            links: &[],
            summary: "One appliance",
            scope: "appliances:read",
            params: vec![name_param()],
            body: None,
            ok: (200, Some(r("Appliance"))),
            errors: &[400, 404, 422],
        },
    );
    put(
        "/api/v1/appliances/{name}/limits",
        "get",
        Op {
            id: "getApplianceLimits",
            links: &[],
            summary: "An appliance's trunk limits (split between the campaigns it dials)",
            scope: "appliances:read",
            params: vec![name_param()],
            body: None,
            ok: (200, Some(r("ApplianceLimitsView"))),
            errors: &[400, 404, 422],
        },
    );
    put(
        "/api/v1/appliances/{name}/limits",
        "put",
        Op {
            id: "setApplianceLimits",
            links: &[],
            summary: "Set an appliance's trunk limits; the next pacing grants follow them",
            scope: "appliances:write",
            params: vec![name_param()],
            body: json_body(r("ApplianceLimits")),
            ok: (200, Some(r("ApplianceLimitsView"))),
            errors: &[400, 404, 422],
        },
    );
    put(
        "/api/v1/appliances/{name}/revoke",
        "post",
        Op {
            id: "revokeAppliance",
            links: &[],
            summary: "Revoke an appliance: the link and the broker refuse it from now on",
            scope: "appliances:write",
            params: vec![name_param()],
            body: None,
            ok: (200, Some(r("Appliance"))),
            errors: &[400, 404, 422],
        },
    );
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Callgate coordinator API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Campaigns, contacts, compliance, leases and grants. Errors are application/problem+json with a `field` naming the input at fault.",
        },
        "paths": paths,
        "components": {
            "schemas": all_schemas(),
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_in_the_document_resolves() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part.chars().take_while(|c| c.is_alphanumeric()).collect();
            assert!(schemas.contains_key(&name), "dangling $ref {name}");
        }
        assert_eq!(doc["openapi"], "3.0.3");
    }
}
