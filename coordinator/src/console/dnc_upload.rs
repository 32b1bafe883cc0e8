//! Do-not-call numbers uploaded as a CSV file: the rows read into [`NewDnc`] entries, each
//! refused row reported by its line, and the accepted rows added in one transaction with
//! their audit row. The list itself is [`crate::compliance`]'s.
//!
//! The file has a header row naming its columns: `number` (E.164, required), and optionally
//! `campaign_id` (blank: every campaign), `expires_on` (`YYYY-MM-DD`, blank: permanent) and
//! `reason`.

use super::audit;
use super::auth::Permission;
use super::policy_pages::{dnc_response, expiry_of};
use super::web::{failure, message, Page, SignedIn};
use super::{ConsoleError, ConsoleState};
use crate::compliance::{self, NewDnc, PolicyError};
use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use callgate_common::phone::PhoneNumber;
use serde::Serialize;

/// The largest DNC file accepted through the console (bigger lists go through the API in
/// batches).
pub const MAX_DNC_UPLOAD_BYTES: usize = 16 * 1024 * 1024;

/// The most rows one upload adds.
pub const MAX_DNC_ROWS: usize = 200_000;

/// A row that was not added, by its line in the file (the header is line 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowError {
    pub line: u64,
    pub message: String,
}

/// What a file holds: the entries to add (with their lines) and the refused rows.
#[derive(Debug, Default, PartialEq)]
pub struct DncFile {
    pub entries: Vec<(u64, NewDnc)>,
    pub errors: Vec<RowError>,
}

/// Reads a DNC CSV file. A file that cannot be used at all (no `number` column, an unknown
/// column, too many rows) is refused with the reason; bad rows are listed, not fatal.
pub fn read_dnc_csv(bytes: &[u8]) -> Result<DncFile, String> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(crate::contacts::csv_lines::LineCounting::new(bytes));
    let header = reader
        .headers()
        .map_err(|e| format!("the header row is unreadable: {e}"))?
        .clone();
    let mut columns = [None; 4];
    for (i, name) in header.iter().enumerate() {
        let slot = match name.to_ascii_lowercase().as_str() {
            "number" => 0,
            "campaign_id" => 1,
            "expires_on" => 2,
            "reason" => 3,
            other => {
                return Err(format!(
                    "column {other:?} is not one of number, campaign_id, expires_on, reason"
                ))
            }
        };
        columns[slot] = Some(i);
    }
    if columns[0].is_none() {
        return Err("the header row has no \"number\" column".into());
    }
    let mut out = DncFile::default();
    let mut record = csv::StringRecord::new();
    loop {
        let at = reader.position().byte();
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let at = e.position().map_or(at, |p| p.byte());
                let line = reader.get_mut().line_at(at);
                out.errors.push(RowError {
                    line,
                    message: format!("unreadable: {e}"),
                });
                continue;
            }
        }
        let at = record.position().map_or(at, |p| p.byte());
        let line = reader.get_mut().line_at(at);
        if record.iter().all(str::is_empty) {
            continue;
        }
        let get = |slot: usize| {
            columns[slot]
                .and_then(|i| record.get(i))
                .unwrap_or_default()
                .to_string()
        };
        match row_of(&get) {
            Ok(entry) => out.entries.push((line, entry)),
            Err(message) => out.errors.push(RowError { line, message }),
        }
        if out.entries.len() + out.errors.len() > MAX_DNC_ROWS {
            return Err(format!(
                "more than {MAX_DNC_ROWS} rows: split the file or use the API"
            ));
        }
    }
    Ok(out)
}

fn row_of(get: &dyn Fn(usize) -> String) -> Result<NewDnc, String> {
    let number = get(0);
    PhoneNumber::parse(&number, None).map_err(|e| format!("number {number:?}: {e}"))?;
    let campaign = get(1);
    let campaign_id = match campaign.as_str() {
        "" => None,
        c => Some(
            c.parse::<i64>()
                .map_err(|_| format!("campaign_id: {c:?} is not a campaign id"))?,
        ),
    };
    let expires_at = expiry_of(&get(2)).map_err(|e| e.to_string())?;
    let reason = get(3);
    if reason.len() > 500 {
        return Err("reason: at most 500 characters".into());
    }
    Ok(NewDnc {
        number,
        campaign_id,
        expires_at,
        reason,
    })
}

/// `POST /dnc/upload`: adds the good rows of a CSV file, audited as one change, and shows
/// the refused rows by line.
pub async fn upload(State(state): State<ConsoleState>, me: SignedIn, mut parts: Multipart) -> Page {
    let mut csrf = String::new();
    let mut file: Option<Vec<u8>> = None;
    let refuse = |me: &SignedIn, code: StatusCode, e: String| {
        Err::<axum::response::Response, super::web::Refusal>(
            message(code, me.frame(), "Upload refused", e).into(),
        )
    };
    loop {
        let mut field = match parts.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                return refuse(
                    &me,
                    StatusCode::BAD_REQUEST,
                    format!(
                        "the upload was cut short or is over {MAX_DNC_UPLOAD_BYTES} bytes: {e}"
                    ),
                )
            }
        };
        match field.name().unwrap_or_default() {
            "csrf" => csrf = field.text().await.unwrap_or_default(),
            "file" => {
                // The CSRF token comes first in the form; refuse before reading the file.
                me.require_form(Permission::EditCompliance, &csrf)?;
                let mut bytes = Vec::new();
                loop {
                    match field.chunk().await {
                        Ok(Some(chunk)) => {
                            if bytes.len() + chunk.len() > MAX_DNC_UPLOAD_BYTES {
                                return refuse(
                                    &me,
                                    StatusCode::PAYLOAD_TOO_LARGE,
                                    format!("file: larger than {MAX_DNC_UPLOAD_BYTES} bytes"),
                                );
                            }
                            bytes.extend_from_slice(&chunk);
                        }
                        Ok(None) => break,
                        Err(e) => {
                            return refuse(
                                &me,
                                StatusCode::BAD_REQUEST,
                                format!("the upload was cut short: {e}"),
                            )
                        }
                    }
                }
                file = Some(bytes);
            }
            _ => {}
        }
    }
    me.require_form(Permission::EditCompliance, &csrf)?;
    let Some(bytes) = file.filter(|b| !b.is_empty()) else {
        let frame = me.frame().error("file: choose a CSV file to upload");
        return dnc_response(&state, &me, frame, StatusCode::BAD_REQUEST, Vec::new()).await;
    };
    let read = match read_dnc_csv(&bytes) {
        Ok(r) => r,
        Err(e) => {
            let frame = me.frame().error(format!("file: {e}"));
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
    let entries: Vec<NewDnc> = read.entries.iter().map(|(_, e)| e.clone()).collect();
    let added = if entries.is_empty() {
        Vec::new()
    } else {
        let added = async {
            let mut tx = state.store.begin_write().await?;
            let added = compliance::add_dnc_in(&mut tx, &state.vault, &entries).await?;
            let after = serde_json::json!({
                "added": added,
                "refused_rows": read.errors,
            });
            audit::record(
                &mut tx,
                &me.actor(),
                "dnc.import",
                "dnc",
                None::<&()>,
                Some(&after),
            )
            .await
            .map_err(|e| match e {
                ConsoleError::Db(db) => PolicyError::Db(db),
                other => PolicyError::Db(sqlx::Error::Protocol(other.to_string())),
            })?;
            tx.commit().await?;
            Ok::<_, PolicyError>(added)
        }
        .await;
        match added {
            Ok(a) => a,
            Err(PolicyError::Db(e)) => return Err(failure(me.frame(), e).into()),
            // Every row was checked as it was read: a refusal here is a bug, shown as is.
            Err(e) => {
                let frame = me.frame().error(format!("file: {e}"));
                return dnc_response(
                    &state,
                    &me,
                    frame,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Vec::new(),
                )
                .await;
            }
        }
    };
    let text = format!(
        "{} numbers added to the do-not-call list; {} rows refused.",
        added.len(),
        read.errors.len()
    );
    let (frame, code) = if read.errors.is_empty() {
        (me.frame().notice(text), StatusCode::OK)
    } else if added.is_empty() {
        (me.frame().error(text), StatusCode::UNPROCESSABLE_ENTITY)
    } else {
        (me.frame().notice(text), StatusCode::OK)
    };
    dnc_response(&state, &me, frame, code, read.errors).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_rows_are_kept_and_bad_rows_are_named_by_their_line() {
        let csv = "number,campaign_id,expires_on,reason\n\
                   +14155550100,,,asked\n\
                   0123,,,bad number\n\
                   +14155550101,7,2027-01-31,\n\
                   +14155550102,seven,,\n\
                   ,,,\n\
                   +14155550103,,31/01/2027,\n\
                   +442079460000\n";
        let f = read_dnc_csv(csv.as_bytes()).unwrap();
        let lines: Vec<u64> = f.entries.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, [2, 4, 8]);
        assert_eq!(f.entries[1].1.campaign_id, Some(7));
        assert!(f.entries[1].1.expires_at.is_some());
        assert_eq!(f.entries[0].1.reason, "asked");
        let errors: Vec<(u64, &str)> = f
            .errors
            .iter()
            .map(|e| (e.line, e.message.as_str()))
            .collect();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert_eq!(errors[0].0, 3);
        assert!(
            errors[0].1.starts_with("number \"0123\""),
            "{}",
            errors[0].1
        );
        assert_eq!(errors[1].0, 5);
        assert!(errors[1].1.contains("campaign_id"), "{}", errors[1].1);
        assert_eq!(errors[2].0, 7);
        assert!(errors[2].1.contains("expires_on"), "{}", errors[2].1);
    }

    #[test]
    fn rows_after_blank_lines_are_named_by_their_real_line() {
        let csv =
            "number,reason\n\n+14155550100,asked\n\r\n\n0123,bad\n+14155550101,\"a\nb\"\nnope\n";
        let f = read_dnc_csv(csv.as_bytes()).unwrap();
        let lines: Vec<u64> = f.entries.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, [3, 7]);
        let errors: Vec<u64> = f.errors.iter().map(|e| e.line).collect();
        assert_eq!(errors, [6, 9], "{:?}", f.errors);
    }

    #[test]
    fn a_file_without_a_number_column_or_with_an_unknown_column_is_refused_whole() {
        let e = read_dnc_csv(b"phone\n+14155550100\n").unwrap_err();
        assert!(e.contains("\"phone\""), "{e}");
        let e = read_dnc_csv(b"reason\nasked\n").unwrap_err();
        assert!(e.contains("no \"number\" column"), "{e}");
    }
}
