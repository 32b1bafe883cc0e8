//! The fleet page: every appliance with its registration state, certificate expiry, whether
//! it is online ("offline since …" with the last known figures otherwise), calls, agents,
//! trunk health and outbox depth; registering an appliance (its one-time claim code shown
//! once) and revoking one. Registration and revocation are [`crate::enroll::registry`]'s.

use super::audit;
use super::auth::Permission;
use super::live::{self, ApplianceLive};
use super::web::{failure, message, render, when, Fields, Frame, Page, SignedIn};
use super::{ConsoleError, ConsoleState};
use crate::enroll::{registry, EnrollError};
use askama::Template;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use callgate_common::ids::ApplianceId;
use callgate_common::time::UnixMillis;
use serde::Serialize;
use std::collections::HashMap;

/// An appliance's registration, as the registry stores it.
#[derive(Debug, Clone, Serialize)]
pub struct Registration {
    pub name: String,
    pub site: String,
    pub state: String,
    pub cert_not_after: Option<i64>,
}

async fn registrations(state: &ConsoleState) -> Result<HashMap<String, Registration>, sqlx::Error> {
    let rows: Vec<(String, String, String, Option<i64>)> =
        sqlx::query_as("SELECT name, site, state, cert_not_after FROM appliances")
            .fetch_all(state.store.pool())
            .await?;
    Ok(rows
        .into_iter()
        .map(|(name, site, state, cert_not_after)| {
            (
                name.clone(),
                Registration {
                    name,
                    site,
                    state,
                    cert_not_after,
                },
            )
        })
        .collect())
}

/// One row of the fleet table.
pub struct FleetRow {
    pub live: Option<ApplianceLive>,
    pub name: String,
    pub site: String,
    pub registration: String,
    pub certificate: String,
    pub revocable: bool,
}

#[derive(Template)]
#[template(path = "console/fleet.html")]
struct FleetPage {
    page: Frame,
    rows: Vec<FleetRow>,
    csrf: String,
    can_manage: bool,
    claim: Option<(String, String)>,
}

async fn fleet_page(
    state: &ConsoleState,
    me: &SignedIn,
    frame: Frame,
    code: StatusCode,
    claim: Option<(String, String)>,
) -> Page {
    let regs = registrations(state)
        .await
        .map_err(|e| failure(me.frame(), e))?;
    let snapshot = live::snapshot(&state.store, UnixMillis::now())
        .await
        .map_err(|e| failure(me.frame(), e))?;
    let mut live_by: HashMap<String, ApplianceLive> = snapshot
        .appliances
        .into_iter()
        .map(|a| (a.name.clone(), a))
        .collect();
    let mut names: Vec<String> = regs.keys().chain(live_by.keys()).cloned().collect();
    names.sort();
    names.dedup();
    let rows = names
        .into_iter()
        .map(|name| {
            let reg = regs.get(&name);
            FleetRow {
                live: live_by.remove(&name),
                site: reg.map(|r| r.site.clone()).unwrap_or_default(),
                registration: reg.map_or("unregistered".into(), |r| r.state.clone()),
                certificate: reg
                    .and_then(|r| r.cert_not_after)
                    .map_or("–".into(), |t| format!("valid until {}", when(t))),
                revocable: reg.is_some_and(|r| r.state != "revoked"),
                name,
            }
        })
        .collect();
    Ok(render(
        code,
        &FleetPage {
            page: frame,
            rows,
            csrf: me.session.csrf_token.clone(),
            can_manage: me.may(Permission::ManageFleet),
            claim,
        },
    ))
}

pub async fn page(State(state): State<ConsoleState>, me: SignedIn) -> Page {
    me.require(Permission::View)?;
    fleet_page(&state, &me, me.frame(), StatusCode::OK, None).await
}

fn audit_failed(e: ConsoleError) -> EnrollError {
    match e {
        ConsoleError::Db(db) => EnrollError::Store(db),
        other => EnrollError::Store(sqlx::Error::Protocol(other.to_string())),
    }
}

pub async fn register(
    State(state): State<ConsoleState>,
    me: SignedIn,
    Form(f): Form<Fields>,
) -> Page {
    me.require_form(Permission::ManageFleet, f.get("csrf"))?;
    let name = match ApplianceId::new(f.get("name").trim()) {
        Ok(n) => n,
        Err(e) => {
            let frame = me.frame().error(format!("name: {e}"));
            return fleet_page(&state, &me, frame, StatusCode::UNPROCESSABLE_ENTITY, None).await;
        }
    };
    let site = f.get("site").trim().to_string();
    let registered = async {
        let mut tx = state.store.begin_write().await?;
        let code = registry::register_in(&mut tx, &name, &site, UnixMillis::now()).await?;
        let after = serde_json::json!({"name": name.as_str(), "site": site, "state": "registered"});
        let target = format!("appliance:{name}");
        audit::record(
            &mut tx,
            &me.actor(),
            "appliance.register",
            &target,
            None::<&Registration>,
            Some(&after),
        )
        .await
        .map_err(audit_failed)?;
        tx.commit().await?;
        Ok::<_, EnrollError>(code)
    }
    .await;
    match registered {
        Ok(code) => {
            let frame = me.frame().notice(format!(
                "{name} registered. Its claim code is shown once and is valid for 24 hours."
            ));
            fleet_page(
                &state,
                &me,
                frame,
                StatusCode::OK,
                Some((name.to_string(), code)),
            )
            .await
        }
        Err(EnrollError::Store(e)) => Err(failure(me.frame(), e).into()),
        Err(e) => {
            let frame = me.frame().error(format!("name: {e}"));
            fleet_page(&state, &me, frame, StatusCode::UNPROCESSABLE_ENTITY, None).await
        }
    }
}

pub async fn revoke(
    State(state): State<ConsoleState>,
    me: SignedIn,
    Path(name): Path<String>,
    Form(f): Form<Fields>,
) -> Page {
    me.require_form(Permission::ManageFleet, f.get("csrf"))?;
    let Ok(id) = ApplianceId::new(name.as_str()) else {
        return Err(message(
            StatusCode::NOT_FOUND,
            me.frame(),
            "Not found",
            "no such appliance",
        )
        .into());
    };
    let before = registrations(&state)
        .await
        .map_err(|e| failure(me.frame(), e))?
        .remove(id.as_str());
    let revoked = async {
        let mut tx = state.store.begin_write().await?;
        registry::revoke_in(&mut tx, &id).await?;
        let after = before.clone().map(|r| Registration {
            state: "revoked".into(),
            ..r
        });
        let target = format!("appliance:{id}");
        audit::record(
            &mut tx,
            &me.actor(),
            "appliance.revoke",
            &target,
            before.as_ref(),
            after.as_ref(),
        )
        .await
        .map_err(audit_failed)?;
        tx.commit().await?;
        Ok::<_, EnrollError>(())
    }
    .await;
    match revoked {
        Ok(()) => {
            let frame = me.frame().notice(format!(
                "{id} revoked: the link refuses it and the next broker ACL leaves it out."
            ));
            fleet_page(&state, &me, frame, StatusCode::OK, None).await
        }
        Err(EnrollError::UnknownAppliance(_)) => Err(message(
            StatusCode::NOT_FOUND,
            me.frame(),
            "Not found",
            "no such appliance",
        )
        .into()),
        Err(e) => Err(failure(me.frame(), e).into()),
    }
}
