//! Streaming CSV import of contacts.
//!
//! A reader thread reads the CSV one record at a time and hands chunks of [`batch_rows`]
//! records to parser threads, which normalise, encrypt and encode each row; the async side
//! writes each batch in one transaction, [`writers`] batches at once (two on PostgreSQL,
//! through binary `COPY`). Memory stays constant whatever the file's size: at most a few
//! batches are in flight. Bad rows are reported with their line number and
//! reason (stored in `contact_import_errors`) while the good rows import. Duplicates —
//! within the file or against earlier imports — are counted, and the existing contact joins
//! the list.
//!
//! Columns (header row required, names case-insensitive): `phone` (or `number`,
//! `phone_number`) required; `timezone` (`time_zone`, `tz`), `external_id`
//! (`customer_id`), `tags` (separated by `;` or `|`), `urgency`, `customer_value`
//! optional; every other column becomes a custom field usable as a script variable.

use super::vault::{NumberVault, Sealer, VaultError};
use super::{ContactError, ContactListId};
use crate::store::Store;
use callgate_common::compliance::{is_known_zone, zones_of_calling_code};
use callgate_common::phone::PhoneNumber;
use callgate_common::time::UnixMillis;
use serde::Serialize;
use std::io::Read;

/// Rows per transaction, per engine. PostgreSQL takes each batch into the tables by binary
/// `COPY` (no bind-parameter limit; larger batches, fewer commits); through sqlx,
/// SQLite's cost per bound parameter grows with the statement's parameter count, so it
/// gets small statements.
pub fn batch_rows(backend: callgate_common::store::Backend) -> usize {
    match backend {
        callgate_common::store::Backend::Postgres => 10_000,
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
    /// The same rows encoded for binary `COPY` (PostgreSQL's writer picks the new ones);
    /// `contacts` is then empty.
    encoded: EncodedRows,
    errors: Vec<RowError>,
    rows_seen: u64,
    bytes_read: u64,
}

impl Batch {
    fn good_rows(&self) -> u64 {
        (self.contacts.len() + self.encoded.rows.len()) as u64
    }
}

/// A batch's good rows encoded for binary `COPY` into `contacts`, in file order: each
/// row's fields from `number_index` to `tags` (the writer frames them with the row's id
/// before and `created_at` after), one after another in `bytes`.
#[derive(Debug, Default)]
struct EncodedRows {
    bytes: Vec<u8>,
    rows: Vec<EncodedRow>,
}

/// One encoded row: its blind index (for dedupe) and where its fields are in `bytes`.
#[derive(Debug)]
struct EncodedRow {
    index: Vec<u8>,
    fields: std::ops::Range<usize>,
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
    sealer: &mut Sealer,
) -> Result<ParsedContact, String> {
    if rec.as_slice().contains('\0') {
        return Err("a field holds a NUL character, which the database cannot store".into());
    }
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
    let (index, cipher) = sealer.index_and_seal(&number).map_err(|e| e.to_string())?;
    Ok(ParsedContact {
        index,
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
    let mut sealer = vault.sealer();
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
                RawRow::Record(line, rec) => {
                    match parse_row(cols, &rec, default_region, &mut sealer) {
                        Ok(c) => batch.contacts.push(c),
                        Err(reason) => batch.errors.push(RowError { line, reason }),
                    }
                }
                RawRow::Refused(e) => batch.errors.push(e),
            }
        }
        if copy_format {
            batch.encoded = encode_rows(std::mem::take(&mut batch.contacts));
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
///
/// Batches are written by [`writers`] concurrent transactions (two on PostgreSQL, each on a
/// connection of its own; one on SQLite, which has one writer anyway). Each transaction
/// stores its rows, its refused rows and its share of the import's counters together, so
/// the counters always match what is stored, whatever fails. Results are taken in file
/// order: progress only grows and the first reported errors are the first lines.
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
    let backend = store.backend();
    let copy_format = backend == callgate_common::store::Backend::Postgres;
    let (mut rx, parser) = spawn_pipeline(
        input,
        batch_rows(backend),
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
    let sink = match backend {
        callgate_common::store::Backend::Postgres => {
            match CopyWriter::connect(store, writers(backend)).await {
                Ok(w) => Some(Sink::Postgres(w)),
                Err(e) => {
                    failure = Some(e);
                    None
                }
            }
        }
        callgate_common::store::Backend::Sqlite => Some(Sink::Sqlite(store.clone())),
    };
    if let Some(sink) = &sink {
        let limit = writers(backend);
        // Parsed batches not yet handed to a writer, and written batches not yet counted,
        // both by position in the file.
        let mut parsed = std::collections::BTreeMap::new();
        let mut written = std::collections::BTreeMap::new();
        let (mut next_write, mut next_count) = (0u64, 0u64);
        let mut in_flight = tokio::task::JoinSet::new();
        let mut parsing = true;
        // Each batch reserves its new contacts' ids after the batch before it has: this
        // keeps them in file order across writers.
        let mut copied_before: Option<tokio::sync::oneshot::Receiver<()>> = None;
        while failure.is_none() && (parsing || !parsed.is_empty() || !in_flight.is_empty()) {
            while in_flight.len() < limit {
                let Some(batch) = parsed.remove(&next_write) else {
                    break;
                };
                next_write += 1;
                let (copied, next) = tokio::sync::oneshot::channel();
                let turn = CopyTurn {
                    after: copied_before.replace(next),
                    copied,
                };
                in_flight.spawn(sink.clone().write(list, import_id, batch, turn));
            }
            tokio::select! {
                // Backpressure: parsed batches wait only while the next one to write is
                // still being parsed (at most a few, one per parser) or a writer is free.
                msg = rx.recv(), if parsing
                    && (parsed.len() <= limit || !parsed.contains_key(&next_write)) => match msg {
                    Some(Ok(b)) => {
                        parsed.insert(b.seq, b);
                    }
                    Some(Err(e)) => failure = Some(e),
                    None => parsing = false,
                },
                done = in_flight.join_next(), if !in_flight.is_empty() => match done {
                    Some(Ok(Ok(w))) => {
                        written.insert(w.seq, w);
                    }
                    Some(Ok(Err(e))) => failure = Some(e),
                    Some(Err(e)) => failure = Some(ContactError::ImportStopped(format!(
                        "a writer: {e}"
                    ))),
                    None => {}
                },
                // Parsing ended with a batch missing (a parser stopped): never report the
                // import done without its rows.
                else => failure = Some(ContactError::ImportStopped(format!(
                    "a parser, before batch {next_write}"
                ))),
            }
            while let Some(w) = written.remove(&next_count) {
                next_count += 1;
                let bytes_read = w.bytes_read;
                w.count_into(&mut report);
                progress(ImportProgress {
                    bytes_read,
                    bytes_total,
                    rows_seen: report.rows_seen,
                });
            }
        }
        // A failed import still lets the other writers finish: what they commit is
        // counted in `contact_imports` by their own transactions.
        while in_flight.join_next().await.is_some() {}
    }
    drop(rx);
    let _ = parser.await;
    if let Some(Sink::Postgres(w)) = sink {
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

/// Concurrent writer transactions per import: PostgreSQL takes two batches at once (on
/// two connections, so both cores work on the database side); SQLite has one writer.
pub fn writers(backend: callgate_common::store::Backend) -> usize {
    match backend {
        callgate_common::store::Backend::Postgres => 2,
        callgate_common::store::Backend::Sqlite => 1,
    }
}

/// Where the batches go.
#[derive(Clone)]
enum Sink {
    Sqlite(Store),
    Postgres(CopyWriter),
}

/// A batch's place in the order of id reservations: it waits for `after` (the previous
/// batch reserved its ids, or gave up), then signals `copied`.
struct CopyTurn {
    after: Option<tokio::sync::oneshot::Receiver<()>>,
    copied: tokio::sync::oneshot::Sender<()>,
}

/// What one committed batch did, for the report.
struct Written {
    seq: u64,
    bytes_read: u64,
    rows_seen: u64,
    good_rows: u64,
    created: u64,
    errors: Vec<RowError>,
}

impl Written {
    fn of(batch: Batch, created: u64) -> Written {
        Written {
            seq: batch.seq,
            bytes_read: batch.bytes_read,
            rows_seen: batch.rows_seen,
            good_rows: batch.good_rows(),
            created,
            errors: batch.errors,
        }
    }

    fn count_into(self, report: &mut ImportReport) {
        report.rows_seen += self.rows_seen;
        report.imported += self.created;
        report.duplicates += self.good_rows - self.created;
        report.rejected += self.errors.len() as u64;
        let room = REPORTED_ERRORS.saturating_sub(report.errors.len());
        report.errors.extend(self.errors.into_iter().take(room));
    }
}

impl Sink {
    async fn write(
        self,
        list: ContactListId,
        import_id: i64,
        batch: Batch,
        turn: CopyTurn,
    ) -> Result<Written, ContactError> {
        let created = match &self {
            Sink::Sqlite(store) => write_batch(store, list, import_id, &batch).await?,
            Sink::Postgres(w) => w.write(list, import_id, &batch, turn).await?,
        };
        Ok(Written::of(batch, created))
    }
}

/// Adds one batch's figures to the import's counters, inside the batch's transaction.
/// Increments, not totals: concurrent writers each add their own share.
fn count_batch_sql(backend: callgate_common::store::Backend) -> &'static str {
    match backend {
        callgate_common::store::Backend::Postgres => {
            "UPDATE contact_imports SET bytes_read = GREATEST(bytes_read, $1), \
             rows_seen = rows_seen + $2, rows_imported = rows_imported + $3, \
             rows_duplicate = rows_duplicate + $4, rows_rejected = rows_rejected + $5 \
             WHERE id = $6"
        }
        callgate_common::store::Backend::Sqlite => {
            "UPDATE contact_imports SET bytes_read = max(bytes_read, $1), \
             rows_seen = rows_seen + $2, rows_imported = rows_imported + $3, \
             rows_duplicate = rows_duplicate + $4, rows_rejected = rows_rejected + $5 \
             WHERE id = $6"
        }
    }
}

async fn count_batch<DB>(
    tx: &mut sqlx::Transaction<'_, DB>,
    backend: callgate_common::store::Backend,
    import_id: i64,
    batch: &Batch,
    created: u64,
) -> Result<(), ContactError>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    sqlx::query::<DB>(count_batch_sql(backend))
        .bind(batch.bytes_read as i64)
        .bind(batch.rows_seen as i64)
        .bind(created as i64)
        .bind((batch.good_rows() - created) as i64)
        .bind(batch.errors.len() as i64)
        .bind(import_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The SQLite writer: multi-row `INSERT ... ON CONFLICT DO NOTHING`, then the list
/// membership by blind index, in one transaction. Returns the contacts created.
async fn write_batch(
    store: &Store,
    list: ContactListId,
    import_id: i64,
    batch: &Batch,
) -> Result<u64, ContactError> {
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
    count_batch(&mut tx, store.backend(), import_id, batch, created).await?;
    tx.commit().await?;
    Ok(created)
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

/// Times a PostgreSQL batch is tried again after meeting another writer on a new number
/// (each try sees more of what the others committed, so one more rarely helps).
const RACE_RETRIES: u32 = 8;

/// The PostgreSQL writer: new contacts and their list membership go straight into the
/// tables by binary `COPY`, with no staging table and no `ON CONFLICT` per row.
///
/// Per batch, in one transaction: the batch's distinct numbers are looked up through the
/// unique blind index; the ones found are duplicates and join the list; the rest get ids
/// reserved from `contacts_id_seq` (batch after batch, in file order, so ids follow the
/// file across writers) and are copied into `contacts` in blind-index order, their
/// membership into `contact_list_members`.
///
/// Two writers run at once, and both may find a number new that appears in both their
/// batches. The unique index then makes the second one wait for the first to commit and
/// fail (`unique_violation`); because both copy in blind-index order they never hold
/// each other's entries (if PostgreSQL still finds a deadlock, it fails one of them).
/// The failed batch rolls back and is tried again: its lookup now finds the number, and it
/// keeps the ids it reserved, so the file order holds.
#[derive(Clone)]
struct CopyWriter {
    pool: sqlx::PgPool,
}

/// Did this failure come from meeting another writer (worth trying the batch again)?
fn met_another_writer(e: &ContactError) -> bool {
    match e {
        ContactError::Db(sqlx::Error::Database(db)) => {
            matches!(db.code().as_deref(), Some("23505") | Some("40P01"))
        }
        _ => false,
    }
}

impl CopyWriter {
    async fn connect(store: &Store, writers: usize) -> Result<CopyWriter, ContactError> {
        let url = store.pool().connect_options().database_url.clone();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(writers as u32)
            .connect(url.as_str())
            .await?;
        Ok(CopyWriter { pool })
    }

    /// Writes one batch in one transaction, trying again when it meets another writer;
    /// returns the contacts it created.
    async fn write(
        &self,
        list: ContactListId,
        import_id: i64,
        batch: &Batch,
        turn: CopyTurn,
    ) -> Result<u64, ContactError> {
        let rows = &batch.encoded.rows;
        let mut seen = std::collections::HashSet::with_capacity(rows.len());
        let distinct: Vec<usize> = (0..rows.len())
            .filter(|&i| seen.insert(rows[i].index.as_slice()))
            .collect();
        drop(seen);
        let mut turn = Some(turn);
        let mut ids = Vec::new();
        let mut tries = 0;
        loop {
            let tried = self
                .try_write(list, import_id, batch, &distinct, &mut turn, &mut ids)
                .await;
            match tried {
                Err(e) if tries < RACE_RETRIES && met_another_writer(&e) => {
                    tries += 1;
                    tracing::debug!(
                        import_id,
                        seq = batch.seq,
                        tries,
                        "batch met another writer: {e}"
                    );
                }
                done => return done,
            }
        }
    }

    /// One try of [`CopyWriter::write`]. `turn` is taken by the first try, which reserves
    /// the ids into `ids`; a later try uses (a prefix of) them.
    async fn try_write(
        &self,
        list: ContactListId,
        import_id: i64,
        batch: &Batch,
        distinct: &[usize],
        turn: &mut Option<CopyTurn>,
        ids: &mut Vec<i64>,
    ) -> Result<u64, ContactError> {
        let rows = &batch.encoded.rows;
        let now = UnixMillis::now().0;
        let mut tx = self.pool.begin().await?;
        let mut created = 0u64;
        if !distinct.is_empty() {
            let wanted: Vec<&[u8]> = distinct.iter().map(|&i| rows[i].index.as_slice()).collect();
            let known: Vec<(i64, Vec<u8>)> = sqlx::query_as(
                "SELECT id, number_index FROM contacts WHERE number_index = ANY($1)",
            )
            .bind(&wanted)
            .fetch_all(&mut *tx)
            .await?;
            let known_indexes: std::collections::HashSet<&[u8]> =
                known.iter().map(|(_, index)| index.as_slice()).collect();
            let fresh: Vec<usize> = distinct
                .iter()
                .copied()
                .filter(|&i| !known_indexes.contains(rows[i].index.as_slice()))
                .collect();
            if let Some(CopyTurn { after, copied }) = turn.take() {
                if let Some(after) = after {
                    // An error means the previous writer failed: the import is failing anyway.
                    let _ = after.await;
                }
                if !fresh.is_empty() {
                    *ids = sqlx::query_scalar(
                        "SELECT nextval('contacts_id_seq') FROM generate_series(1, $1)",
                    )
                    .bind(fresh.len() as i64)
                    .fetch_all(&mut *tx)
                    .await?;
                    ids.sort_unstable();
                }
                let _ = copied.send(());
            }
            if ids.len() < fresh.len() {
                // A retry finds at least as many numbers known as the first try did.
                return Err(ContactError::ImportStopped(format!(
                    "batch {}: {} new numbers but {} ids reserved",
                    batch.seq,
                    fresh.len(),
                    ids.len()
                )));
            }
            if !fresh.is_empty() {
                // The i-th new number in file order takes the i-th id.
                let mut picks: Vec<(i64, usize)> = ids.iter().copied().zip(fresh).collect();
                let new_ids: Vec<i64> = picks.iter().map(|(id, _)| *id).collect();
                picks.sort_unstable_by(|a, b| rows[a.1].index.cmp(&rows[b.1].index));
                let mut copy = tx
                    .copy_in_raw(
                        "COPY contacts (id, number_index, number_cipher, number_masked, \
                         time_zones, external_id, urgency, customer_value, fields, tags, \
                         created_at) FROM STDIN WITH (FORMAT binary)",
                    )
                    .await?;
                copy.send(contacts_copy(&batch.encoded, &picks, now).as_slice())
                    .await?;
                copy.finish().await?;
                let mut copy = tx
                    .copy_in_raw(
                        "COPY contact_list_members (list_id, contact_id) \
                         FROM STDIN WITH (FORMAT binary)",
                    )
                    .await?;
                copy.send(members_copy(list, &new_ids).as_slice()).await?;
                copy.finish().await?;
                created = new_ids.len() as u64;
            }
            if !known.is_empty() {
                let mut joining: Vec<i64> = known.iter().map(|(id, _)| *id).collect();
                joining.sort_unstable();
                sqlx::query(
                    "INSERT INTO contact_list_members (list_id, contact_id) \
                     SELECT $1, id FROM unnest($2::BIGINT[]) AS joining(id) ORDER BY id \
                     ON CONFLICT DO NOTHING",
                )
                .bind(list.0)
                .bind(&joining)
                .execute(&mut *tx)
                .await?;
            }
        }
        // A batch of refused rows only copies nothing: the next one need not wait for it.
        drop(turn.take());
        insert_errors(&mut tx, import_id, &batch.errors).await?;
        count_batch(
            &mut tx,
            callgate_common::store::Backend::Postgres,
            import_id,
            batch,
            created,
        )
        .await?;
        tx.commit().await?;
        Ok(created)
    }

    async fn close(self) {
        self.pool.close().await;
    }
}

/// The signature, flags and header extension length that open a binary `COPY` stream.
const COPY_BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The field count of -1 that ends a binary `COPY` stream.
const COPY_BINARY_TRAILER: &[u8] = &[0xff, 0xff];

/// Encodes rows for binary `COPY`: each field as its byte length (-1 for NULL) and its
/// bytes — bytea and text as they are, `double precision` as 8 big-endian bytes. Nothing is
/// escaped or hex-encoded.
fn encode_rows(rows: Vec<ParsedContact>) -> EncodedRows {
    fn field(out: &mut Vec<u8>, v: &[u8]) {
        out.extend_from_slice(&(v.len() as i32).to_be_bytes());
        out.extend_from_slice(v);
    }
    fn float(out: &mut Vec<u8>, v: f64) {
        out.extend_from_slice(&8i32.to_be_bytes());
        out.extend_from_slice(&v.to_bits().to_be_bytes());
    }
    // About 250 bytes a row: sized once, so the buffer is never copied to grow.
    let mut bytes = Vec::with_capacity(rows.len() * 320);
    let mut encoded = Vec::with_capacity(rows.len());
    for r in rows {
        let start = bytes.len();
        field(&mut bytes, &r.index);
        field(&mut bytes, &r.cipher);
        field(&mut bytes, r.masked.as_bytes());
        field(&mut bytes, r.zones.as_bytes());
        match &r.external_id {
            Some(x) => field(&mut bytes, x.as_bytes()),
            None => bytes.extend_from_slice(&(-1i32).to_be_bytes()),
        }
        float(&mut bytes, r.urgency);
        float(&mut bytes, r.customer_value);
        field(&mut bytes, r.fields.as_bytes());
        field(&mut bytes, r.tags.as_bytes());
        encoded.push(EncodedRow {
            index: r.index,
            fields: start..bytes.len(),
        });
    }
    EncodedRows {
        bytes,
        rows: encoded,
    }
}

/// The binary `COPY` stream of `contacts` rows: for each `(id, row)` of `picks`, in that
/// order, the id, the row's encoded fields and `created_at`.
fn contacts_copy(encoded: &EncodedRows, picks: &[(i64, usize)], created_at: i64) -> Vec<u8> {
    let size: usize = picks
        .iter()
        .map(|&(_, r)| encoded.rows[r].fields.len() + 26)
        .sum();
    let mut out = Vec::with_capacity(COPY_BINARY_HEADER.len() + size + COPY_BINARY_TRAILER.len());
    out.extend_from_slice(COPY_BINARY_HEADER);
    for &(id, r) in picks {
        out.extend_from_slice(&11i16.to_be_bytes());
        out.extend_from_slice(&8i32.to_be_bytes());
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&encoded.bytes[encoded.rows[r].fields.clone()]);
        out.extend_from_slice(&8i32.to_be_bytes());
        out.extend_from_slice(&created_at.to_be_bytes());
    }
    out.extend_from_slice(COPY_BINARY_TRAILER);
    out
}

/// The binary `COPY` stream of `contact_list_members` rows: `list` with each contact.
fn members_copy(list: ContactListId, contacts: &[i64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        COPY_BINARY_HEADER.len() + contacts.len() * 26 + COPY_BINARY_TRAILER.len(),
    );
    out.extend_from_slice(COPY_BINARY_HEADER);
    for id in contacts {
        out.extend_from_slice(&2i16.to_be_bytes());
        out.extend_from_slice(&8i32.to_be_bytes());
        out.extend_from_slice(&list.0.to_be_bytes());
        out.extend_from_slice(&8i32.to_be_bytes());
        out.extend_from_slice(&id.to_be_bytes());
    }
    out.extend_from_slice(COPY_BINARY_TRAILER);
    out
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
        let p = parse_row(
            &c,
            &row("Ann,(415) 555-0134,VIP; late ,,gold"),
            "US",
            &mut v.sealer(),
        )
        .unwrap();
        assert_eq!(v.open(&p.cipher).unwrap().e164(), "+14155550134");
        assert_eq!(p.tags, ",vip,late,");
        assert!(p.zones.contains("America/New_York") && p.zones.contains("Pacific/Honolulu"));
        assert_eq!(p.fields, r#"{"name":"Ann","plan":"gold"}"#);
        assert!(!p.masked.contains("5550134"));
        let p = parse_row(
            &c,
            &row("Bo,020 7946 0958,,Europe/London,"),
            "GB",
            &mut v.sealer(),
        )
        .unwrap();
        assert_eq!(p.zones, "Europe/London");
    }

    #[test]
    fn bad_rows_say_which_column_and_why() {
        let v = NumberVault::from_master_key(&[9; 32]);
        let c = cols("phone,timezone,urgency").unwrap();
        let err = |cells| parse_row(&c, &row(cells), "US", &mut v.sealer()).unwrap_err();
        assert!(err(",,").contains("`phone` is empty"));
        assert!(err("12,,").contains("`phone`"));
        assert!(err("+14155550134,Mars/Base,").contains("Mars/Base"));
        assert!(err("+14155550134,,lots").contains("urgency"));
        assert!(err("+14155550134,,NaN").contains("urgency"));
        let e = err("+2125550134,,");
        assert!(e.contains("`phone`") || e.contains("+212"), "{e}");
    }

    #[test]
    fn a_nul_character_makes_the_row_bad_instead_of_failing_the_batch() {
        let v = NumberVault::from_master_key(&[9; 32]);
        let c = cols("phone,notes").unwrap();
        let err = parse_row(&c, &row("+14155550134,a\0b"), "US", &mut v.sealer()).unwrap_err();
        assert!(err.contains("NUL"), "{err}");
        assert!(parse_row(&c, &row("+14155550134,ab"), "US", &mut v.sealer()).is_ok());
    }

    /// Reads a binary `COPY` stream back into rows of fields (`None` for NULL).
    fn read_copy(out: &[u8], width: usize) -> Vec<Vec<Option<Vec<u8>>>> {
        assert!(out.starts_with(COPY_BINARY_HEADER));
        let mut at = COPY_BINARY_HEADER.len();
        let mut take = |n: usize| {
            let s = &out[at..at + n];
            at += n;
            s.to_vec()
        };
        let mut rows = Vec::new();
        loop {
            let count = i16::from_be_bytes(take(2).try_into().unwrap());
            if count == -1 {
                break;
            }
            assert_eq!(count as usize, width);
            let mut fields = Vec::new();
            for _ in 0..width {
                let len = i32::from_be_bytes(take(4).try_into().unwrap());
                fields.push((len >= 0).then(|| take(len as usize)));
            }
            rows.push(fields);
        }
        assert_eq!(at, out.len(), "nothing follows the trailer");
        rows
    }

    #[test]
    fn the_binary_copy_stream_frames_every_field_with_its_length() {
        let v = NumberVault::from_master_key(&[9; 32]);
        let c = cols("phone,external_id,urgency").unwrap();
        let with_id = parse_row(&c, &row("+14155550134,x1,2.5"), "US", &mut v.sealer()).unwrap();
        let without = parse_row(&c, &row("+14155550135,,"), "US", &mut v.sealer()).unwrap();
        let encoded = encode_rows(vec![with_id.clone(), without.clone()]);
        assert_eq!(encoded.rows[1].index, without.index);
        // Picked in the opposite order, with ids of the writer's choosing.
        let rows = read_copy(&contacts_copy(&encoded, &[(70, 1), (42, 0)], 1234), 11);
        assert_eq!(rows.len(), 2);
        let (first, second) = (&rows[1], &rows[0]);
        assert_eq!(first[0].as_deref(), Some(42i64.to_be_bytes().as_slice()));
        assert_eq!(second[0].as_deref(), Some(70i64.to_be_bytes().as_slice()));
        assert_eq!(first[1].as_deref(), Some(with_id.index.as_slice()));
        assert_eq!(first[2].as_deref(), Some(with_id.cipher.as_slice()));
        assert_eq!(second[2].as_deref(), Some(without.cipher.as_slice()));
        assert_eq!(first[5].as_deref(), Some(b"x1".as_slice()));
        assert_eq!(second[5], None, "an empty external id is NULL");
        assert_eq!(first[6].as_deref(), Some(2.5f64.to_be_bytes().as_slice()));
        assert_eq!(first[8].as_deref(), Some(with_id.fields.as_bytes()));
        assert_eq!(first[10].as_deref(), Some(1234i64.to_be_bytes().as_slice()));
    }

    #[test]
    fn the_membership_copy_stream_pairs_the_list_with_each_contact() {
        let rows = read_copy(&members_copy(ContactListId(7), &[3, 9]), 2);
        let ids: Vec<(i64, i64)> = rows
            .iter()
            .map(|r| {
                let n = |f: &Option<Vec<u8>>| {
                    i64::from_be_bytes(f.clone().unwrap().try_into().unwrap())
                };
                (n(&r[0]), n(&r[1]))
            })
            .collect();
        assert_eq!(ids, [(7, 3), (7, 9)]);
        assert!(read_copy(&members_copy(ContactListId(7), &[]), 2).is_empty());
    }

    #[test]
    fn placeholders_are_numbered_in_order() {
        let mut s = String::new();
        push_placeholders(&mut s, 2, 3, 1);
        assert_eq!(s, "($2, $3, $4), ($5, $6, $7)");
    }
}
