//! The compliance rules both halves evaluate: the coordinator when it leases a contact, the
//! appliance again the moment before it dials (DESIGN.md, principle 4).
//!
//! Everything here is a pure function of its inputs and the time the caller passes in:
//! - [`DncEntry`]: do-not-call, global or per campaign, permanent or until an instant (the
//!   UK profile's 72 h lockout after an abandoned call is a time-limited entry);
//! - [`CallingWindow`]: the hours a contact may be called, judged in the contact's own time
//!   zone (or, when only the number's country is known, in every zone of that country);
//! - [`AttemptCaps`]: attempts per number per rolling 24 h and per rolling 7 days, counted
//!   across all campaigns and branches;
//! - [`AbandonBudget`]: abandoned calls as a share of live-answered calls over a window, per
//!   jurisdiction profile (US: 3 % over 30 days per campaign; UK: 3 % per 24 h);
//! - [`ComplianceProfile`]: one jurisdiction's settings, and [`check_dial`] which applies
//!   them all and says which rule refused.
//!
//! Must not: read the clock, touch storage or the network, or know which half calls it.

use crate::ids::CampaignId;
use crate::time::UnixMillis;
use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// One hour in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;
/// One day in milliseconds.
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// Why a dial was refused, or a rule could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ComplianceError {
    /// The number is on the global do-not-call list.
    #[error("number is on the global do-not-call list")]
    DoNotCallGlobal,
    /// The number is on this campaign's do-not-call list.
    #[error("number is on campaign {0}'s do-not-call list")]
    DoNotCallCampaign(CampaignId),
    /// The number is locked out until the given instant (e.g. after an abandoned call).
    #[error("number is locked out until {0}")]
    LockedOut(UnixMillis),
    /// It is outside the calling window in (one of) the contact's time zone(s).
    #[error("outside calling hours in {zone}")]
    OutsideCallingHours { zone: String },
    /// The contact's local date is a holiday of the campaign.
    #[error("{date} is a holiday in {zone}")]
    Holiday { zone: String, date: String },
    /// The number already had its attempts for the rolling day.
    #[error("number reached its cap of {cap} attempts per 24 h")]
    DailyCapReached { cap: u32 },
    /// The number already had its attempts for the rolling week.
    #[error("number reached its cap of {cap} attempts per 7 days")]
    WeeklyCapReached { cap: u32 },
    /// The campaign has no abandon budget left in the profile's window.
    #[error("abandon budget spent: {abandoned} abandoned of {live} live-answered")]
    AbandonBudgetSpent { abandoned: u64, live: u64 },
    /// A time zone name that the bundled tz database does not know.
    #[error("unknown time zone `{0}`")]
    UnknownTimeZone(String),
    /// A contact with no time zone at all (neither explicit nor from its number's country).
    #[error("contact has no time zone; calling hours cannot be judged")]
    NoTimeZone,
    /// A calling window whose start is not before its end, or a minute past 24 h.
    #[error("calling window {start_minute}..{end_minute} is not a valid span of one day")]
    BadWindow { start_minute: u16, end_minute: u16 },
}

/// Whose list a do-not-call entry is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DncScope {
    /// Never call this number from any campaign.
    Global,
    /// Never call it from this campaign.
    Campaign(CampaignId),
}

/// One do-not-call entry for a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DncEntry {
    /// Global or one campaign's.
    pub scope: DncScope,
    /// `None`: permanent. `Some(t)`: in force until `t` (exclusive).
    pub expires_at: Option<UnixMillis>,
}

impl DncEntry {
    /// Whether this entry forbids calling from `campaign` at `now`.
    pub fn forbids(&self, campaign: CampaignId, now: UnixMillis) -> bool {
        let in_force = self.expires_at.is_none_or(|until| now < until);
        let applies = match self.scope {
            DncScope::Global => true,
            DncScope::Campaign(c) => c == campaign,
        };
        in_force && applies
    }

    /// The refusal this entry gives.
    fn refusal(&self) -> ComplianceError {
        match (self.expires_at, self.scope) {
            (Some(until), _) => ComplianceError::LockedOut(until),
            (None, DncScope::Global) => ComplianceError::DoNotCallGlobal,
            (None, DncScope::Campaign(c)) => ComplianceError::DoNotCallCampaign(c),
        }
    }
}

/// Checks every do-not-call entry of a number; the first that forbids wins.
pub fn check_dnc(
    entries: &[DncEntry],
    campaign: CampaignId,
    now: UnixMillis,
) -> Result<(), ComplianceError> {
    match entries.iter().find(|e| e.forbids(campaign, now)) {
        Some(e) => Err(e.refusal()),
        None => Ok(()),
    }
}

/// The hours of the day a contact may be called, in the contact's local time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallingWindow {
    /// First allowed minute of the day (0..1440), inclusive.
    pub start_minute: u16,
    /// End of the window (1..=1440), exclusive.
    pub end_minute: u16,
    /// Days of the week calls are allowed, Monday = 0 ... Sunday = 6.
    pub days: Vec<u8>,
    /// Local dates (`YYYY-MM-DD`) with no calls at all.
    pub holidays: Vec<String>,
}

impl CallingWindow {
    /// 08:00–21:00, every day: the US TCPA window.
    pub fn us_default() -> Self {
        CallingWindow {
            start_minute: 8 * 60,
            end_minute: 21 * 60,
            days: (0..7).collect(),
            holidays: Vec::new(),
        }
    }

    /// Checks the window's own consistency.
    pub fn validate(&self) -> Result<(), ComplianceError> {
        if self.start_minute >= self.end_minute || self.end_minute > 1440 {
            return Err(ComplianceError::BadWindow {
                start_minute: self.start_minute,
                end_minute: self.end_minute,
            });
        }
        Ok(())
    }

    /// Whether `now` falls inside the window in every one of `zones` (an explicit zone is a
    /// list of one; a number known only by its country gives all of that country's zones,
    /// so the call is allowed only when it is allowed everywhere the person could be).
    pub fn check(&self, zones: &[String], now: UnixMillis) -> Result<(), ComplianceError> {
        self.validate()?;
        if zones.is_empty() {
            return Err(ComplianceError::NoTimeZone);
        }
        let ts = Timestamp::from_millisecond(now.0)
            .map_err(|_| ComplianceError::UnknownTimeZone(format!("instant {}", now.0)))?;
        for zone in zones {
            let tz =
                TimeZone::get(zone).map_err(|_| ComplianceError::UnknownTimeZone(zone.clone()))?;
            let local = ts.to_zoned(tz).datetime();
            let date = local.date();
            let iso = date.to_string();
            if self.holidays.contains(&iso) {
                return Err(ComplianceError::Holiday {
                    zone: zone.clone(),
                    date: iso,
                });
            }
            let minute = minute_of_day(local.time());
            let day_ok = self.days.contains(&monday_zero(date));
            if !day_ok || minute < self.start_minute || minute >= self.end_minute {
                return Err(ComplianceError::OutsideCallingHours { zone: zone.clone() });
            }
        }
        Ok(())
    }
}

fn minute_of_day(t: Time) -> u16 {
    // hour() is 0..=23 and minute() 0..=59, so this is at most 1439.
    (t.hour() as u16) * 60 + t.minute() as u16
}

fn monday_zero(d: Date) -> u8 {
    match d.weekday() {
        Weekday::Monday => 0,
        Weekday::Tuesday => 1,
        Weekday::Wednesday => 2,
        Weekday::Thursday => 3,
        Weekday::Friday => 4,
        Weekday::Saturday => 5,
        Weekday::Sunday => 6,
    }
}

/// Whether `zone` is a time zone name the bundled database knows.
pub fn is_known_zone(zone: &str) -> bool {
    TimeZone::get(zone).is_ok()
}

/// Every time zone a number of this country calling code may be in, when the contact gives
/// none: one zone for single-zone countries, all of them for countries that span several
/// (calling hours then hold in all). `None` for a code this table does not cover.
pub fn zones_of_calling_code(cc: u16) -> Option<&'static [&'static str]> {
    Some(match cc {
        1 => &[
            "America/New_York",
            "America/Chicago",
            "America/Denver",
            "America/Phoenix",
            "America/Los_Angeles",
            "America/Anchorage",
            "Pacific/Honolulu",
        ],
        7 => &["Europe/Moscow", "Asia/Yekaterinburg", "Asia/Vladivostok"],
        27 => &["Africa/Johannesburg"],
        31 => &["Europe/Amsterdam"],
        32 => &["Europe/Brussels"],
        33 => &["Europe/Paris"],
        34 => &["Europe/Madrid", "Atlantic/Canary"],
        39 => &["Europe/Rome"],
        41 => &["Europe/Zurich"],
        43 => &["Europe/Vienna"],
        44 => &["Europe/London"],
        45 => &["Europe/Copenhagen"],
        46 => &["Europe/Stockholm"],
        47 => &["Europe/Oslo"],
        48 => &["Europe/Warsaw"],
        49 => &["Europe/Berlin"],
        52 => &["America/Mexico_City", "America/Tijuana", "America/Cancun"],
        54 => &["America/Argentina/Buenos_Aires"],
        55 => &["America/Sao_Paulo", "America/Manaus", "America/Noronha"],
        60 => &["Asia/Kuala_Lumpur"],
        61 => &["Australia/Sydney", "Australia/Adelaide", "Australia/Perth"],
        62 => &["Asia/Jakarta", "Asia/Makassar", "Asia/Jayapura"],
        63 => &["Asia/Manila"],
        64 => &["Pacific/Auckland"],
        65 => &["Asia/Singapore"],
        66 => &["Asia/Bangkok"],
        81 => &["Asia/Tokyo"],
        82 => &["Asia/Seoul"],
        84 => &["Asia/Ho_Chi_Minh"],
        86 => &["Asia/Shanghai"],
        90 => &["Europe/Istanbul"],
        91 => &["Asia/Kolkata"],
        351 => &["Europe/Lisbon", "Atlantic/Azores"],
        353 => &["Europe/Dublin"],
        358 => &["Europe/Helsinki"],
        852 => &["Asia/Hong_Kong"],
        886 => &["Asia/Taipei"],
        971 => &["Asia/Dubai"],
        _ => return None,
    })
}

/// Per-number attempt caps, counted across all campaigns and branches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptCaps {
    /// Most attempts in any rolling 24 h.
    pub per_day: u32,
    /// Most attempts in any rolling 7 days.
    pub per_week: u32,
}

impl AttemptCaps {
    /// Whether one more attempt at `now` stays within both caps, given the instants of the
    /// number's earlier attempts (any order, any campaign). Windows are rolling, so attempts
    /// bunched around local midnight cannot double a day's allowance.
    pub fn check(&self, earlier: &[UnixMillis], now: UnixMillis) -> Result<(), ComplianceError> {
        let within = |span: i64| {
            earlier
                .iter()
                .filter(|t| t.0 <= now.0 && now.0 - t.0 < span)
                .count() as u64
        };
        if within(DAY_MS) >= u64::from(self.per_day) {
            return Err(ComplianceError::DailyCapReached { cap: self.per_day });
        }
        if within(7 * DAY_MS) >= u64::from(self.per_week) {
            return Err(ComplianceError::WeeklyCapReached { cap: self.per_week });
        }
        Ok(())
    }
}

/// A campaign's abandoned and live-answered calls inside the profile's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AbandonTally {
    /// Calls answered by a person (abandoned ones included).
    pub live_answered: u64,
    /// Of those, calls with no agent within the safe-harbour time.
    pub abandoned: u64,
}

/// The abandon-rate cap of a jurisdiction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbandonBudget {
    /// Cap in parts per thousand of live-answered calls (30 = 3 %).
    pub cap_permille: u32,
    /// The window the rate is measured over.
    pub window_ms: i64,
}

impl AbandonBudget {
    /// How many more calls may be abandoned without the rate going over the cap, assuming
    /// no further live answers: `floor(live * cap) - abandoned`, never negative.
    pub fn remaining(&self, tally: AbandonTally) -> u64 {
        let allowed = tally.live_answered * u64::from(self.cap_permille) / 1000;
        allowed.saturating_sub(tally.abandoned)
    }

    /// Whether the campaign may keep dialing ahead of free agents: refused once the
    /// abandoned share has reached the cap.
    pub fn check(&self, tally: AbandonTally) -> Result<(), ComplianceError> {
        // abandoned / live >= cap / 1000, in integers.
        if tally.abandoned > 0
            && tally.abandoned * 1000 >= tally.live_answered * u64::from(self.cap_permille)
        {
            return Err(ComplianceError::AbandonBudgetSpent {
                abandoned: tally.abandoned,
                live: tally.live_answered,
            });
        }
        Ok(())
    }
}

/// Which regulator's rules a profile follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Jurisdiction {
    /// United States (TCPA / FTC Telemarketing Sales Rule).
    Us,
    /// United Kingdom (Ofcom persistent-misuse policy).
    Uk,
}

/// One jurisdiction's compliance settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComplianceProfile {
    /// Which rules these are.
    pub jurisdiction: Jurisdiction,
    /// The abandon-rate cap and its window.
    pub abandon: AbandonBudget,
    /// How long a number is locked out after one of its calls was abandoned, if at all.
    pub lockout_after_abandon_ms: Option<i64>,
    /// Per-number attempt caps.
    pub caps: AttemptCaps,
    /// Calling hours in the contact's own zone.
    pub window: CallingWindow,
    /// Whether calls must open with the recording consent announcement.
    pub recording_consent_announcement: bool,
    /// Days call records and recordings are kept.
    pub retention_days: u32,
}

impl ComplianceProfile {
    /// US: 3 % of live-answered calls over 30 days per campaign; 08:00–21:00 local.
    pub fn us() -> Self {
        ComplianceProfile {
            jurisdiction: Jurisdiction::Us,
            abandon: AbandonBudget {
                cap_permille: 30,
                window_ms: 30 * DAY_MS,
            },
            lockout_after_abandon_ms: None,
            caps: AttemptCaps {
                per_day: 3,
                per_week: 7,
            },
            window: CallingWindow::us_default(),
            recording_consent_announcement: true,
            retention_days: 365 * 2,
        }
    }

    /// UK: 3 % per 24 h; a number whose call was abandoned is not called again for 72 h.
    pub fn uk() -> Self {
        ComplianceProfile {
            jurisdiction: Jurisdiction::Uk,
            abandon: AbandonBudget {
                cap_permille: 30,
                window_ms: DAY_MS,
            },
            lockout_after_abandon_ms: Some(72 * HOUR_MS),
            caps: AttemptCaps {
                per_day: 2,
                per_week: 6,
            },
            window: CallingWindow {
                start_minute: 8 * 60,
                end_minute: 21 * 60,
                days: (0..7).collect(),
                holidays: Vec::new(),
            },
            recording_consent_announcement: true,
            retention_days: 365,
        }
    }

    /// The do-not-call entry to add for a number whose call was abandoned at `at`, if the
    /// profile locks such numbers out.
    pub fn lockout_after_abandon(&self, at: UnixMillis) -> Option<DncEntry> {
        self.lockout_after_abandon_ms.map(|ms| DncEntry {
            scope: DncScope::Global,
            expires_at: Some(at.plus_millis(ms)),
        })
    }
}

/// What is known about one prospective dial.
#[derive(Debug, Clone, Copy)]
pub struct DialFacts<'a> {
    /// The campaign dialing.
    pub campaign: CampaignId,
    /// The number's do-not-call entries (any scope).
    pub dnc: &'a [DncEntry],
    /// The contact's zone(s): one explicit zone, or every zone of its country.
    pub zones: &'a [String],
    /// When the number was attempted before, across campaigns and branches.
    pub earlier_attempts: &'a [UnixMillis],
    /// The campaign's abandon tally inside the profile's window.
    pub abandon: AbandonTally,
    /// Whether this dial may be abandoned at all (predictive dialing); preview and
    /// progressive dials wait for an agent, so the abandon budget does not gate them.
    pub may_abandon: bool,
}

/// Applies every rule of `profile` (with the campaign's own `window`) to one dial at `now`.
/// Returns the first rule that refuses, in a fixed order: do-not-call, calling hours,
/// attempt caps, abandon budget.
pub fn check_dial(
    profile: &ComplianceProfile,
    window: &CallingWindow,
    facts: &DialFacts<'_>,
    now: UnixMillis,
) -> Result<(), ComplianceError> {
    check_dnc(facts.dnc, facts.campaign, now)?;
    profile.window.check(facts.zones, now)?;
    window.check(facts.zones, now)?;
    profile.caps.check(facts.earlier_attempts, now)?;
    if facts.may_abandon {
        profile.abandon.check(facts.abandon)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> UnixMillis {
        let ts: Timestamp = rfc3339.parse().unwrap();
        UnixMillis(ts.as_millisecond())
    }

    fn zones(z: &[&str]) -> Vec<String> {
        z.iter().map(|s| s.to_string()).collect()
    }

    const C1: CampaignId = CampaignId(1);
    const C2: CampaignId = CampaignId(2);

    #[test]
    fn a_campaign_dnc_entry_blocks_only_its_own_campaign() {
        let e = [DncEntry {
            scope: DncScope::Campaign(C1),
            expires_at: None,
        }];
        let now = UnixMillis(1_000);
        assert_eq!(
            check_dnc(&e, C1, now),
            Err(ComplianceError::DoNotCallCampaign(C1))
        );
        assert_eq!(check_dnc(&e, C2, now), Ok(()));
    }

    #[test]
    fn a_global_dnc_entry_blocks_every_campaign_forever() {
        let e = [DncEntry {
            scope: DncScope::Global,
            expires_at: None,
        }];
        for c in [C1, C2, CampaignId(u64::MAX)] {
            assert_eq!(
                check_dnc(&e, c, UnixMillis(i64::MAX)),
                Err(ComplianceError::DoNotCallGlobal)
            );
        }
    }

    #[test]
    fn a_time_limited_lockout_holds_until_its_last_millisecond_and_not_after() {
        let abandoned_at = at("2026-03-01T12:00:00Z");
        let uk = ComplianceProfile::uk();
        let entry = uk.lockout_after_abandon(abandoned_at).unwrap();
        let until = abandoned_at.plus_millis(72 * HOUR_MS);
        assert!(entry.forbids(C2, until.plus_millis(-1)), "1 ms before 72 h");
        assert_eq!(
            check_dnc(&[entry], C1, abandoned_at),
            Err(ComplianceError::LockedOut(until))
        );
        assert!(!entry.forbids(C2, until), "lockout over at exactly 72 h");
        assert!(ComplianceProfile::us()
            .lockout_after_abandon(abandoned_at)
            .is_none());
    }

    #[test]
    fn calling_hours_follow_the_contacts_zone_not_utc() {
        let w = CallingWindow::us_default();
        // 14:30 UTC is 09:30 in New York (EST) but 06:30 in Los Angeles.
        let now = at("2026-01-15T14:30:00Z");
        assert_eq!(w.check(&zones(&["America/New_York"]), now), Ok(()));
        assert_eq!(
            w.check(&zones(&["America/Los_Angeles"]), now),
            Err(ComplianceError::OutsideCallingHours {
                zone: "America/Los_Angeles".into()
            })
        );
    }

    #[test]
    fn calling_hours_edges_are_start_inclusive_end_exclusive_across_dst() {
        let w = CallingWindow::us_default();
        let ny = zones(&["America/New_York"]);
        // Summer (EDT, UTC-4): 08:00 local is 12:00 UTC.
        assert_eq!(w.check(&ny, at("2026-07-01T12:00:00Z")), Ok(()));
        assert!(w.check(&ny, at("2026-07-01T11:59:59Z")).is_err());
        // 21:00 local (01:00 UTC next day) is already outside.
        assert!(w.check(&ny, at("2026-07-02T01:00:00Z")).is_err());
        assert_eq!(w.check(&ny, at("2026-07-02T00:59:00Z")), Ok(()));
        // Winter (EST, UTC-5): 12:00 UTC is 07:00 local — a fixed UTC offset would allow it.
        assert!(w.check(&ny, at("2026-01-15T12:00:00Z")).is_err());
    }

    #[test]
    fn a_number_known_only_by_country_must_be_inside_hours_in_all_its_zones() {
        let w = CallingWindow::us_default();
        let us: Vec<String> = zones(zones_of_calling_code(1).unwrap());
        // 13:30 UTC in January: 08:30 in New York, 03:30 in Honolulu.
        let err = w.check(&us, at("2026-01-15T13:30:00Z")).unwrap_err();
        assert!(matches!(err, ComplianceError::OutsideCallingHours { .. }));
        // 20:00 UTC: 15:00 NY, 10:00 Honolulu — allowed everywhere.
        assert_eq!(w.check(&us, at("2026-01-15T20:00:00Z")), Ok(()));
        assert_eq!(
            w.check(&[], at("2026-01-15T20:00:00Z")),
            Err(ComplianceError::NoTimeZone)
        );
    }

    #[test]
    fn holidays_and_weekdays_are_judged_on_the_local_date() {
        let w = CallingWindow {
            start_minute: 9 * 60,
            end_minute: 17 * 60,
            days: vec![0, 1, 2, 3, 4],
            holidays: vec!["2026-12-25".into()],
        };
        let tokyo = zones(&["Asia/Tokyo"]);
        // 2026-12-25 01:00 UTC is 10:00 on the 25th in Tokyo: a holiday there.
        assert!(matches!(
            w.check(&tokyo, at("2026-12-25T01:00:00Z")),
            Err(ComplianceError::Holiday { .. })
        ));
        // 2026-01-17 01:00 UTC is Saturday 10:00 in Tokyo: not a calling day.
        assert!(w.check(&tokyo, at("2026-01-17T01:00:00Z")).is_err());
        assert_eq!(w.check(&tokyo, at("2026-01-16T01:00:00Z")), Ok(()));
    }

    #[test]
    fn unknown_zones_and_inverted_windows_are_refused_not_ignored() {
        let w = CallingWindow::us_default();
        assert_eq!(
            w.check(&zones(&["Mars/Olympus"]), UnixMillis(0)),
            Err(ComplianceError::UnknownTimeZone("Mars/Olympus".into()))
        );
        let bad = CallingWindow {
            start_minute: 600,
            end_minute: 600,
            ..CallingWindow::us_default()
        };
        assert!(matches!(
            bad.validate(),
            Err(ComplianceError::BadWindow { .. })
        ));
        assert!(is_known_zone("Europe/London") && !is_known_zone("Europe/Atlantis"));
    }

    #[test]
    fn attempt_caps_are_rolling_so_midnight_cannot_double_a_day() {
        let caps = AttemptCaps {
            per_day: 2,
            per_week: 5,
        };
        let midnight = at("2026-03-02T00:00:00Z");
        let earlier = [midnight.plus_millis(-60_000), midnight.plus_millis(-30_000)];
        // Two attempts just before midnight: a third just after is still in the same 24 h.
        assert_eq!(
            caps.check(&earlier, midnight.plus_millis(60_000)),
            Err(ComplianceError::DailyCapReached { cap: 2 })
        );
        // One millisecond before the first attempt is 24 h old, still refused; at 24 h
        // exactly that attempt leaves the window and one slot frees up.
        assert!(caps
            .check(&earlier, earlier[0].plus_millis(DAY_MS - 1))
            .is_err());
        assert_eq!(caps.check(&earlier, earlier[0].plus_millis(DAY_MS)), Ok(()));
    }

    #[test]
    fn the_weekly_cap_counts_attempts_from_every_campaign_over_seven_days() {
        let caps = AttemptCaps {
            per_day: 10,
            per_week: 3,
        };
        let now = at("2026-03-10T12:00:00Z");
        let earlier = [
            now.plus_millis(-6 * DAY_MS),
            now.plus_millis(-3 * DAY_MS),
            now.plus_millis(-2 * HOUR_MS),
        ];
        assert_eq!(
            caps.check(&earlier, now),
            Err(ComplianceError::WeeklyCapReached { cap: 3 })
        );
        assert_eq!(caps.check(&earlier, now.plus_millis(DAY_MS)), Ok(()));
        // Attempts "in the future" (clock skew on a box) are not counted against now.
        assert_eq!(caps.check(&[now.plus_millis(HOUR_MS); 5], now), Ok(()));
    }

    #[test]
    fn the_abandon_cap_refuses_at_exactly_three_percent_and_budget_never_goes_negative() {
        let us = ComplianceProfile::us().abandon;
        assert_eq!(us.window_ms, 30 * DAY_MS);
        assert_eq!(ComplianceProfile::uk().abandon.window_ms, DAY_MS);
        let t = |live, abandoned| AbandonTally {
            live_answered: live,
            abandoned,
        };
        assert_eq!(us.check(t(100, 2)), Ok(()));
        assert!(us.check(t(100, 3)).is_err(), "3 of 100 is the cap");
        assert!(us.check(t(0, 1)).is_err(), "an abandon with no live calls");
        assert_eq!(us.check(t(0, 0)), Ok(()));
        assert_eq!(us.remaining(t(1000, 10)), 20);
        assert_eq!(us.remaining(t(1000, 31)), 0);
        assert_eq!(us.remaining(t(33, 0)), 0, "0.99 of a call rounds down");
    }

    #[test]
    fn check_dial_names_the_first_rule_that_refuses() {
        let us = ComplianceProfile::us();
        let z = zones(&["America/Chicago"]);
        let now = at("2026-05-05T17:00:00Z"); // 12:00 in Chicago
        let global = [DncEntry {
            scope: DncScope::Global,
            expires_at: None,
        }];
        let ok = DialFacts {
            campaign: C1,
            dnc: &[],
            zones: &z,
            earlier_attempts: &[],
            abandon: AbandonTally::default(),
            may_abandon: true,
        };
        assert_eq!(check_dial(&us, &us.window, &ok, now), Ok(()));
        let dnc = DialFacts { dnc: &global, ..ok };
        assert_eq!(
            check_dial(&us, &us.window, &dnc, now),
            Err(ComplianceError::DoNotCallGlobal)
        );
        let spent = DialFacts {
            abandon: AbandonTally {
                live_answered: 10,
                abandoned: 5,
            },
            ..ok
        };
        assert!(check_dial(&us, &us.window, &spent, now).is_err());
        let preview = DialFacts {
            may_abandon: false,
            ..spent
        };
        assert_eq!(check_dial(&us, &us.window, &preview, now), Ok(()));
        // A campaign window narrower than the profile's applies too.
        let narrow = CallingWindow {
            start_minute: 13 * 60,
            ..us.window.clone()
        };
        assert!(check_dial(&us, &narrow, &ok, now).is_err());
    }
}
