//! Per-appliance trunk limits and how they are split into pacing grants.
//!
//! An appliance's trunks carry every campaign it dials, so its limits (attempts in flight,
//! attempts started per minute) are set once per appliance (`PUT
//! /api/v1/appliances/{name}/limits`; unset: the `[sync.dialer]` defaults) and divided
//! between the campaigns it dials at the moment: evenly, the remainder to the campaigns
//! first by id, so the grants of one box never add up to more than its trunks.
//!
//! Owns the `appliance_limits` table. Must not: send grants (the scheduler does).

use crate::store::Store;
use callgate_common::time::UnixMillis;
use serde::{Deserialize, Serialize};

/// Most attempts in flight / per minute one appliance may be given.
pub const MAX_LIMIT: u32 = 100_000;

/// One appliance's trunk limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplianceLimits {
    /// Attempts in flight at once, all campaigns together.
    pub max_concurrent: u32,
    /// Attempts started per minute, all campaigns together.
    pub max_attempts_per_minute: u32,
}

impl ApplianceLimits {
    /// The first field out of range, with why.
    pub fn invalid_field(&self) -> Option<(&'static str, String)> {
        let check = |name: &'static str, v: u32| {
            (v > MAX_LIMIT).then(|| (name, format!("must be from 0 to {MAX_LIMIT}")))
        };
        check("max_concurrent", self.max_concurrent)
            .or_else(|| check("max_attempts_per_minute", self.max_attempts_per_minute))
    }

    /// The part of these limits for the `index`-th (from 0, by campaign id) of `campaigns`
    /// campaigns the appliance dials: the parts add up to the whole.
    pub fn part(&self, index: usize, campaigns: usize) -> ApplianceLimits {
        let n = campaigns.max(1) as u64;
        let i = index as u64;
        let split = |total: u32| {
            let t = u64::from(total);
            (t / n + u64::from(i < t % n)) as u32
        };
        ApplianceLimits {
            max_concurrent: split(self.max_concurrent),
            max_attempts_per_minute: split(self.max_attempts_per_minute),
        }
    }
}

/// The limits set for `appliance`, if any.
pub async fn get(store: &Store, appliance: &str) -> Result<Option<ApplianceLimits>, sqlx::Error> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT max_concurrent, max_attempts_per_minute FROM appliance_limits \
         WHERE appliance = $1",
    )
    .bind(appliance)
    .fetch_optional(store.pool())
    .await?;
    Ok(row.map(|(c, m)| ApplianceLimits {
        max_concurrent: c.clamp(0, i64::from(MAX_LIMIT)) as u32,
        max_attempts_per_minute: m.clamp(0, i64::from(MAX_LIMIT)) as u32,
    }))
}

/// Sets `appliance`'s limits (the next scheduler pass re-grants).
pub async fn set(
    store: &Store,
    appliance: &str,
    limits: ApplianceLimits,
    now: UnixMillis,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO appliance_limits (appliance, max_concurrent, max_attempts_per_minute, \
         updated_at) VALUES ($1, $2, $3, $4) ON CONFLICT (appliance) DO UPDATE SET \
         max_concurrent = excluded.max_concurrent, \
         max_attempts_per_minute = excluded.max_attempts_per_minute, \
         updated_at = excluded.updated_at",
    )
    .bind(appliance)
    .bind(i64::from(limits.max_concurrent))
    .bind(i64::from(limits.max_attempts_per_minute))
    .bind(now.0)
    .execute(store.pool())
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_add_up_to_the_whole_and_differ_by_at_most_one() {
        let l = ApplianceLimits {
            max_concurrent: 30,
            max_attempts_per_minute: 7,
        };
        for n in 1..=9 {
            let parts: Vec<_> = (0..n).map(|i| l.part(i, n)).collect();
            assert_eq!(parts.iter().map(|p| p.max_concurrent).sum::<u32>(), 30);
            assert_eq!(
                parts.iter().map(|p| p.max_attempts_per_minute).sum::<u32>(),
                7
            );
            let (lo, hi) = (
                parts.iter().map(|p| p.max_concurrent).min().unwrap(),
                parts.iter().map(|p| p.max_concurrent).max().unwrap(),
            );
            assert!(hi - lo <= 1, "{n}: {parts:?}");
        }
        assert_eq!(l.part(0, 0), l, "no other campaign: the whole");
        assert!(ApplianceLimits {
            max_concurrent: MAX_LIMIT + 1,
            max_attempts_per_minute: 0
        }
        .invalid_field()
        .is_some_and(|(f, _)| f == "max_concurrent"));
    }
}
