//! Contacts and contact lists: streaming CSV import ([`import`]), numbers encrypted at rest
//! with a blind index ([`vault`]), and the queries the API and the scheduler use.
//!
//! Owns the `contact_lists`, `contacts`, `contact_list_members`, `contact_imports` and
//! `contact_import_errors` tables. Must not: hold a phone number in clear anywhere but in
//! memory on its way in or out, or log one unmasked.

pub mod csv_lines;
pub mod import;
pub mod vault;

use crate::store::Store;
use callgate_common::phone::PhoneNumber;
use callgate_common::time::UnixMillis;
use serde::Serialize;
use vault::{NumberVault, VaultError};

/// A contact list, as the database numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ContactListId(pub i64);

/// Why a contact operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContactError {
    /// The list does not exist.
    #[error("contact list {0} does not exist")]
    NoSuchList(i64),
    /// The contact does not exist.
    #[error("contact {0} does not exist")]
    NoSuchContact(i64),
    /// A list of that name exists already.
    #[error("a contact list named {0:?} exists already")]
    DuplicateList(String),
    /// The default region is not one the phone parser knows.
    #[error("default_region {0:?} is not a known region")]
    BadRegion(String),
    /// The CSV as a whole is unusable (no header, no phone column, unreadable).
    #[error("CSV refused: {0}")]
    BadCsv(String),
    /// A number could not be encrypted or decrypted.
    #[error(transparent)]
    Vault(VaultError),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// One of an import's own threads or tasks stopped before the end (a bug, not the
    /// file's fault); the import is marked failed, the batches it had committed stay.
    #[error("the import stopped: {0} ended early")]
    ImportStopped(String),
}

/// A contact list with its size.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContactList {
    pub id: i64,
    pub name: String,
    pub default_region: String,
    pub contacts: i64,
    pub created_at: i64,
}

/// A contact as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContactView {
    pub id: i64,
    /// Masked unless the caller may see numbers.
    pub number: String,
    pub time_zones: Vec<String>,
    pub external_id: Option<String>,
    pub urgency: f64,
    pub customer_value: f64,
    pub fields: serde_json::Value,
    pub tags: Vec<String>,
}

/// Creates a list whose national-format numbers are read as `default_region`'s.
pub async fn create_list(
    store: &Store,
    name: &str,
    default_region: &str,
) -> Result<ContactList, ContactError> {
    let mut conn = store.pool().acquire().await?;
    create_list_in(&mut conn, name, default_region).await
}

/// [`create_list`] on the caller's connection or transaction.
pub async fn create_list_in(
    conn: &mut sqlx::AnyConnection,
    name: &str,
    default_region: &str,
) -> Result<ContactList, ContactError> {
    let region = default_region.to_ascii_uppercase();
    // A region is known when a national number parses with it.
    if matches!(
        PhoneNumber::parse("5550134", Some(&region)),
        Err(callgate_common::phone::PhoneError::UnknownRegion(_))
    ) {
        return Err(ContactError::BadRegion(default_region.to_string()));
    }
    let now = UnixMillis::now().0;
    let row: Result<(i64,), sqlx::Error> = sqlx::query_as(
        "INSERT INTO contact_lists (name, default_region, created_at) VALUES ($1, $2, $3) \
         RETURNING id",
    )
    .bind(name)
    .bind(&region)
    .bind(now)
    .fetch_one(&mut *conn)
    .await;
    match row {
        Ok((id,)) => Ok(ContactList {
            id,
            name: name.to_string(),
            default_region: region,
            contacts: 0,
            created_at: now,
        }),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(ContactError::DuplicateList(name.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

const LIST_COLUMNS: &str = "SELECT l.id, l.name, l.default_region, \
     (SELECT COUNT(*) FROM contact_list_members m WHERE m.list_id = l.id), l.created_at \
     FROM contact_lists l";

type ListRow = (i64, String, String, i64, i64);

fn list_of(r: ListRow) -> ContactList {
    ContactList {
        id: r.0,
        name: r.1,
        default_region: r.2,
        contacts: r.3,
        created_at: r.4,
    }
}

/// One list.
pub async fn get_list(store: &Store, id: i64) -> Result<ContactList, ContactError> {
    let row: Option<ListRow> = sqlx::query_as(&format!("{LIST_COLUMNS} WHERE l.id = $1"))
        .bind(id)
        .fetch_optional(store.pool())
        .await?;
    row.map(list_of).ok_or(ContactError::NoSuchList(id))
}

/// A page of lists, by id, after `after`.
pub async fn page_lists(
    store: &Store,
    after: i64,
    limit: i64,
) -> Result<Vec<ContactList>, ContactError> {
    let rows: Vec<ListRow> = sqlx::query_as(&format!(
        "{LIST_COLUMNS} WHERE l.id > $1 ORDER BY l.id LIMIT $2"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(store.pool())
    .await?;
    Ok(rows.into_iter().map(list_of).collect())
}

pub(crate) async fn list_region(
    store: &Store,
    list: ContactListId,
) -> Result<String, ContactError> {
    let mut conn = store.pool().acquire().await?;
    list_region_in(&mut conn, list).await
}

pub(crate) async fn list_region_in(
    conn: &mut sqlx::AnyConnection,
    list: ContactListId,
) -> Result<String, ContactError> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT default_region FROM contact_lists WHERE id = $1")
            .bind(list.0)
            .fetch_optional(&mut *conn)
            .await?;
    row.map(|r| r.0).ok_or(ContactError::NoSuchList(list.0))
}

type ContactRow = (
    i64,
    Vec<u8>,
    String,
    String,
    Option<String>,
    f64,
    f64,
    String,
    String,
);

const CONTACT_COLUMNS: &str = "SELECT c.id, c.number_cipher, c.number_masked, c.time_zones, \
     c.external_id, c.urgency, c.customer_value, c.fields, c.tags FROM contacts c";

fn contact_of(
    r: ContactRow,
    vault: &NumberVault,
    reveal: bool,
) -> Result<ContactView, ContactError> {
    let number = if reveal {
        vault.open(&r.1)?.e164()
    } else {
        r.2
    };
    Ok(ContactView {
        id: r.0,
        number,
        time_zones: r.3.split(',').map(str::to_string).collect(),
        external_id: r.4,
        urgency: r.5,
        customer_value: r.6,
        fields: serde_json::from_str(&r.7).unwrap_or(serde_json::Value::Null),
        tags: r
            .8
            .split(',')
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

/// One contact; the number in full only when `reveal`.
pub async fn get_contact(
    store: &Store,
    vault: &NumberVault,
    id: i64,
    reveal: bool,
) -> Result<ContactView, ContactError> {
    let row: Option<ContactRow> = sqlx::query_as(&format!("{CONTACT_COLUMNS} WHERE c.id = $1"))
        .bind(id)
        .fetch_optional(store.pool())
        .await?;
    contact_of(row.ok_or(ContactError::NoSuchContact(id))?, vault, reveal)
}

/// A page of a list's contacts, by id, after `after`.
pub async fn page_contacts(
    store: &Store,
    vault: &NumberVault,
    list: i64,
    after: i64,
    limit: i64,
    reveal: bool,
) -> Result<Vec<ContactView>, ContactError> {
    get_list(store, list).await?;
    let rows: Vec<ContactRow> = sqlx::query_as(&format!(
        "{CONTACT_COLUMNS} JOIN contact_list_members m ON m.contact_id = c.id \
         WHERE m.list_id = $1 AND c.id > $2 ORDER BY c.id LIMIT $3"
    ))
    .bind(list)
    .bind(after)
    .bind(limit)
    .fetch_all(store.pool())
    .await?;
    rows.into_iter()
        .map(|r| contact_of(r, vault, reveal))
        .collect()
}

/// The state of one import, for progress in the API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImportStatus {
    pub id: i64,
    pub list_id: i64,
    pub state: String,
    pub bytes_total: Option<i64>,
    pub bytes_read: i64,
    pub rows_seen: i64,
    pub rows_imported: i64,
    pub rows_duplicate: i64,
    pub rows_rejected: i64,
    pub failure: Option<String>,
    /// The first 100 refused rows.
    pub errors: Vec<import::RowError>,
}

/// An import's progress and its first refused rows.
pub async fn import_status(store: &Store, id: i64) -> Result<Option<ImportStatus>, ContactError> {
    type Row = (
        i64,
        i64,
        String,
        Option<i64>,
        i64,
        i64,
        i64,
        i64,
        i64,
        Option<String>,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT id, list_id, state, bytes_total, bytes_read, rows_seen, rows_imported, \
         rows_duplicate, rows_rejected, failure FROM contact_imports WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(store.pool())
    .await?;
    let Some(r) = row else { return Ok(None) };
    let errors: Vec<(i64, String)> = sqlx::query_as(
        "SELECT line, reason FROM contact_import_errors WHERE import_id = $1 ORDER BY line LIMIT 100",
    )
    .bind(id)
    .fetch_all(store.pool())
    .await?;
    Ok(Some(ImportStatus {
        id: r.0,
        list_id: r.1,
        state: r.2,
        bytes_total: r.3,
        bytes_read: r.4,
        rows_seen: r.5,
        rows_imported: r.6,
        rows_duplicate: r.7,
        rows_rejected: r.8,
        failure: r.9,
        errors: errors
            .into_iter()
            .map(|(line, reason)| import::RowError {
                line: line as u64,
                reason,
            })
            .collect(),
    }))
}

/// The list named `name`, creating it with `default_region` when missing.
pub async fn list_by_name_or_create(
    store: &Store,
    name: &str,
    default_region: &str,
) -> Result<ContactList, ContactError> {
    let found: Option<(i64,)> = sqlx::query_as("SELECT id FROM contact_lists WHERE name = $1")
        .bind(name)
        .fetch_optional(store.pool())
        .await?;
    match found {
        Some((id,)) => get_list(store, id).await,
        None => create_list(store, name, default_region).await,
    }
}
