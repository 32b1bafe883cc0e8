//! Bulk do-not-call import from CSV, streamed: a blocking thread reads the file a record at
//! a time and hands batches of [`BATCH_ROWS`] checked entries through a bounded channel;
//! each batch is stored by [`super::add_dnc`] in one transaction (so appliances holding a
//! number get the delta). Memory stays constant whatever the file's size. Every bad row is
//! reported with its line number and reason while the good rows are stored.
//!
//! Columns (header row required, names case-insensitive): `phone` (or `number`,
//! `phone_number`) required, E.164 or national in `default_region`; `campaign_id` (empty:
//! the global list), `expires_at` (Unix milliseconds; empty: permanent), `reason`
//! optional. Row values override the defaults given with the request.
//!
//! Must not: hold more than a few batches, or log a number unmasked.

use super::{add_dnc, NewDnc, PolicyError};
use crate::contacts::import::RowError;
use crate::contacts::vault::NumberVault;
use crate::store::Store;
use callgate_common::phone::PhoneNumber;
use serde::Serialize;
use std::io::Read;

/// Entries per transaction.
pub const BATCH_ROWS: usize = 500;
/// Refused rows kept in the report (all are counted).
pub const REPORTED_ERRORS: usize = 1000;

/// What applies to rows that do not say otherwise.
#[derive(Debug, Clone, Default)]
pub struct DncDefaults {
    /// Region for national-format numbers (`None`: E.164 only).
    pub default_region: Option<String>,
    /// `None`: the global list.
    pub campaign_id: Option<i64>,
    /// `None`: permanent.
    pub expires_at: Option<i64>,
    pub reason: String,
}

/// What a bulk import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DncImportReport {
    /// Data rows read (header excluded).
    pub rows_seen: u64,
    /// Entries stored.
    pub added: u64,
    /// Rows refused.
    pub rejected: u64,
    /// The first [`REPORTED_ERRORS`] refusals, by line.
    pub errors: Vec<RowError>,
}

struct Columns {
    phone: usize,
    campaign: Option<usize>,
    expires: Option<usize>,
    reason: Option<usize>,
}

fn columns(headers: &csv::StringRecord) -> Result<Columns, PolicyError> {
    let names: Vec<String> = headers
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_ascii_lowercase())
        .collect();
    let find = |aliases: &[&str]| names.iter().position(|n| aliases.contains(&n.as_str()));
    Ok(Columns {
        phone: find(&["phone", "number", "phone_number"]).ok_or_else(|| PolicyError::Invalid {
            field: "csv".into(),
            reason: "the header row has no `phone` column".into(),
        })?,
        campaign: find(&["campaign_id"]),
        expires: find(&["expires_at"]),
        reason: find(&["reason"]),
    })
}

fn cell(rec: &csv::StringRecord, at: Option<usize>) -> Option<&str> {
    at.and_then(|i| rec.get(i))
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn entry(cols: &Columns, rec: &csv::StringRecord, d: &DncDefaults) -> Result<NewDnc, String> {
    let raw = cell(rec, Some(cols.phone)).ok_or("`phone` is empty")?;
    let number = PhoneNumber::parse(raw, d.default_region.as_deref())
        .map_err(|e| format!("`phone`: {e}"))?;
    let int = |name: &str, at| match cell(rec, at) {
        None => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(Some)
            .ok_or_else(|| format!("`{name}` must be a whole number, got {v:?}")),
    };
    let reason = cell(rec, cols.reason).map_or_else(|| d.reason.clone(), str::to_string);
    if reason.len() > 500 {
        return Err("`reason` is longer than 500 characters".into());
    }
    Ok(NewDnc {
        number: number.e164(),
        campaign_id: int("campaign_id", cols.campaign)?.or(d.campaign_id),
        expires_at: int("expires_at", cols.expires)?.or(d.expires_at),
        reason,
    })
}

type Batch = (Vec<NewDnc>, Vec<RowError>, u64);

fn read_all(
    input: impl Read,
    d: DncDefaults,
    tx: tokio::sync::mpsc::Sender<Result<Batch, PolicyError>>,
) {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(crate::contacts::csv_lines::LineCounting::new(input));
    let cols = match reader
        .headers()
        .map_err(|e| PolicyError::Invalid {
            field: "csv".into(),
            reason: e.to_string(),
        })
        .and_then(columns)
    {
        Ok(c) => c,
        Err(e) => {
            let _ = tx.blocking_send(Err(e));
            return;
        }
    };
    let mut batch: Batch = (Vec::new(), Vec::new(), 0);
    let mut rec = csv::StringRecord::new();
    loop {
        let at = reader.position().byte();
        match reader.read_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {
                batch.2 += 1;
                let at = rec.position().map_or(at, |p| p.byte());
                let line = reader.get_mut().line_at(at);
                match entry(&cols, &rec, &d) {
                    Ok(e) => batch.0.push(e),
                    Err(reason) => batch.1.push(RowError { line, reason }),
                }
            }
            Err(e) => {
                let at = e.position().map_or(at, |p| p.byte());
                let line = reader.get_mut().line_at(at);
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    let _ = tx.blocking_send(Err(PolicyError::Invalid {
                        field: "csv".into(),
                        reason: format!("reading line {line}: {e}"),
                    }));
                    return;
                }
                batch.2 += 1;
                batch.1.push(RowError {
                    line,
                    reason: match e.kind() {
                        csv::ErrorKind::Utf8 { .. } => "row is not valid UTF-8".into(),
                        _ => e.to_string(),
                    },
                });
            }
        }
        if batch.0.len() + batch.1.len() >= BATCH_ROWS
            && tx.blocking_send(Ok(std::mem::take(&mut batch))).is_err()
        {
            return;
        }
    }
    let _ = tx.blocking_send(Ok(batch));
}

/// Imports the CSV `input` into the do-not-call lists. A file without a `phone` column is
/// refused as a whole; otherwise good rows are stored batch by batch and bad ones reported.
/// A failure part-way (database, unreadable input) keeps the batches already stored.
pub async fn import_dnc_csv(
    store: &Store,
    vault: &NumberVault,
    input: impl Read + Send + 'static,
    defaults: DncDefaults,
) -> Result<DncImportReport, PolicyError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let reader = tokio::task::spawn_blocking(move || read_all(input, defaults, tx));
    let mut report = DncImportReport::default();
    let mut failure = None;
    while let Some(msg) = rx.recv().await {
        let (entries, errors, rows) = match msg {
            Ok(b) => b,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        if !entries.is_empty() {
            match add_dnc(store, vault, &entries).await {
                Ok(added) => report.added += added.len() as u64,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        report.rows_seen += rows;
        report.rejected += errors.len() as u64;
        for e in errors {
            if report.errors.len() < REPORTED_ERRORS {
                report.errors.push(e);
            }
        }
    }
    drop(rx);
    let _ = reader.await;
    match failure {
        Some(e) => Err(e),
        None => {
            tracing::info!(
                rows = report.rows_seen,
                added = report.added,
                rejected = report.rejected,
                "do-not-call CSV imported"
            );
            Ok(report)
        }
    }
}
