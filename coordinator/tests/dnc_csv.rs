//! Bulk do-not-call import from CSV on both backends: good rows are stored (with their
//! campaign, expiry and reason, or the request's defaults) while every bad row is reported
//! with its line number and reason; a file without a phone column is refused whole.

mod common;

use callgate_coordinator::compliance::dnc_csv::{import_dnc_csv, DncDefaults};
use callgate_coordinator::compliance::{self, PolicyError};
use callgate_coordinator::contacts::vault::NumberVault;
use common::{fresh_store, BACKENDS};
use std::io::Cursor;

const FILE: &str = "phone,campaign_id,expires_at,reason\n\
+14155550134,,,asked\n\
(212) 555-0100,,1900000000000,\n\
not a number,,,\n\
+442079460958,abc,,\n\
+14155550199,,,\"multi\nline\"\n\
,,,\n";

#[tokio::test]
async fn good_dnc_rows_are_stored_while_bad_rows_are_reported_by_line_on_both_backends() {
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let vault = NumberVault::from_master_key(&[3; 32]);
        let report = import_dnc_csv(
            &t.store,
            &vault,
            Cursor::new(FILE.as_bytes().to_vec()),
            DncDefaults {
                default_region: Some("US".into()),
                reason: "bulk".into(),
                ..DncDefaults::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(
            (report.rows_seen, report.added, report.rejected),
            (6, 3, 3),
            "{backend:?}: {report:?}"
        );
        let lines: Vec<u64> = report.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![4, 5, 8], "{backend:?}: {:?}", report.errors);
        assert!(report.errors[0].reason.contains("phone"));
        assert!(report.errors[1].reason.contains("campaign_id"));
        assert!(report.errors[2].reason.contains("empty"));

        let stored = compliance::page_dnc(&t.store, 0, 10).await.unwrap();
        assert_eq!(stored.len(), 3, "{backend:?}");
        let reasons: Vec<&str> = stored.iter().map(|d| d.reason.as_str()).collect();
        assert_eq!(reasons, vec!["asked", "bulk", "multi\nline"]);
        assert_eq!(stored[1].expires_at, Some(1_900_000_000_000));
        assert!(stored.iter().all(|d| d.number.contains('*')), "masked");
        // The national number was normalised: its blind index is the E.164 one.
        let idx = vault.blind_index(
            &callgate_common::phone::PhoneNumber::parse("+12125550100", None).unwrap(),
        );
        let mut conn = t.store.pool().acquire().await.unwrap();
        assert_eq!(compliance::dnc_of(&mut conn, &idx).await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn a_dnc_file_without_a_phone_column_is_refused_and_stores_nothing() {
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let vault = NumberVault::from_master_key(&[3; 32]);
        let err = import_dnc_csv(
            &t.store,
            &vault,
            Cursor::new(b"name,reason\nann,x\n".to_vec()),
            DncDefaults::default(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, PolicyError::Invalid { reason, .. } if reason.contains("phone")),
            "{err}"
        );
        assert!(compliance::page_dnc(&t.store, 0, 10)
            .await
            .unwrap()
            .is_empty());
    }
}

/// Blank lines (which the `csv` crate skips without counting) do not shift the line
/// numbers of the rows reported after them.
#[tokio::test]
async fn dnc_rows_after_blank_lines_are_reported_on_their_real_line() {
    const WITH_BLANKS: &str = "phone,reason\n\
+14155550134,asked\n\
\n\
not a number,x\n\
\r\n\
\n\
+14155550135,\"two\nlines\"\n\
\n\
\n\
also bad,y\n";
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let vault = NumberVault::from_master_key(&[3; 32]);
        let report = import_dnc_csv(
            &t.store,
            &vault,
            Cursor::new(WITH_BLANKS.as_bytes().to_vec()),
            DncDefaults {
                default_region: Some("US".into()),
                reason: "bulk".into(),
                ..DncDefaults::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(report.added, 2, "{backend:?}: {report:?}");
        let lines: Vec<u64> = report.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![4, 11], "{backend:?}: {:?}", report.errors);
    }
}
