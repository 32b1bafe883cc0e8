//! Streaming CSV import of contacts.
//!
//! A blocking thread reads the CSV one record at a time, normalises and encrypts each row,
//! and hands batches of [`batch_rows`] rows through a bounded channel to the async side, which
//! writes each batch in one transaction. Memory stays constant whatever the file's size:
//! at most a few batches are in flight. Bad rows are reported with their line number and
//! reason (stored in `contact_import_errors`) while the good rows import. Duplicates —
//! within the file or against earlier imports — are counted, and the existing contact joins
//! the list.
//!
//! Columns (header row required, names case-insensitive): `phone` (or `number`,
//! `phone_number`) required; `timezone` (`time_zone`, `tz`), `external_id`
//! (`customer_id`), `tags` (separated by `;` or `|`), `urgency`, `customer_value`
//! optional; every other column becomes a custom field usable as a script variable.

use super::vault::{NumberVault, VaultError};
use super::{ContactError, ContactListId};
use crate::store::Store;
use callgate_common::compliance::{is_known_zone, zones_of_calling_code};
use callgate_common::phone::PhoneNumber;
use callgate_common::time::UnixMillis;
use serde::Serialize;
use std::io::Read;

/// Rows per transaction, per engine. PostgreSQL takes each batch through `COPY` into a
/// staging table (no bind-parameter limit; larger batches, fewer commits); through sqlx,
/// SQLite's cost per bound parameter grows with the statement's parameter count, so it
/// gets small statements.
pub fn batch_rows(backend: callgate_common::store::Backend) -> usize {
    match backend {
        callgate_common::store::Backend::Postgres => 5000,
        callgate_common::store::Backend::Sqlite => 100,
    }
}
/// Row errors kept in the returned report (all are stored).
pub const REPORTED_ERRORS: usize = 100;

/// One row that was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowError {
    /// Line number in the file (the header is line 1).
    pub line: u64,
    /// What was wrong.
    pub reason: String,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct ImportReport {
    /// The import's id (for `GET /api/v1/imports/{id}`).
    pub import_id: i64,
    /// Data rows read (header excluded).
    pub rows_seen: u64,
    /// New contacts created.
    pub imported: u64,
    /// Rows whose number was already known (in this file or before).
    pub duplicates: u64,
    /// Rows refused.
    pub rejected: u64,
    /// The first [`REPORTED_ERRORS`] refusals.
    pub errors: Vec<RowError>,
}

/// Progress as the import goes: bytes read of the total, rows so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportProgress {
    /// Bytes of the file consumed.
    pub bytes_read: u64,
    /// The file's size, when known.
    pub bytes_total: Option<u64>,
    /// Data rows read so far.
    pub rows_seen: u64,
}

/// A contact row ready to store: number encrypted, index computed.
#[derive(Debug, Clone)]
struct ParsedContact {
    index: Vec<u8>,
    cipher: Vec<u8>,
    masked: String,
    zones: String,
    external_id: Option<String>,
    urgency: f64,
    customer_value: f64,
    fields: String,
    tags: String,
}

/// A batch of parsed rows, numbered in file order.
#[derive(Debug, Default)]
struct Batch {
    /// Position in the file: batches are written in this order.
    seq: u64,
    /// Parsed rows (SQLite's writer binds them).
    contacts: Vec<ParsedContact>,
    /// The same rows as `COPY` text (PostgreSQL's writer sends it as is); `contacts` is
    /// then empty and `staged` counts the rows.
    copy: Vec<u8>,
    staged: u64,
    errors: Vec<RowError>,
    rows_seen: u64,
    bytes_read: u64,
}

impl Batch {
    fn good_rows(&self) -> u64 {
        self.contacts.len() as u64 + self.staged
    }
}

/// Rows read from the file and not yet parsed: what the reader hands a worker.
struct RawChunk {
    seq: u64,
    rows: Vec<RawRow>,
    bytes_read: u64,
}

enum RawRow {
    /// A record and its line number.
    Record(u64, csv::StringRecord),
    /// A row the CSV reader itself refused (bad UTF-8, ...).
    Refused(RowError),
}

/// Where each known column is.
#[derive(Debug)]
struct Columns {
    phone: usize,
    timezone: Option<usize>,
    external_id: Option<usize>,
    tags: Option<usize>,
    urgency: Option<usize>,
    customer_value: Option<usize>,
    custom: Vec<(usize, String)>,
}

impl Columns {
    fn of(headers: &csv::StringRecord) -> Result<Columns, ContactError> {
        let names: Vec<String> = headers
            .iter()
            .map(|h| h.trim().trim_start_matches('\u{feff}').to_ascii_lowercase())
            .collect();
        let find = |aliases: &[&str]| names.iter().position(|n| aliases.contains(&n.as_str()));
        let phone = find(&["phone", "number", "phone_number"])
            .ok_or_else(|| ContactError::BadCsv("the header row has no `phone` column".into()))?;
        let timezone = find(&["timezone", "time_zone", "tz"]);
        let external_id = find(&["external_id", "customer_id"]);
        let tags = find(&["tags"]);
        let urgency = find(&["urgency"]);
        let customer_value = find(&["customer_value"]);
        let known = [
            Some(phone),
            timezone,
            external_id,
            tags,
            urgency,
            customer_value,
        ];
        let custom = names
            .iter()
            .enumerate()
            .filter(|(i, n)| !known.contains(&Some(*i)) && !n.is_empty())
            .map(|(i, _)| (i, headers[i].trim().to_string()))
            .collect();
        Ok(Columns {
            phone,
            timezone,
            external_id,
            tags,
            urgency,
            customer_value,
            custom,
        })
    }
}

fn field(rec: &csv::StringRecord, at: Option<usize>) -> Option<&str> {
    at.and_then(|i| rec.get(i))
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn score(rec: &csv::StringRecord, at: Option<usize>, name: &str) -> Result<f64, String> {
    match field(rec, at) {
        None => Ok(0.0),
        Some(s) => match s.parse::<f64>() {
            Ok(v) if v.is_finite() && (0.0..=1_000_000.0).contains(&v) => Ok(v),
            _ => Err(format!(
                "`{name}` must be a number from 0 to 1000000, got {s:?}"
            )),
        },
    }
}

fn parse_row(
    cols: &Columns,
    rec: &csv::StringRecord,
    default_region: &str,
    vault: &NumberVault,
) -> Result<ParsedContact, String> {
    let raw = field(rec, Some(cols.phone)).ok_or("`phone` is empty")?;
    let number =
        PhoneNumber::parse(raw, Some(default_region)).map_err(|e| format!("`phone`: {e}"))?;
    let zones = match field(rec, cols.timezone) {
        Some(tz) if is_known_zone(tz) => tz.to_string(),
        Some(tz) => return Err(format!("`timezone`: unknown time zone {tz:?}")),
        None => zones_of_calling_code(number.country_code())
            .ok_or_else(|| {
                format!(
                    "`timezone` is empty and no zone is known for country code +{}",
                    number.country_code()
                )
            })?
            .join(","),
    };
    let urgency = score(rec, cols.urgency, "urgency")?;
    let customer_value = score(rec, cols.customer_value, "customer_value")?;
    let tags = field(rec, cols.tags)
        .map(|t| {
            let list: Vec<&str> = t
                .split([';', '|'])
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect();
            if list.is_empty() {
                String::new()
            } else {
                format!(",{},", list.join(",").to_lowercase())
            }
        })
        .unwrap_or_default();
    let mut fields = serde_json::Map::new();
    for (i, name) in &cols.custom {
        if let Some(v) = rec.get(*i) {
            fields.insert(
                name.clone(),
                serde_json::Value::String(v.trim().to_string()),
            );
        }
    }
    let cipher = vault.seal(&number).map_err(|e| e.to_string())?;
    Ok(ParsedContact {
        index: vault.blind_index(&number),
        cipher,
        masked: number.masked(),
        zones,
        external_id: field(rec, cols.external_id).map(str::to_string),
        urgency,
        customer_value,
        fields: serde_json::Value::Object(fields).to_string(),
        tags,
    })
}

/// Parser threads per import: the rows are independent, so normalising, sealing and
/// encoding them spreads over the machine's cores (at least two, at most eight).
pub fn import_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 8)
}

type BatchSender = tokio::sync::mpsc::Sender<Result<Batch, ContactError>>;

/// Reads the CSV on the current (blocking) thread and hands chunks of `batch_size` records,
/// numbered in file order, to `work`. Only the reader touches the file, so line numbers and
/// byte offsets are exact; a chunk is at most `batch_size` records.
fn read_chunks(
    input: impl Read,
    batch_size: usize,
    cols_out: std::sync::mpsc::SyncSender<Columns>,
    work: std::sync::mpsc::SyncSender<RawChunk>,
    failed: BatchSender,
) {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .from_reader(super::csv_lines::LineCounting::new(input));
    let cols = match reader
        .headers()
        .map_err(|e| ContactError::BadCsv(e.to_string()))
        .and_then(Columns::of)
    {
        Ok(c) => c,
        Err(e) => {
            let _ = failed.blocking_send(Err(e));
            return;
        }
    };
    if cols_out.send(cols).is_err() {
        return;
    }
    let mut seq = 0;
    let mut rows = Vec::with_capacity(batch_size);
    loop {
        let at = reader.position().byte();
        let mut rec = csv::StringRecord::new();
        match reader.read_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {
                let at = rec.position().map_or(at, |p| p.byte());
                rows.push(RawRow::Record(reader.get_mut().line_at(at), rec));
            }
            Err(e) => {
                let at = e.position().map_or(at, |p| p.byte());
                let line = reader.get_mut().line_at(at);
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    let _ = failed.blocking_send(Err(ContactError::BadCsv(format!(
                        "reading line {line}: {e}"
                    ))));
                    return;
                }
                rows.push(RawRow::Refused(RowError {
                    line,
                    reason: match e.kind() {
                        csv::ErrorKind::Utf8 { .. } => "row is not valid UTF-8".into(),
                        _ => e.to_string(),
                    },
                }));
            }
        }
        if rows.len() >= batch_size {
            let chunk = RawChunk {
                seq,
                rows: std::mem::replace(&mut rows, Vec::with_capacity(batch_size)),
                bytes_read: reader.position().byte(),
            };
            seq += 1;
            if work.send(chunk).is_err() {
                return;
            }
        }
    }
    let _ = work.send(RawChunk {
        seq,
        rows,
        bytes_read: reader.position().byte(),
    });
}

/// One worker: takes chunks from the shared queue until it closes, parses and seals each
/// row, and sends the batch on (as `COPY` text when `copy_format`).
fn parse_chunks(
    cols: &Columns,
    work: &std::sync::Mutex<std::sync::mpsc::Receiver<RawChunk>>,
    default_region: &str,
    vault: &NumberVault,
    copy_format: bool,
    out: BatchSender,
) {
    loop {
        let next = match work.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(chunk) = next else { return };
        let mut batch = Batch {
            seq: chunk.seq,
            rows_seen: chunk.rows.len() as u64,
            bytes_read: chunk.bytes_read,
            ..Batch::default()
        };
        for row in chunk.rows {
            match row {
                RawRow::Record(line, rec) => match parse_row(cols, &rec, default_region, vault) {
                    Ok(c) => batch.contacts.push(c),
                    Err(reason) => batch.errors.push(RowError { line, reason }),
                },
                RawRow::Refused(e) => batch.errors.push(e),
            }
        }
        if copy_format {
            batch.copy = copy_text(&batch.contacts);
            batch.staged = batch.contacts.len() as u64;
            batch.contacts = Vec::new();
        }
        if out.blocking_send(Ok(batch)).is_err() {
            return;
        }
    }
}

/// Starts the reader and the workers; batches arrive on the returned channel in any order
/// (their `seq` says where they belong). At most a few batches per worker are in flight,
/// so memory does not grow with the file.
fn spawn_pipeline(
    input: impl Read + Send + 'static,
    batch_size: usize,
    default_region: String,
    vault: NumberVault,
    copy_format: bool,
    workers: usize,
) -> (
    tokio::sync::mpsc::Receiver<Result<Batch, ContactError>>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(workers + 1);
    let handle = tokio::task::spawn_blocking(move || {
        let (cols_tx, cols_rx) = std::sync::mpsc::sync_channel(1);
        let (work_tx, work_rx) = std::sync::mpsc::sync_channel(workers);
        let failed = tx.clone();
        std::thread::scope(|scope| {
            scope.spawn(move || read_chunks(input, batch_size, cols_tx, work_tx, failed));
            let Ok(cols) = cols_rx.recv() else { return };
            let cols = std::sync::Arc::new(cols);
            let work = std::sync::Arc::new(std::sync::Mutex::new(work_rx));
            for _ in 0..workers {
                let (cols, work, region, vault, out) = (
                    cols.clone(),
                    work.clone(),
                    default_region.clone(),
                    vault.clone(),
                    tx.clone(),
                );
                scope.spawn(move || parse_chunks(&cols, &work, &region, &vault, copy_format, out));
            }
            drop(tx);
        });
    });
    (rx, handle)
}

/// Imports `input` into list `list`, calling `progress` after every batch.
pub async fn import_csv(
    store: &Store,
    vault: &NumberVault,
    list: ContactListId,
    input: impl Read + Send + 'static,
    bytes_total: Option<u64>,
    progress: impl FnMut(ImportProgress) + Send,
) -> Result<ImportReport, ContactError> {
    let import_id = begin_import(store, list, bytes_total).await?;
    run_import(store, vault, list, import_id, input, bytes_total, progress).await
}

/// Records a new import of `list` in the `running` state and returns its id, so that a
/// caller can report the id before the rows are read.
pub async fn begin_import(
    store: &Store,
    list: ContactListId,
    bytes_total: Option<u64>,
) -> Result<i64, ContactError> {
    let mut conn = store.pool().acquire().await?;
    begin_import_in(&mut conn, list, bytes_total).await
}

/// [`begin_import`] on the caller's connection or transaction.
pub async fn begin_import_in(
    conn: &mut sqlx::AnyConnection,
    list: ContactListId,
    bytes_total: Option<u64>,
) -> Result<i64, ContactError> {
    super::list_region_in(conn, list).await?;
    let (import_id,): (i64,) = sqlx::query_as(
        "INSERT INTO contact_imports (list_id, state, bytes_total, started_at) \
         VALUES ($1, 'running', $2, $3) RETURNING id",
    )
    .bind(list.0)
    .bind(bytes_total.map(|b| b as i64))
    .bind(UnixMillis::now().0)
    .fetch_one(&mut *conn)
    .await?;
    Ok(import_id)
}

/// Runs an import begun with [`begin_import`] to its end, calling `progress` after every
/// batch, and marks it `done` or `failed`.
pub async fn run_import(
    store: &Store,
    vault: &NumberVault,
    list: ContactListId,
    import_id: i64,
    input: impl Read + Send + 'static,
    bytes_total: Option<u64>,
    mut progress: impl FnMut(ImportProgress) + Send,
) -> Result<ImportReport, ContactError> {
    let default_region = super::list_region(store, list).await?;
    let copy_format = store.backend() == callgate_common::store::Backend::Postgres;
    let (mut rx, parser) = spawn_pipeline(
        input,
        batch_rows(store.backend()),
        default_region,
        vault.clone(),
        copy_format,
        import_workers(),
    );
    let mut report = ImportReport {
        import_id,
        ..ImportReport::default()
    };
    let mut failure = None;
    // On PostgreSQL the rows go in through COPY on a connection of their own.
    let mut copy = match store.backend() {
        callgate_common::store::Backend::Postgres => match CopyWriter::connect(store).await {
            Ok(w) => Some(w),
            Err(e) => {
                failure = Some(e);
                None
            }
        },
        callgate_common::store::Backend::Sqlite => None,
    };
    // Batches come back from the workers in any order; each is written in file order so
    // that progress only grows and the first reported errors are the first lines.
    let mut waiting = std::collections::BTreeMap::new();
    let mut next_seq = 0;
    'recv: while let Some(msg) = rx.recv().await {
        match msg {
            Ok(b) => {
                waiting.insert(b.seq, b);
            }
            Err(e) => {
                failure = failure.or(Some(e));
                break;
            }
        }
        if failure.is_some() {
            break;
        }
        while let Some(batch) = waiting.remove(&next_seq) {
            next_seq += 1;
            let written = match copy.as_mut() {
                Some(w) => w.write(list, import_id, &batch, &mut report).await,
                None => write_batch(store, list, import_id, &batch, &mut report).await,
            };
            if let Err(e) = written {
                failure = Some(e);
                break 'recv;
            }
            progress(ImportProgress {
                bytes_read: batch.bytes_read,
                bytes_total,
                rows_seen: report.rows_seen,
            });
        }
    }
    drop(rx);
    let _ = parser.await;
    if let Some(w) = copy {
        w.close().await;
    }
    let (state, text) = match &failure {
        None => ("done", None),
        Some(e) => ("failed", Some(e.to_string())),
    };
    sqlx::query(
        "UPDATE contact_imports SET state = $1, failure = $2, finished_at = $3 WHERE id = $4",
    )
    .bind(state)
    .bind(text)
    .bind(UnixMillis::now().0)
    .bind(import_id)
    .execute(store.pool())
    .await?;
    match failure {
        Some(e) => Err(e),
        None => {
            tracing::info!(
                import_id,
                list = list.0,
                rows = report.rows_seen,
                imported = report.imported,
                duplicates = report.duplicates,
                rejected = report.rejected,
                "contact import finished"
            );
            Ok(report)
        }
    }
}

async fn write_batch(
    store: &Store,
    list: ContactListId,
    import_id: i64,
    batch: &Batch,
    report: &mut ImportReport,
) -> Result<(), ContactError> {
    let now = UnixMillis::now().0;
    let mut tx = store.pool().begin().await?;
    let mut created = 0u64;
    if !batch.contacts.is_empty() {
        let mut sql = String::from(
            "INSERT INTO contacts (number_index, number_cipher, number_masked, time_zones, \
             external_id, urgency, customer_value, fields, tags, created_at) VALUES ",
        );
        push_placeholders(&mut sql, batch.contacts.len(), 10, 0);
        sql.push_str(" ON CONFLICT (number_index) DO NOTHING");
        let mut q = sqlx::query(&sql);
        for c in &batch.contacts {
            q = q
                .bind(c.index.clone())
                .bind(c.cipher.clone())
                .bind(c.masked.clone())
                .bind(c.zones.clone())
                .bind(c.external_id.clone())
                .bind(c.urgency)
                .bind(c.customer_value)
                .bind(c.fields.clone())
                .bind(c.tags.clone())
                .bind(now);
        }
        created = q.execute(&mut *tx).await?.rows_affected();

        let mut sql = String::from(
            "INSERT INTO contact_list_members (list_id, contact_id) \
             SELECT $1, id FROM contacts WHERE number_index IN (",
        );
        for i in 0..batch.contacts.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", i + 2));
        }
        sql.push_str(") ON CONFLICT DO NOTHING");
        let mut q = sqlx::query(&sql).bind(list.0);
        for c in &batch.contacts {
            q = q.bind(c.index.clone());
        }
        q.execute(&mut *tx).await?;
    }
    insert_errors(&mut tx, import_id, &batch.errors).await?;
    report.rows_seen += batch.rows_seen;
    report.imported += created;
    report.duplicates += batch.good_rows() - created;
    report.rejected += batch.errors.len() as u64;
    for e in &batch.errors {
        if report.errors.len() < REPORTED_ERRORS {
            report.errors.push(e.clone());
        }
    }
    sqlx::query(
        "UPDATE contact_imports SET bytes_read = $1, rows_seen = $2, rows_imported = $3, \
         rows_duplicate = $4, rows_rejected = $5 WHERE id = $6",
    )
    .bind(batch.bytes_read as i64)
    .bind(report.rows_seen as i64)
    .bind(report.imported as i64)
    .bind(report.duplicates as i64)
    .bind(report.rejected as i64)
    .bind(import_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Stores refused rows, a few hundred per statement.
async fn insert_errors<DB>(
    tx: &mut sqlx::Transaction<'_, DB>,
    import_id: i64,
    errors: &[RowError],
) -> Result<(), ContactError>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    for chunk in errors.chunks(300) {
        let mut sql =
            String::from("INSERT INTO contact_import_errors (import_id, line, reason) VALUES ");
        push_placeholders(&mut sql, chunk.len(), 3, 0);
        sql.push_str(" ON CONFLICT DO NOTHING");
        let mut q = sqlx::query::<DB>(&sql);
        for e in chunk {
            q = q.bind(import_id).bind(e.line as i64).bind(e.reason.clone());
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// The PostgreSQL writer: each batch is `COPY`ed into a temporary staging table, then
/// moved into `contacts` (`ON CONFLICT DO NOTHING`: dedupe across imports and within the
/// batch) and the list membership with two set-based statements, all in one transaction.
/// The membership looks each staged number up through the unique index (a correlated
/// subquery): a join lets the planner, blind to the unanalysed staging table, scan all of
/// `contacts` per batch, which made the import quadratic.
struct CopyWriter {
    pool: sqlx::PgPool,
}

impl CopyWriter {
    async fn connect(store: &Store) -> Result<CopyWriter, ContactError> {
        let url = store.pool().connect_options().database_url.clone();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(url.as_str())
            .await?;
        sqlx::query(
            "CREATE TEMP TABLE IF NOT EXISTS contact_import_stage (number_index BYTEA NOT NULL, \
             number_cipher BYTEA NOT NULL, number_masked TEXT NOT NULL, time_zones TEXT NOT NULL, \
             external_id TEXT, urgency DOUBLE PRECISION NOT NULL, \
             customer_value DOUBLE PRECISION NOT NULL, fields TEXT NOT NULL, tags TEXT NOT NULL) \
             ON COMMIT DELETE ROWS",
        )
        .execute(&pool)
        .await?;
        Ok(CopyWriter { pool })
    }

    async fn write(
        &mut self,
        list: ContactListId,
        import_id: i64,
        batch: &Batch,
        report: &mut ImportReport,
    ) -> Result<(), ContactError> {
        let now = UnixMillis::now().0;
        let mut tx = self.pool.begin().await?;
        let mut created = 0u64;
        if batch.staged > 0 {
            let mut copy = tx
                .copy_in_raw(
                    "COPY contact_import_stage (number_index, number_cipher, number_masked, \
                     time_zones, external_id, urgency, customer_value, fields, tags) FROM STDIN",
                )
                .await?;
            copy.send(batch.copy.as_slice()).await?;
            copy.finish().await?;
            // New contacts join the list straight from `RETURNING`; only a batch with
            // duplicates (of earlier rows or imports) looks its numbers up again.
            created = sqlx::query(
                "WITH created AS (INSERT INTO contacts (number_index, number_cipher, \
                 number_masked, time_zones, external_id, urgency, customer_value, fields, tags, \
                 created_at) SELECT number_index, number_cipher, number_masked, time_zones, \
                 external_id, urgency, customer_value, fields, tags, $1 \
                 FROM contact_import_stage ON CONFLICT (number_index) DO NOTHING RETURNING id) \
                 INSERT INTO contact_list_members (list_id, contact_id) \
                 SELECT $2, id FROM created",
            )
            .bind(now)
            .bind(list.0)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if created < batch.staged {
                sqlx::query(
                    "INSERT INTO contact_list_members (list_id, contact_id) \
                     SELECT $1, (SELECT c.id FROM contacts c \
                     WHERE c.number_index = s.number_index) \
                     FROM contact_import_stage s ON CONFLICT DO NOTHING",
                )
                .bind(list.0)
                .execute(&mut *tx)
                .await?;
            }
        }
        insert_errors(&mut tx, import_id, &batch.errors).await?;
        report.rows_seen += batch.rows_seen;
        report.imported += created;
        report.duplicates += batch.good_rows() - created;
        report.rejected += batch.errors.len() as u64;
        for e in &batch.errors {
            if report.errors.len() < REPORTED_ERRORS {
                report.errors.push(e.clone());
            }
        }
        sqlx::query(
            "UPDATE contact_imports SET bytes_read = $1, rows_seen = $2, rows_imported = $3, \
             rows_duplicate = $4, rows_rejected = $5 WHERE id = $6",
        )
        .bind(batch.bytes_read as i64)
        .bind(report.rows_seen as i64)
        .bind(report.imported as i64)
        .bind(report.duplicates as i64)
        .bind(report.rejected as i64)
        .bind(import_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn close(self) {
        self.pool.close().await;
    }
}

/// Rows in `COPY ... FROM STDIN` text format: tab-separated, `\N` for NULL, bytea as
/// `\\x` + hex, and backslash, tab, newline and carriage return escaped in text.
fn copy_text(rows: &[ParsedContact]) -> Vec<u8> {
    use std::fmt::Write;
    fn text(out: &mut String, v: &str) {
        for ch in v.chars() {
            match ch {
                '\\' => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c => out.push(c),
            }
        }
    }
    fn bytea(out: &mut String, v: &[u8]) {
        out.push_str("\\\\x");
        for b in v {
            let _ = write!(out, "{b:02x}");
        }
    }
    let mut out = String::with_capacity(rows.len() * 256);
    for r in rows {
        bytea(&mut out, &r.index);
        out.push('\t');
        bytea(&mut out, &r.cipher);
        out.push('\t');
        text(&mut out, &r.masked);
        out.push('\t');
        text(&mut out, &r.zones);
        out.push('\t');
        match &r.external_id {
            Some(x) => text(&mut out, x),
            None => out.push_str("\\N"),
        }
        let _ = write!(out, "\t{:?}\t{:?}\t", r.urgency, r.customer_value);
        text(&mut out, &r.fields);
        out.push('\t');
        text(&mut out, &r.tags);
        out.push('\n');
    }
    out.into_bytes()
}

/// Appends `rows` groups of `width` numbered placeholders, starting after `offset`.
pub(crate) fn push_placeholders(sql: &mut String, rows: usize, width: usize, offset: usize) {
    use std::fmt::Write;
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..width {
            if c > 0 {
                sql.push_str(", ");
            }
            let _ = write!(sql, "${}", offset + r * width + c + 1);
        }
        sql.push(')');
    }
}

impl From<VaultError> for ContactError {
    fn from(e: VaultError) -> Self {
        ContactError::Vault(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(header: &str) -> Result<Columns, ContactError> {
        Columns::of(&csv::StringRecord::from(
            header.split(',').collect::<Vec<_>>(),
        ))
    }

    fn row(cells: &str) -> csv::StringRecord {
        csv::StringRecord::from(cells.split(',').collect::<Vec<_>>())
    }

    #[test]
    fn a_file_without_a_phone_column_is_refused_by_name() {
        let err = cols("name,email").unwrap_err().to_string();
        assert!(err.contains("phone"), "{err}");
        assert_eq!(cols("\u{feff}Phone,x").unwrap().phone, 0);
    }

    #[test]
    fn rows_normalise_to_e164_with_zone_tags_and_custom_fields() {
        let v = NumberVault::from_master_key(&[9; 32]);
        let c = cols("name,phone,tags,timezone,plan").unwrap();
        let p = parse_row(&c, &row("Ann,(415) 555-0134,VIP; late ,,gold"), "US", &v).unwrap();
        assert_eq!(v.open(&p.cipher).unwrap().e164(), "+14155550134");
        assert_eq!(p.tags, ",vip,late,");
        assert!(p.zones.contains("America/New_York") && p.zones.contains("Pacific/Honolulu"));
        assert_eq!(p.fields, r#"{"name":"Ann","plan":"gold"}"#);
        assert!(!p.masked.contains("5550134"));
        let p = parse_row(&c, &row("Bo,020 7946 0958,,Europe/London,"), "GB", &v).unwrap();
        assert_eq!(p.zones, "Europe/London");
    }

    #[test]
    fn bad_rows_say_which_column_and_why() {
        let v = NumberVault::from_master_key(&[9; 32]);
        let c = cols("phone,timezone,urgency").unwrap();
        let err = |cells| parse_row(&c, &row(cells), "US", &v).unwrap_err();
        assert!(err(",,").contains("`phone` is empty"));
        assert!(err("12,,").contains("`phone`"));
        assert!(err("+14155550134,Mars/Base,").contains("Mars/Base"));
        assert!(err("+14155550134,,lots").contains("urgency"));
        assert!(err("+14155550134,,NaN").contains("urgency"));
        let e = err("+2125550134,,");
        assert!(e.contains("`phone`") || e.contains("+212"), "{e}");
    }

    #[test]
    fn placeholders_are_numbered_in_order() {
        let mut s = String::new();
        push_placeholders(&mut s, 2, 3, 1);
        assert_eq!(s, "($2, $3, $4), ($5, $6, $7)");
    }
}
