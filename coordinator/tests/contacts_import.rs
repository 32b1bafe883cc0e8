//! CSV import on both backends: good rows import while bad rows are reported by line,
//! duplicates are refused within and across imports, numbers are encrypted at rest and
//! shown masked unless revealed.

mod common;

use callgate_coordinator::contacts::vault::NumberVault;
use callgate_coordinator::contacts::{self, import, ContactError, ContactListId};
use common::{fresh_store, BACKENDS};
use std::io::Cursor;

const FILE: &str = "phone,name,timezone,tags,urgency\n\
(415) 555-0134,Ann,,vip,5\n\
not a number,Bob,,,\n\
+44 20 7946 0958,Cy,Europe/London,,1\n\
415-555-0134,Ann again,,,\n\
+1 212 555 0100,Di,Mars/Base,,\n\
+1 212 555 0101,\"Ed, Jr.\",America/New_York,late|vip,2\n";

#[tokio::test]
async fn good_rows_import_while_bad_rows_are_reported_by_line_on_both_backends() {
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let vault = NumberVault::from_master_key(&[5; 32]);
        let list = contacts::create_list(&t.store, "spring", "us")
            .await
            .unwrap();
        let mut seen = Vec::new();
        let report = import::import_csv(
            &t.store,
            &vault,
            ContactListId(list.id),
            Cursor::new(FILE.as_bytes().to_vec()),
            Some(FILE.len() as u64),
            |p| seen.push(p),
        )
        .await
        .unwrap();
        assert_eq!(report.rows_seen, 6, "{backend:?}");
        assert_eq!(report.imported, 3, "{backend:?}");
        assert_eq!(report.duplicates, 1, "{backend:?}: line 5 repeats line 2");
        assert_eq!(report.rejected, 2);
        assert_eq!(report.errors[0].line, 3);
        assert!(report.errors[0].reason.contains("phone"));
        assert_eq!(report.errors[1].line, 6);
        assert!(report.errors[1].reason.contains("Mars/Base"));
        assert_eq!(seen.last().unwrap().bytes_read, FILE.len() as u64);

        let status = contacts::import_status(&t.store, report.import_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.state, "done");
        assert_eq!(status.rows_imported, 3);
        assert_eq!(status.errors.len(), 2);

        // Stored encrypted: the clear digits appear in no column.
        let rows: Vec<(Vec<u8>, String)> =
            sqlx::query_as("SELECT number_cipher, number_masked FROM contacts")
                .fetch_all(t.store.pool())
                .await
                .unwrap();
        for (cipher, masked) in &rows {
            assert!(!cipher.windows(7).any(|w| w == b"5550134"));
            assert!(!masked.contains("5550134"), "{masked}");
        }
        let page = contacts::page_contacts(&t.store, &vault, list.id, 0, 10, false)
            .await
            .unwrap();
        assert_eq!(page.len(), 3);
        assert!(page.iter().all(|c| c.number.contains('*')));
        let ed = page.iter().find(|c| c.fields["name"] == "Ed, Jr.").unwrap();
        assert_eq!(ed.tags, vec!["late", "vip"]);
        assert_eq!(ed.time_zones, vec!["America/New_York"]);
        let revealed = contacts::get_contact(&t.store, &vault, ed.id, true)
            .await
            .unwrap();
        assert_eq!(revealed.number, "+12125550101");
        let paged = contacts::page_contacts(&t.store, &vault, list.id, page[0].id, 10, false)
            .await
            .unwrap();
        assert_eq!(paged.len(), 2, "pagination continues after the cursor");
    }
}

#[tokio::test]
async fn a_second_import_dedupes_against_the_first_and_the_contact_joins_both_lists() {
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let vault = NumberVault::from_master_key(&[6; 32]);
        let a = contacts::create_list(&t.store, "a", "GB").await.unwrap();
        let b = contacts::create_list(&t.store, "b", "GB").await.unwrap();
        let csv = "phone\n020 7946 0958\n+442079460958\n07700 900123\n";
        let first = import::import_csv(
            &t.store,
            &vault,
            ContactListId(a.id),
            Cursor::new(csv),
            None,
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!((first.imported, first.duplicates), (2, 1), "{backend:?}");
        let second = import::import_csv(
            &t.store,
            &vault,
            ContactListId(b.id),
            Cursor::new(csv),
            None,
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!((second.imported, second.duplicates), (0, 3), "{backend:?}");
        assert_eq!(
            contacts::get_list(&t.store, b.id).await.unwrap().contacts,
            2
        );
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM contacts")
            .fetch_one(t.store.pool())
            .await
            .unwrap();
        assert_eq!(n, 2);
    }
}

#[tokio::test]
async fn a_file_without_a_phone_column_fails_the_import_and_stores_nothing() {
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let vault = NumberVault::from_master_key(&[6; 32]);
        let a = contacts::create_list(&t.store, "a", "US").await.unwrap();
        let err = import::import_csv(
            &t.store,
            &vault,
            ContactListId(a.id),
            Cursor::new("name\nx\n"),
            None,
            |_| {},
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ContactError::BadCsv(_)), "{err}");
        assert!(err.to_string().contains("phone"));
        let (state,): (String,) = sqlx::query_as("SELECT state FROM contact_imports")
            .fetch_one(t.store.pool())
            .await
            .unwrap();
        assert_eq!(state, "failed");
        assert!(matches!(
            contacts::create_list(&t.store, "a", "US").await,
            Err(ContactError::DuplicateList(_))
        ));
        assert!(matches!(
            contacts::create_list(&t.store, "z", "QQ").await,
            Err(ContactError::BadRegion(_))
        ));
    }
}

/// The PostgreSQL path goes through `COPY` text format: tabs, newlines, backslashes,
/// quotes and non-ASCII in fields, tags and external ids must arrive unchanged, and a
/// number repeated inside one batch is still one contact.
#[tokio::test]
async fn awkward_characters_survive_the_import_unchanged_on_both_backends() {
    let file = "phone,external_id,notes,tags\n\
+14155550140,\"a\\b\tc\",\"line one\nline two\r\nend \\N\",x;\u{e9}t\u{e9}\n\
+14155550141,,\"quote \"\" and\ttab\",\n\
+14155550140,dup,again,\n";
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let vault = NumberVault::from_master_key(&[5; 32]);
        let list = contacts::create_list(&t.store, "odd", "us").await.unwrap();
        let report = import::import_csv(
            &t.store,
            &vault,
            ContactListId(list.id),
            Cursor::new(file.as_bytes().to_vec()),
            None,
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(
            (report.imported, report.duplicates, report.rejected),
            (2, 1, 0),
            "{backend:?}: {:?}",
            report.errors
        );
        let rows: Vec<(Option<String>, String, String)> =
            sqlx::query_as("SELECT external_id, fields, tags FROM contacts ORDER BY id")
                .fetch_all(t.store.pool())
                .await
                .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].0.as_deref(), Some("a\\b\tc"), "{backend:?}");
        let fields: serde_json::Value = serde_json::from_str(&rows[0].1).unwrap();
        assert_eq!(
            fields["notes"], "line one\nline two\r\nend \\N",
            "{backend:?}"
        );
        assert_eq!(rows[0].2, ",x,\u{e9}t\u{e9},");
        assert_eq!(rows[1].0, None);
        let fields: serde_json::Value = serde_json::from_str(&rows[1].1).unwrap();
        assert_eq!(fields["notes"], "quote \" and\ttab");
        let (members,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM contact_list_members WHERE list_id = $1")
                .bind(list.id)
                .fetch_one(t.store.pool())
                .await
                .unwrap();
        assert_eq!(members, 2);
        // The numbers decrypt to what the file said.
        let (cipher,): (Vec<u8>,) =
            sqlx::query_as("SELECT number_cipher FROM contacts ORDER BY id LIMIT 1")
                .fetch_one(t.store.pool())
                .await
                .unwrap();
        assert_eq!(vault.open(&cipher).unwrap().e164(), "+14155550140");
    }
}

/// Blank lines (which the `csv` crate skips without counting) do not shift the line
/// numbers of the rows reported after them.
#[tokio::test]
async fn rows_after_blank_lines_are_reported_on_their_real_line_on_both_backends() {
    const WITH_BLANKS: &str = "phone,name\n\
+14155550134,Ann\n\
\n\
not a number,Bob\n\
\r\n\
\n\
+1 212 555 0100,\"Cy\nSmith\"\n\
\n\
\n\
also bad,Di\n";
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let vault = NumberVault::from_master_key(&[5; 32]);
        let list = contacts::create_list(&t.store, "blanks", "us")
            .await
            .unwrap();
        let report = import::import_csv(
            &t.store,
            &vault,
            ContactListId(list.id),
            Cursor::new(WITH_BLANKS.as_bytes().to_vec()),
            Some(WITH_BLANKS.len() as u64),
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(report.imported, 2, "{backend:?}");
        let lines: Vec<u64> = report.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [4, 11], "{backend:?}: {:?}", report.errors);
    }
}

/// A file of several batches, where later batches repeat numbers of earlier ones (on
/// PostgreSQL two writers take neighbouring batches at once, so the same number reaches
/// both transactions, in opposite orders): every number is stored once, the counts and
/// the stored counters agree, bad rows are reported in line order, progress only grows,
/// and the new contacts' ids follow the file's order.
#[tokio::test]
async fn batches_written_side_by_side_store_each_number_once_in_file_order_on_both_backends() {
    // Three PostgreSQL batches, 240 SQLite ones.
    const UNIQUE: usize = 12_000;
    // Rows 0..12000 are new numbers; rows 12000..24000 repeat them in reverse order; every
    // 997th row is not a number.
    let number = |i: usize| format!("+1415{:07}", 2_000_000 + i);
    let mut file = String::from("phone,name\n");
    let mut bad_lines = Vec::new();
    let mut unique_in_order = Vec::new();
    let mut known = std::collections::HashSet::new();
    for row in 0..2 * UNIQUE {
        let line = row as u64 + 2;
        if row % 997 == 0 {
            file.push_str(&format!("bad {row},x\n"));
            bad_lines.push(line);
            continue;
        }
        let n = if row < UNIQUE {
            number(row)
        } else {
            number(2 * UNIQUE - 1 - row)
        };
        if row < UNIQUE || (2 * UNIQUE - 1 - row) % 997 == 0 {
            // The repeat of a number whose first row was refused is its first good row.
            if known.insert(n.clone()) {
                unique_in_order.push(n.clone());
            }
        }
        file.push_str(&format!("{n},row {row}\n"));
    }
    let good = 2 * UNIQUE as u64 - bad_lines.len() as u64;
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let vault = NumberVault::from_master_key(&[8; 32]);
        let list = contacts::create_list(&t.store, "big", "us").await.unwrap();
        let mut seen = Vec::new();
        let report = import::import_csv(
            &t.store,
            &vault,
            ContactListId(list.id),
            Cursor::new(file.clone().into_bytes()),
            Some(file.len() as u64),
            |p| seen.push(p),
        )
        .await
        .unwrap();
        assert_eq!(report.rows_seen, 2 * UNIQUE as u64, "{backend:?}");
        assert_eq!(report.imported, unique_in_order.len() as u64, "{backend:?}");
        assert_eq!(report.duplicates, good - report.imported, "{backend:?}");
        assert_eq!(report.rejected, bad_lines.len() as u64, "{backend:?}");
        let lines: Vec<u64> = report.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, bad_lines, "{backend:?}: first lines first");
        assert!(
            seen.windows(2)
                .all(|w| w[0].bytes_read <= w[1].bytes_read && w[0].rows_seen <= w[1].rows_seen),
            "{backend:?}: progress only grows"
        );
        assert_eq!(seen.last().unwrap().bytes_read, file.len() as u64);

        let status = contacts::import_status(&t.store, report.import_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                status.state.as_str(),
                status.rows_seen,
                status.rows_imported,
                status.rows_duplicate,
                status.rows_rejected,
                status.bytes_read
            ),
            (
                "done",
                report.rows_seen as i64,
                report.imported as i64,
                report.duplicates as i64,
                report.rejected as i64,
                file.len() as i64
            ),
            "{backend:?}: the stored counters add up to the report"
        );
        assert_eq!(
            contacts::get_list(&t.store, list.id)
                .await
                .unwrap()
                .contacts,
            unique_in_order.len() as i64,
            "{backend:?}"
        );
        let stored: Vec<(Vec<u8>,)> =
            sqlx::query_as("SELECT number_cipher FROM contacts ORDER BY id")
                .fetch_all(t.store.pool())
                .await
                .unwrap();
        let in_id_order: Vec<String> = stored
            .iter()
            .map(|(c,)| vault.open(c).unwrap().e164())
            .collect();
        let first_difference = in_id_order
            .iter()
            .zip(&unique_in_order)
            .position(|(a, b)| a != b);
        assert_eq!(
            (in_id_order.len(), first_difference),
            (unique_in_order.len(), None),
            "{backend:?}: ids follow the file"
        );
    }
}

/// A file that cannot be read to its end (here: the read fails after ~30,000 rows) fails
/// the import, and whatever batches were committed before are counted exactly: the
/// stored counters equal the stored contacts, memberships and refused rows.
#[tokio::test]
async fn a_read_failure_midway_fails_the_import_with_counters_matching_what_was_stored() {
    struct FailsAfter {
        data: Cursor<Vec<u8>>,
        limit: u64,
    }
    impl std::io::Read for FailsAfter {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.data.position() >= self.limit {
                return Err(std::io::Error::other("the disk went away"));
            }
            let room = (self.limit - self.data.position()).min(buf.len() as u64) as usize;
            self.data.read(&mut buf[..room])
        }
    }
    let mut file = String::from("phone,name\n");
    for row in 0..40_000usize {
        if row % 1000 == 7 {
            file.push_str(&format!("bad {row},x\n"));
        } else {
            file.push_str(&format!("+1415{:07},row {row}\n", 3_000_000 + row % 35_000));
        }
    }
    let limit = file.len() as u64 * 3 / 4;
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let vault = NumberVault::from_master_key(&[4; 32]);
        let list = contacts::create_list(&t.store, "cut", "us").await.unwrap();
        let import_id = import::begin_import(&t.store, ContactListId(list.id), None)
            .await
            .unwrap();
        let err = import::run_import(
            &t.store,
            &vault,
            ContactListId(list.id),
            import_id,
            FailsAfter {
                data: Cursor::new(file.clone().into_bytes()),
                limit,
            },
            None,
            |_| {},
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string().contains("disk went away"),
            "{backend:?}: {err}"
        );
        let status = contacts::import_status(&t.store, import_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.state, "failed", "{backend:?}");
        let count = |sql: &'static str| {
            let pool = t.store.pool().clone();
            async move {
                let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&pool).await.unwrap();
                n
            }
        };
        let contacts_stored = count("SELECT COUNT(*) FROM contacts").await;
        let members = count("SELECT COUNT(*) FROM contact_list_members").await;
        let refused = count("SELECT COUNT(*) FROM contact_import_errors").await;
        assert_eq!(status.rows_imported, contacts_stored, "{backend:?}");
        assert_eq!(
            members, contacts_stored,
            "{backend:?}: no repeats were reached"
        );
        assert_eq!(status.rows_rejected, refused, "{backend:?}");
        assert_eq!(
            status.rows_seen,
            status.rows_imported + status.rows_duplicate + status.rows_rejected,
            "{backend:?}"
        );
        assert!(
            (status.rows_seen as u64) < 40_000,
            "{backend:?}: rows after the failure are not counted"
        );
    }
}

#[tokio::test]
async fn a_number_another_transaction_is_inserting_waits_for_it_and_is_stored_once() {
    use callgate_common::phone::PhoneNumber;
    use callgate_common::store::Backend;
    // PostgreSQL only: the import writes new numbers without `ON CONFLICT`, so meeting an
    // uncommitted insert of the same number makes its batch fail and be tried again.
    let contested = "+14155550150";
    let mut file = String::from("phone,name\n");
    for i in 0..30 {
        file.push_str(&format!("+1415555{:04},row {i}\n", 140 + i));
    }
    for other_commits in [true, false] {
        let t = fresh_store(Backend::Postgres).await;
        let vault = NumberVault::from_master_key(&[6; 32]);
        let list = contacts::create_list(&t.store, "race", "us").await.unwrap();
        let number = PhoneNumber::parse(contested, None).unwrap();
        let mut other = t.store.pool().begin().await.unwrap();
        let (other_id,): (i64,) = sqlx::query_as(
            "INSERT INTO contacts (number_index, number_cipher, number_masked, time_zones, \
             created_at) VALUES ($1, $2, $3, 'America/Los_Angeles', 0) RETURNING id",
        )
        .bind(vault.blind_index(&number))
        .bind(vault.seal(&number).unwrap())
        .bind(number.masked())
        .fetch_one(&mut *other)
        .await
        .unwrap();

        let import = tokio::spawn({
            let (store, vault, file) = (t.store.clone(), vault.clone(), file.clone());
            async move {
                import::import_csv(
                    &store,
                    &vault,
                    ContactListId(list.id),
                    Cursor::new(file.into_bytes()),
                    None,
                    |_| {},
                )
                .await
            }
        });
        // The import's batch waits on the other transaction's entry in the unique index.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (waiting,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(t.store.pool())
            .await
            .unwrap();
            if waiting > 0 {
                break;
            }
            assert!(
                !import.is_finished(),
                "the import did not wait for the other insert"
            );
            assert!(
                std::time::Instant::now() < deadline,
                "no writer ever waited"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if other_commits {
            other.commit().await.unwrap();
        } else {
            other.rollback().await.unwrap();
        }
        let report = import.await.unwrap().expect("the import succeeds");
        assert_eq!(report.rows_seen, 30);
        assert_eq!(report.rejected, 0);
        let expect_new = if other_commits { 29 } else { 30 };
        assert_eq!(
            report.imported, expect_new,
            "other commits: {other_commits}"
        );
        assert_eq!(report.duplicates, 30 - expect_new);

        let status = contacts::import_status(&t.store, report.import_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.state, "done");
        assert_eq!(status.rows_imported, expect_new as i64);
        assert_eq!(status.rows_duplicate, 30 - expect_new as i64);

        let (stored,): (i64,) = sqlx::query_as("SELECT count(*) FROM contacts")
            .fetch_one(t.store.pool())
            .await
            .unwrap();
        assert_eq!(stored, 30, "each number once");
        let members: Vec<(i64,)> = sqlx::query_as(
            "SELECT contact_id FROM contact_list_members WHERE list_id = $1 ORDER BY contact_id",
        )
        .bind(list.id)
        .fetch_all(t.store.pool())
        .await
        .unwrap();
        assert_eq!(members.len(), 30, "every row's contact is on the list");
        assert_eq!(
            members.iter().any(|(id,)| *id == other_id),
            other_commits,
            "the contested number's contact is the other transaction's when it committed"
        );
        // The import's own contacts keep the file's order in their ids.
        let page = contacts::page_contacts(&t.store, &vault, list.id, 0, 100, false)
            .await
            .unwrap();
        let rows: Vec<&str> = page
            .iter()
            .filter(|c| c.id != other_id)
            .map(|c| c.fields["name"].as_str().unwrap())
            .collect();
        let mut in_file_order = rows.clone();
        in_file_order.sort_by_key(|r| r[4..].parse::<u32>().unwrap());
        assert_eq!(rows, in_file_order);
    }
}
