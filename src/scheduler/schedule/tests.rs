//! Unit tests of the schedule maths.
use super::*;
use chrono_tz::America::New_York;

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
        .single()
        .expect("valid test time")
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn every(interval: Duration) -> Schedule {
    Schedule {
        cadence: Cadence::Every(interval),
        time_zone: Tz::UTC,
        jitter: Duration::ZERO,
        start_at: None,
        end_at: None,
        max_runs: None,
    }
}

fn cron_in(pattern: &str, tz: Tz) -> Schedule {
    Schedule {
        cadence: Cadence::Cron(CronCadence::parse(pattern).expect("valid test pattern")),
        time_zone: tz,
        jitter: Duration::ZERO,
        start_at: None,
        end_at: None,
        max_runs: None,
    }
}

/// Consecutive slots strictly after `from`, up to and including `until`.
fn slots(
    s: &Schedule,
    created: DateTime<Utc>,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let mut out = Vec::new();
    let mut cursor = from;
    while let Some(slot) = s.next_slot_after(created, cursor) {
        if slot > until {
            break;
        }
        out.push(slot);
        cursor = slot;
    }
    out
}

fn input_every(interval: Duration) -> ScheduleInput {
    ScheduleInput {
        every: Some(interval),
        ..ScheduleInput::default()
    }
}

fn input_cron(pattern: &str) -> ScheduleInput {
    ScheduleInput {
        cron: Some(pattern.to_owned()),
        ..ScheduleInput::default()
    }
}

fn limits() -> Limits {
    Limits {
        min_interval: secs(10),
    }
}

fn field_of(input: ScheduleInput) -> &'static str {
    Schedule::from_input(input, &limits())
        .expect_err("input should be rejected")
        .field
}

// ---- interval ------------------------------------------------------

#[test]
fn interval_anchors_on_created_at_and_does_not_drift() {
    let s = every(secs(600));
    let created = utc(2026, 1, 1, 10, 0, 0);
    assert_eq!(
        s.next_slot_after(created, created),
        Some(utc(2026, 1, 1, 10, 10, 0))
    );
    // A run that finished late (10:13:07) still leaves the next slot on
    // the grid, not at "finish + 10 minutes".
    assert_eq!(
        s.next_slot_after(created, utc(2026, 1, 1, 10, 13, 7)),
        Some(utc(2026, 1, 1, 10, 20, 0))
    );
    // Exactly on a slot means the one after it.
    assert_eq!(
        s.next_slot_after(created, utc(2026, 1, 1, 10, 20, 0)),
        Some(utc(2026, 1, 1, 10, 30, 0))
    );
    // Sub-second created_at keeps its offset on every slot.
    let created = created + TimeDelta::milliseconds(250);
    let next = s
        .next_slot_after(created, utc(2030, 6, 1, 0, 0, 0))
        .expect("slot");
    assert_eq!(next.timestamp_subsec_millis(), 250);
    assert_eq!((next - created).num_milliseconds() % 600_000, 0);
    // Before the task existed the first slot is still created_at + every.
    assert_eq!(
        s.next_slot_after(created, utc(2000, 1, 1, 0, 0, 0)),
        Some(created + TimeDelta::seconds(600))
    );
}

#[test]
fn interval_start_at_in_future_is_the_first_slot() {
    let mut s = every(secs(3_600));
    let created = utc(2026, 1, 1, 10, 0, 0);
    s.start_at = Some(utc(2026, 1, 2, 9, 30, 0));
    assert_eq!(
        s.next_slot_after(created, created),
        Some(utc(2026, 1, 2, 9, 30, 0))
    );
    assert_eq!(
        s.next_slot_after(created, utc(2026, 1, 2, 9, 30, 0)),
        Some(utc(2026, 1, 2, 10, 30, 0))
    );
    assert_eq!(
        s.latest_due_slot(created, created, utc(2026, 1, 2, 9, 29, 59)),
        None
    );
}

#[test]
fn interval_start_at_far_in_the_past_is_constant_time() {
    // 1-second grid from 50 years ago: a loop would take ~1.6e9 steps.
    let mut s = every(secs(1));
    let start = utc(1976, 1, 1, 0, 0, 0);
    s.start_at = Some(start);
    let after = utc(2026, 3, 4, 5, 6, 7) + TimeDelta::milliseconds(500);
    let began = std::time::Instant::now();
    assert_eq!(
        s.next_slot_after(start, after),
        Some(utc(2026, 3, 4, 5, 6, 8))
    );
    let (latest, skipped) = s
        .latest_due_slot(start, start - TimeDelta::seconds(1), after)
        .expect("due");
    assert_eq!(latest, utc(2026, 3, 4, 5, 6, 7));
    // Slots start..latest inclusive, minus the latest one itself.
    assert_eq!(
        skipped,
        u64::try_from((latest - start).num_seconds()).expect("positive")
    );
    assert!(began.elapsed() < Duration::from_millis(100));
}

#[test]
fn end_at_cuts_off_slots() {
    let created = utc(2026, 1, 1, 0, 0, 0);
    let mut s = every(secs(60));
    s.end_at = Some(utc(2026, 1, 1, 0, 5, 0));
    // A slot exactly at end_at still fires.
    assert_eq!(
        s.next_slot_after(created, utc(2026, 1, 1, 0, 4, 30)),
        Some(utc(2026, 1, 1, 0, 5, 0))
    );
    assert_eq!(s.next_slot_after(created, utc(2026, 1, 1, 0, 5, 0)), None);
    // A stalled runner catches up only to end_at.
    assert_eq!(
        s.latest_due_slot(created, created, utc(2026, 1, 1, 1, 0, 0)),
        Some((utc(2026, 1, 1, 0, 5, 0), 4))
    );

    let mut c = cron_in("0 * * * *", Tz::UTC);
    c.end_at = Some(utc(2026, 1, 1, 2, 30, 0));
    assert_eq!(
        c.next_slot_after(created, utc(2026, 1, 1, 1, 0, 0)),
        Some(utc(2026, 1, 1, 2, 0, 0))
    );
    assert_eq!(c.next_slot_after(created, utc(2026, 1, 1, 2, 0, 0)), None);
    assert_eq!(
        c.latest_due_slot(created, created, utc(2026, 1, 2, 0, 0, 0)),
        Some((utc(2026, 1, 1, 2, 0, 0), 1))
    );
}

#[test]
fn arithmetic_overflow_gives_none_not_panic() {
    let max = DateTime::<Utc>::MAX_UTC;
    let min = DateTime::<Utc>::MIN_UTC;
    let s = every(MAX_EVERY);
    assert_eq!(s.next_slot_after(max, max), None);
    assert_eq!(s.next_slot_after(max - TimeDelta::days(365), min), None);
    assert_eq!(s.latest_due_slot(max, min, max), None);
    // Values validation would reject must still be safe.
    for interval in [Duration::MAX, Duration::ZERO, Duration::from_nanos(1)] {
        let s = every(interval);
        let _ = s.next_slot_after(min, max);
        let _ = s.next_slot_after(max, min);
        let _ = s.latest_due_slot(min, min, max);
        let _ = s.latest_due_slot(max, max, min);
    }
    // 1ns grid over chrono's whole range: the count saturates.
    let mut s = every(Duration::from_nanos(1));
    s.start_at = Some(min);
    let (latest, skipped) = s.latest_due_slot(min, min, max).expect("due");
    assert_eq!((latest, skipped), (max, u64::MAX));
    let mut s = every(Duration::MAX);
    s.jitter = Duration::MAX;
    let j = s.jitter_for("t", max);
    assert!(j < Duration::MAX);
    // Cron at the extremes: no slot, no panic.
    let c = cron_in("* * * * * *", New_York);
    assert_eq!(c.next_slot_after(min, max), None);
    assert_eq!(c.latest_due_slot(min, min, min), None);
    let due = c.latest_due_slot(min, max - TimeDelta::seconds(5), max);
    assert_eq!(due, None);
    let (latest, skipped) = c.latest_due_slot(min, min, max).expect("due");
    assert!(latest < utc(4000, 1, 1, 0, 0, 0));
    assert_eq!(skipped, SKIPPED_COUNT_CAP);
}

#[test]
fn interval_latest_due_slot_counts_skipped() {
    let s = every(secs(60));
    let created = utc(2026, 1, 1, 10, 0, 0);
    // Last fired 10:01; now 10:05:30: fire 10:05, skip 10:02-10:04.
    assert_eq!(
        s.latest_due_slot(
            created,
            utc(2026, 1, 1, 10, 1, 0),
            utc(2026, 1, 1, 10, 5, 30)
        ),
        Some((utc(2026, 1, 1, 10, 5, 0), 3))
    );
    // On time: nothing skipped, slot exactly at now is due.
    assert_eq!(
        s.latest_due_slot(
            created,
            utc(2026, 1, 1, 10, 1, 0),
            utc(2026, 1, 1, 10, 2, 0)
        ),
        Some((utc(2026, 1, 1, 10, 2, 0), 0))
    );
    assert_eq!(
        s.latest_due_slot(
            created,
            utc(2026, 1, 1, 10, 1, 0),
            utc(2026, 1, 1, 10, 1, 59)
        ),
        None
    );
    // Brand-new task: created_at itself is not a slot.
    assert_eq!(s.latest_due_slot(created, created, created), None);
}

// ---- cron ----------------------------------------------------------

#[test]
fn cron_five_and_six_field_patterns() {
    let created = utc(2026, 1, 1, 0, 0, 0);
    let five = cron_in("15 10 * * *", Tz::UTC);
    assert_eq!(
        five.next_slot_after(created, created),
        Some(utc(2026, 1, 1, 10, 15, 0))
    );
    assert_eq!(
        five.next_slot_after(created, utc(2026, 1, 1, 10, 15, 0)),
        Some(utc(2026, 1, 2, 10, 15, 0))
    );
    // Six fields: seconds first.
    let six = cron_in("30 15 10 * * *", Tz::UTC);
    assert_eq!(
        six.next_slot_after(created, created),
        Some(utc(2026, 1, 1, 10, 15, 30))
    );
    let every_ten_seconds = cron_in("*/10 * * * * *", Tz::UTC);
    assert_eq!(
        every_ten_seconds.next_slot_after(
            created,
            utc(2026, 1, 1, 0, 0, 10) + TimeDelta::milliseconds(1)
        ),
        Some(utc(2026, 1, 1, 0, 0, 20))
    );
    // Weekday names and nicknames.
    let weekdays = cron_in("0 9 * * MON-FRI", Tz::UTC);
    // 2026-01-03 is a Saturday.
    assert_eq!(
        weekdays.next_slot_after(created, utc(2026, 1, 2, 9, 0, 0)),
        Some(utc(2026, 1, 5, 9, 0, 0))
    );
    let hourly = cron_in("@hourly", Tz::UTC);
    assert_eq!(
        hourly.next_slot_after(created, created),
        Some(utc(2026, 1, 1, 1, 0, 0))
    );
}

#[test]
fn cron_respects_time_zone_and_start_at() {
    let created = utc(2026, 1, 1, 0, 0, 0);
    let mut s = cron_in("0 9 * * *", New_York);
    // 09:00 EST is 14:00 UTC in winter, 13:00 UTC in summer.
    assert_eq!(
        s.next_slot_after(created, created),
        Some(utc(2026, 1, 1, 14, 0, 0))
    );
    assert_eq!(
        s.next_slot_after(created, utc(2026, 7, 1, 0, 0, 0)),
        Some(utc(2026, 7, 1, 13, 0, 0))
    );
    // start_at exactly on a slot includes it; later slots only after it.
    s.start_at = Some(utc(2026, 2, 1, 14, 0, 0));
    assert_eq!(
        s.next_slot_after(created, created),
        Some(utc(2026, 2, 1, 14, 0, 0))
    );
    s.start_at = Some(utc(2026, 2, 1, 14, 0, 0) + TimeDelta::milliseconds(1));
    assert_eq!(
        s.next_slot_after(created, created),
        Some(utc(2026, 2, 2, 14, 0, 0))
    );
}

#[test]
fn cron_spring_forward_fixed_time_fires_once_after_the_gap() {
    // 2026-03-08: New York jumps from 02:00 EST to 03:00 EDT (07:00 UTC).
    let created = utc(2026, 3, 1, 0, 0, 0);
    let s = cron_in("30 2 * * *", New_York);
    let day = slots(
        &s,
        created,
        utc(2026, 3, 8, 5, 0, 0),
        utc(2026, 3, 9, 5, 0, 0),
    );
    assert_eq!(day, vec![utc(2026, 3, 8, 7, 0, 0)]);
    assert_eq!(
        s.next_slot_after(created, utc(2026, 3, 8, 7, 0, 0)),
        Some(utc(2026, 3, 9, 6, 30, 0))
    );
    assert_eq!(
        s.latest_due_slot(created, utc(2026, 3, 7, 12, 0, 0), utc(2026, 3, 8, 7, 0, 0)),
        Some((utc(2026, 3, 8, 7, 0, 0), 0))
    );
    assert_eq!(
        s.latest_due_slot(
            created,
            utc(2026, 3, 7, 12, 0, 0),
            utc(2026, 3, 8, 6, 59, 59)
        ),
        None
    );
    // A list of fixed hours gets the same treatment (croner alone would
    // drop the 02:00 run as an "interval" job).
    let s = cron_in("0 2,14 * * *", New_York);
    let day = slots(
        &s,
        created,
        utc(2026, 3, 8, 5, 0, 0),
        utc(2026, 3, 9, 5, 0, 0),
    );
    assert_eq!(
        day,
        vec![utc(2026, 3, 8, 7, 0, 0), utc(2026, 3, 8, 18, 0, 0)]
    );
    // Runs that all land on 03:00 after the gap fire once.
    let s = cron_in("0,30 2,3 * * *", New_York);
    let day = slots(
        &s,
        created,
        utc(2026, 3, 8, 5, 0, 0),
        utc(2026, 3, 8, 12, 0, 0),
    );
    assert_eq!(
        day,
        vec![utc(2026, 3, 8, 7, 0, 0), utc(2026, 3, 8, 7, 30, 0)]
    );
}

#[test]
fn cron_spring_forward_interval_jobs_keep_real_time_spacing() {
    let created = utc(2026, 3, 1, 0, 0, 0);
    let hourly = cron_in("0 * * * *", New_York);
    let got = slots(
        &hourly,
        created,
        utc(2026, 3, 8, 5, 30, 0),
        utc(2026, 3, 8, 8, 0, 0),
    );
    // 01:00 EST, then 03:00 EDT (02:00 does not exist), 04:00 EDT.
    assert_eq!(
        got,
        vec![
            utc(2026, 3, 8, 6, 0, 0),
            utc(2026, 3, 8, 7, 0, 0),
            utc(2026, 3, 8, 8, 0, 0)
        ]
    );
    let quarter = cron_in("*/15 * * * *", New_York);
    let got = slots(
        &quarter,
        created,
        utc(2026, 3, 8, 6, 0, 0),
        utc(2026, 3, 8, 8, 0, 0),
    );
    assert_eq!(got.len(), 8);
    assert!(
        got.windows(2)
            .all(|w| w[1] - w[0] == TimeDelta::minutes(15))
    );
}

#[test]
fn cron_fall_back_fixed_time_fires_once() {
    // 2026-11-01: New York goes from 02:00 EDT back to 01:00 EST (06:00 UTC),
    // so 01:00-01:59 local happens at 05:xx UTC and again at 06:xx UTC.
    let created = utc(2026, 10, 1, 0, 0, 0);
    let s = cron_in("30 1 * * *", New_York);
    let day = slots(
        &s,
        created,
        utc(2026, 11, 1, 4, 0, 0),
        utc(2026, 11, 2, 4, 0, 0),
    );
    assert_eq!(day, vec![utc(2026, 11, 1, 5, 30, 0)]);
    // Asked from inside the second copy of the hour, the next run is tomorrow.
    assert_eq!(
        s.next_slot_after(created, utc(2026, 11, 1, 6, 15, 0)),
        Some(utc(2026, 11, 2, 6, 30, 0))
    );
    // A runner waking in the second copy sees the first-copy run as due.
    assert_eq!(
        s.latest_due_slot(
            created,
            utc(2026, 10, 31, 12, 0, 0),
            utc(2026, 11, 1, 6, 45, 0)
        ),
        Some((utc(2026, 11, 1, 5, 30, 0), 0))
    );
    assert_eq!(
        s.latest_due_slot(
            created,
            utc(2026, 11, 1, 5, 30, 0),
            utc(2026, 11, 1, 6, 45, 0)
        ),
        None
    );
    // Fixed-hour lists also run once (croner alone would run 01:00 twice).
    let s = cron_in("0 1,13 * * *", New_York);
    let day = slots(
        &s,
        created,
        utc(2026, 11, 1, 4, 0, 0),
        utc(2026, 11, 2, 4, 0, 0),
    );
    assert_eq!(
        day,
        vec![utc(2026, 11, 1, 5, 0, 0), utc(2026, 11, 1, 18, 0, 0)]
    );
}

#[test]
fn cron_fall_back_interval_jobs_run_in_both_copies() {
    let created = utc(2026, 10, 1, 0, 0, 0);
    let quarter = cron_in("*/15 * * * *", New_York);
    let got = slots(
        &quarter,
        created,
        utc(2026, 11, 1, 4, 0, 0),
        utc(2026, 11, 1, 8, 0, 0),
    );
    // Four real hours, every 15 minutes, no gaps and no repeats.
    assert_eq!(got.len(), 16);
    assert!(
        got.windows(2)
            .all(|w| w[1] - w[0] == TimeDelta::minutes(15))
    );
    let minutely = cron_in("* * * * *", New_York);
    let got = slots(
        &minutely,
        created,
        utc(2026, 11, 1, 4, 59, 0),
        utc(2026, 11, 1, 7, 0, 0),
    );
    assert_eq!(got.len(), 121);
    assert!(got.windows(2).all(|w| w[1] - w[0] == TimeDelta::minutes(1)));
    // Counting across the repeated hour uses real time too.
    assert_eq!(
        quarter.latest_due_slot(
            created,
            utc(2026, 11, 1, 5, 0, 0),
            utc(2026, 11, 1, 6, 10, 0)
        ),
        Some((utc(2026, 11, 1, 6, 0, 0), 3))
    );
    // From the first copy of 01:50, the next run is 01:00 EST (second copy).
    assert_eq!(
        quarter.next_slot_after(created, utc(2026, 11, 1, 5, 50, 0)),
        Some(utc(2026, 11, 1, 6, 0, 0))
    );
    let hourly = cron_in("0 * * * *", New_York);
    let got = slots(
        &hourly,
        created,
        utc(2026, 11, 1, 4, 30, 0),
        utc(2026, 11, 1, 8, 0, 0),
    );
    assert_eq!(
        got,
        vec![
            utc(2026, 11, 1, 5, 0, 0),
            utc(2026, 11, 1, 6, 0, 0),
            utc(2026, 11, 1, 7, 0, 0),
            utc(2026, 11, 1, 8, 0, 0)
        ]
    );
}

#[test]
fn wildcard_classification_matches_croner_for_interval_jobs() {
    // Interval jobs are delegated to croner's real-time search, which is
    // only right if croner treats them as interval jobs too.
    for pattern in [
        "* * * * *",
        "*/15 * * * *",
        "0 * * * *",
        "30 */2 * * *",
        "*/5,7 1 * * *",
        "* 30 1 * * *",
    ] {
        let cadence = CronCadence::parse(pattern).expect("valid");
        assert!(!cadence.is_fixed_time(), "{pattern}");
        assert_eq!(
            cadence.cron().determine_job_type(),
            croner::JobType::IntervalWildcard,
            "{pattern}"
        );
    }
    for pattern in [
        "30 2 * * *",
        "0 1,13 * * *",
        "0-30/10 9 * * *",
        "0 30 1 * * *",
        "@daily",
    ] {
        assert!(
            CronCadence::parse(pattern).expect("valid").is_fixed_time(),
            "{pattern}"
        );
    }
}

#[test]
fn cron_sub_second_bounds_for_fixed_time_jobs() {
    let created = utc(2026, 1, 1, 0, 0, 0);
    let s = cron_in("15 10 * * *", Tz::UTC);
    let half = TimeDelta::milliseconds(500);
    assert_eq!(
        s.next_slot_after(created, utc(2026, 1, 1, 10, 14, 59) + half),
        Some(utc(2026, 1, 1, 10, 15, 0))
    );
    assert_eq!(
        s.next_slot_after(created, utc(2026, 1, 1, 10, 15, 0) + half),
        Some(utc(2026, 1, 2, 10, 15, 0))
    );
    assert_eq!(
        s.latest_due_slot(created, created, utc(2026, 1, 1, 10, 15, 0) + half),
        Some((utc(2026, 1, 1, 10, 15, 0), 0))
    );
}

#[test]
fn cron_latest_due_slot_inside_first_copy_of_repeated_hour() {
    let created = utc(2026, 10, 1, 0, 0, 0);
    let quarter = cron_in("*/15 * * * *", New_York);
    // 05:50 UTC is 01:50 EDT, the first copy: latest is 01:45 EDT.
    assert_eq!(
        quarter.latest_due_slot(
            created,
            utc(2026, 11, 1, 5, 0, 0),
            utc(2026, 11, 1, 5, 50, 0)
        ),
        Some((utc(2026, 11, 1, 5, 45, 0), 2))
    );
    let fixed = cron_in("30 1 * * *", New_York);
    assert_eq!(
        fixed.latest_due_slot(
            created,
            utc(2026, 10, 31, 12, 0, 0),
            utc(2026, 11, 1, 5, 50, 0)
        ),
        Some((utc(2026, 11, 1, 5, 30, 0), 0))
    );
}

#[test]
fn cron_gap_end_is_found_to_the_second() {
    // Lord Howe moves its clocks by 30 minutes: 02:00 -> 02:30 (+11:00).
    let lord_howe: Tz = "Australia/Lord_Howe".parse().expect("known zone");
    let s = cron_in("15 2 * * *", lord_howe);
    let created = utc(2026, 9, 1, 0, 0, 0);
    assert_eq!(
        s.next_slot_after(created, utc(2026, 10, 3, 0, 0, 0)),
        Some(utc(2026, 10, 3, 15, 30, 0))
    );
    // Monrovia left UTC-0:44:30 on 1972-01-07: local 00:00:00-00:44:29 never
    // happened, so a 00:30 job ran at 00:44:30 (== UTC from then on).
    let monrovia: Tz = "Africa/Monrovia".parse().expect("known zone");
    let s = cron_in("30 0 * * *", monrovia);
    let created = utc(1972, 1, 1, 0, 0, 0);
    assert_eq!(
        s.next_slot_after(created, utc(1972, 1, 6, 12, 0, 0)),
        Some(utc(1972, 1, 7, 0, 44, 30))
    );
    assert_eq!(
        s.next_slot_after(created, utc(1972, 1, 7, 0, 44, 30)),
        Some(utc(1972, 1, 8, 0, 30, 0))
    );
}

#[test]
fn cron_latest_due_slot_counts_skipped_and_caps() {
    let created = utc(2026, 1, 1, 0, 0, 0);
    let s = cron_in("*/5 * * * *", Tz::UTC);
    assert_eq!(
        s.latest_due_slot(
            created,
            utc(2026, 1, 1, 10, 0, 0),
            utc(2026, 1, 1, 10, 27, 0)
        ),
        Some((utc(2026, 1, 1, 10, 25, 0), 4))
    );
    assert_eq!(
        s.latest_due_slot(
            created,
            utc(2026, 1, 1, 10, 0, 0),
            utc(2026, 1, 1, 10, 4, 59)
        ),
        None
    );
    let fixed = cron_in("0 9 * * *", Tz::UTC);
    assert_eq!(
        fixed.latest_due_slot(created, utc(2026, 1, 1, 9, 0, 0), utc(2026, 1, 11, 8, 0, 0)),
        Some((utc(2026, 1, 10, 9, 0, 0), 8))
    );
    let per_second = cron_in("* * * * * *", Tz::UTC);
    let (latest, skipped) = per_second
        .latest_due_slot(created, created, utc(2026, 1, 3, 0, 0, 0))
        .expect("due");
    assert_eq!(
        (latest, skipped),
        (utc(2026, 1, 3, 0, 0, 0), SKIPPED_COUNT_CAP)
    );
}

// ---- jitter ----------------------------------------------------------

#[test]
fn fnv1a64_matches_reference_vectors() {
    assert_eq!(fnv1a64(FNV_OFFSET_BASIS, b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64(FNV_OFFSET_BASIS, b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a64(FNV_OFFSET_BASIS, b"foobar"), 0x8594_4171_f739_67e8);
}

#[test]
fn jitter_is_deterministic_bounded_and_varies() {
    let mut s = every(secs(3_600));
    s.jitter = secs(60);
    let slot = utc(2026, 1, 1, 0, 0, 0);
    let j = s.jitter_for("task-1", slot);
    assert_eq!(j, s.jitter_for("task-1", slot));
    // Pinned so a change to the hash (which would move every replica's
    // jitter in a mixed-version rollout) is noticed.
    assert_eq!(j, JITTER_GOLDEN);
    let mut distinct = std::collections::BTreeSet::new();
    for i in 0..200 {
        let slot = slot + TimeDelta::hours(i);
        let j = s.jitter_for("task-1", slot);
        assert!(j < s.jitter);
        distinct.insert(j);
    }
    assert!(
        distinct.len() > 190,
        "only {} distinct values",
        distinct.len()
    );
    assert_ne!(s.jitter_for("task-1", slot), s.jitter_for("task-2", slot));
    s.jitter = Duration::ZERO;
    assert_eq!(s.jitter_for("task-1", slot), Duration::ZERO);
    s.jitter = Duration::from_nanos(1);
    assert_eq!(s.jitter_for("task-1", slot), Duration::ZERO);
}

// Cross-checked against an independent Python implementation of the same
// FNV-1a + fmix64 + multiply-shift recipe.
const JITTER_GOLDEN: Duration = Duration::from_nanos(16_394_617_363);

// ---- validation --------------------------------------------------------

#[test]
fn valid_inputs_build_schedules() {
    let start = utc(2026, 1, 1, 0, 0, 0);
    let s = Schedule::from_input(
        ScheduleInput {
            every: Some(secs(60)),
            jitter: secs(59),
            start_at: Some(start),
            end_at: Some(start + TimeDelta::days(1)),
            max_runs: 3,
            ..ScheduleInput::default()
        },
        &limits(),
    )
    .expect("valid");
    assert_eq!(s.cadence, Cadence::Every(secs(60)));
    assert_eq!(s.time_zone, Tz::UTC);
    assert_eq!(s.max_runs, Some(3));
    let s = Schedule::from_input(
        ScheduleInput {
            cron: Some("0 9 * * *".to_owned()),
            every: None,
            time_zone: "America/New_York".to_owned(),
            jitter: secs(3_600),
            ..ScheduleInput::default()
        },
        &limits(),
    )
    .expect("valid");
    assert_eq!(s.time_zone, New_York);
    assert_eq!(s.max_runs, None);
    assert_eq!(
        s.cadence,
        Cadence::Cron(CronCadence::parse("0 9 * * *").expect("valid"))
    );
    // A blank cron string is "unset", as proto3 sends it.
    let s = Schedule::from_input(
        ScheduleInput {
            cron: Some(String::new()),
            ..input_every(secs(60))
        },
        &limits(),
    )
    .expect("valid");
    assert_eq!(s.cadence, Cadence::Every(secs(60)));
}

#[test]
fn validation_errors_name_their_field() {
    assert_eq!(field_of(ScheduleInput::default()), FIELD_SCHEDULE);
    // The every/cron choice is reported before anything else.
    assert_eq!(
        field_of(ScheduleInput {
            time_zone: "Nowhere/Special".to_owned(),
            ..ScheduleInput::default()
        }),
        FIELD_SCHEDULE
    );
    assert_eq!(
        field_of(ScheduleInput {
            cron: Some("* * * * *".to_owned()),
            ..input_every(secs(60))
        }),
        FIELD_SCHEDULE
    );
    assert_eq!(field_of(input_every(Duration::ZERO)), FIELD_EVERY);
    assert_eq!(field_of(input_every(secs(9))), FIELD_EVERY);
    assert_eq!(field_of(input_every(MAX_EVERY + secs(1))), FIELD_EVERY);
    assert!(Schedule::from_input(input_every(MAX_EVERY), &limits()).is_ok());
    assert_eq!(field_of(input_cron("0 0 * *")), FIELD_CRON);
    assert_eq!(field_of(input_cron("0 0 0 * * * 2030")), FIELD_CRON);
    assert_eq!(field_of(input_cron("@reboot")), FIELD_CRON);
    assert_eq!(field_of(input_cron("0 0 30 2 *")), FIELD_CRON);
    let err = Schedule::from_input(input_cron("61 * * * *"), &limits()).expect_err("invalid");
    assert_eq!(err.field, FIELD_CRON);
    assert_eq!(err.reason, r#"minute field "61" is out of range 0-59"#);
    assert_eq!(
        err.to_string(),
        format!("spec.schedule.cron: {}", err.reason)
    );
    assert_eq!(
        field_of(ScheduleInput {
            time_zone: "Mars/Olympus_Mons".to_owned(),
            ..input_every(secs(60))
        }),
        FIELD_TIME_ZONE
    );
    assert_eq!(
        field_of(ScheduleInput {
            jitter: secs(60),
            ..input_every(secs(60))
        }),
        FIELD_JITTER
    );
    assert_eq!(
        field_of(ScheduleInput {
            jitter: MAX_CRON_JITTER + secs(1),
            ..input_cron("0 9 * * *")
        }),
        FIELD_JITTER
    );
    assert_eq!(
        field_of(ScheduleInput {
            jitter: secs(300),
            ..input_cron("*/5 * * * *")
        }),
        FIELD_JITTER
    );
    assert!(
        Schedule::from_input(
            ScheduleInput {
                jitter: secs(299),
                ..input_cron("*/5 * * * *")
            },
            &limits()
        )
        .is_ok()
    );
    let start = utc(2026, 1, 1, 0, 0, 0);
    assert_eq!(
        field_of(ScheduleInput {
            start_at: Some(start),
            end_at: Some(start),
            ..input_every(secs(60))
        }),
        FIELD_END_AT
    );
}

// ---- cron error messages --------------------------------------------

fn cron_error(pattern: &str) -> String {
    // Not `expect_err`: a parsed pattern's Debug runs to thousands of lines.
    match CronCadence::parse(pattern) {
        Ok(_) => panic!("{pattern:?} should be rejected"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn cron_errors_name_the_field_the_value_and_the_range() {
    assert_eq!(
        cron_error("*/15 25 * * MON-FRI"),
        r#"spec.schedule.cron: hour field "25" is out of range 0-23"#
    );
    // Each field of a 5-field pattern, by its position.
    let five = [
        ("60 * * * *", r#"minute field "60" is out of range 0-59"#),
        ("0 0-24 * * *", r#"hour field "0-24" is out of range 0-23"#),
        (
            "0 0 0 * *",
            r#"day of month field "0" is out of range 1-31"#,
        ),
        (
            "0 0 1,32 * *",
            r#"day of month field "1,32" is out of range 1-31"#,
        ),
        ("0 0 * 13 *", r#"month field "13" is out of range 1-12"#),
        ("0 0 * * 8", r#"day of week field "8" is out of range 0-7"#),
        (
            "0 0 * * 8L",
            r#"day of week field "8L" is out of range 0-7"#,
        ),
        (
            "0 0 32W * *",
            r#"day of month field "32W" is out of range 1-31"#,
        ),
    ];
    // A 6-field pattern starts with seconds, so the names shift by one.
    let six = [
        ("61 * * * * *", r#"seconds field "61" is out of range 0-59"#),
        ("0 61 * * * *", r#"minute field "61" is out of range 0-59"#),
        ("0 0 24 * * *", r#"hour field "24" is out of range 0-23"#),
    ];
    for (pattern, reason) in five.into_iter().chain(six) {
        assert_eq!(
            cron_error(pattern),
            format!("spec.schedule.cron: {reason}"),
            "{pattern}"
        );
    }
}

#[test]
fn cron_errors_explain_what_is_not_a_range_problem() {
    assert_eq!(
        cron_error("0 17-9 * * *"),
        r#"spec.schedule.cron: hour field "17-9" has a range whose start is after its end"#
    );
    let stepped = cron_error("*/0 * * * *");
    assert!(
        stepped.starts_with(r#"spec.schedule.cron: minute field "*/0" is not valid: "#),
        "{stepped}"
    );
    assert!(stepped.contains("Step cannot be zero"), "{stepped}");
    let letters = cron_error("0 x * * *");
    assert!(
        letters.starts_with(r#"spec.schedule.cron: hour field "x" contains a character"#),
        "{letters}"
    );
    assert_eq!(
        cron_error("@sometimes"),
        "spec.schedule.cron: unknown nickname \"@sometimes\" \
         (use one of @yearly, @annually, @monthly, @weekly, @daily, @hourly)"
    );
    // Names in any case are accepted, and a backwards named range is
    // reported as such.
    assert!(CronCadence::parse("0 9 * jan-mar mon-fri").is_ok());
    assert_eq!(
        cron_error("0 9 * * FRI-MON"),
        r#"spec.schedule.cron: day of week field "FRI-MON" has a range whose start is after its end"#
    );
}
