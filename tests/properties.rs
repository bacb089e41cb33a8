//! Property tests of the schedule maths: cron parsing and interval
//! arithmetic never panic whatever the input, and every schedule that
//! validation accepts yields strictly increasing slots inside its window.
//! The spec conversion properties (no panic on any proto spec, round trip
//! of valid specs) live next to the private conversion they need, in
//! `src/api/convert/tests.rs`.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use proptest::{prelude::*, test_runner::FileFailurePersistence};
use recur::scheduler::schedule::{
    Cadence, CronCadence, Limits, MAX_EVERY, Schedule, ScheduleInput,
};

/// Cases per property: enough to find edge cases on each run, few enough
/// that the file runs in a few seconds in a debug build.
const CASES: u32 = 256;

/// Slots walked from each starting point.
const SLOTS_WALKED: usize = 16;

/// Cron slots exist in [1900, 4000); instants a little outside that test
/// the edges without leaving it entirely.
const CRON_EPOCH_MIN: i64 = -2_300_000_000;
const CRON_EPOCH_MAX: i64 = 64_100_000_000;

// Strategies are boxed: unboxed, their nested value trees make stack
// frames big enough to overflow a test thread's stack in a debug build.

fn limits() -> Limits {
    Limits {
        min_interval: Duration::from_secs(1),
    }
}

/// Any instant chrono can represent, leap-second representations included.
fn any_instant() -> BoxedStrategy<DateTime<Utc>> {
    let (min, max) = (
        DateTime::<Utc>::MIN_UTC.timestamp(),
        DateTime::<Utc>::MAX_UTC.timestamp(),
    );
    prop_oneof![
        (min..=max, 0u32..2_000_000_000),
        (CRON_EPOCH_MIN..CRON_EPOCH_MAX, 0u32..1_000_000_000),
        (0i64..4_000_000_000, 0u32..1_000_000_000),
    ]
    .prop_filter_map("not a chrono instant", |(secs, nanos)| {
        DateTime::from_timestamp(secs, nanos)
    })
    .boxed()
}

/// An instant in the years cron schedules live in.
fn plausible_instant() -> BoxedStrategy<DateTime<Utc>> {
    (0i64..4_000_000_000, 0u32..1_000_000_000)
        .prop_filter_map("not a chrono instant", |(secs, nanos)| {
            DateTime::from_timestamp(secs, nanos)
        })
        .boxed()
}

/// Any `Duration`, down to zero and up to `u64::MAX` seconds.
fn any_duration() -> BoxedStrategy<Duration> {
    prop_oneof![
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        (0u64..100_000, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        (0u64..=MAX_EVERY.as_secs()).prop_map(Duration::from_secs),
    ]
    .boxed()
}

/// One cron field: mostly the shapes people write, sometimes nonsense.
fn cron_field() -> BoxedStrategy<String> {
    prop_oneof![
        4 => Just("*".to_string()),
        4 => "[0-9]{1,2}",
        2 => "[0-9]{1,2}-[0-9]{1,2}",
        2 => "\\*/[0-9]{1,2}",
        1 => "[0-9]{1,2}-[0-9]{1,2}/[0-9]{1,2}",
        2 => "[0-9]{1,2}(,[0-9]{1,2}){1,3}",
        1 => "(MON|tue|FRI|SUN|JAN|dec|L|[0-9]L|[0-7]#[0-6]|[0-9]{1,2}W|\\?|MON-FRI|\\+MON)",
        1 => "[ -~]{1,4}",
    ]
    .boxed()
}

/// A field with every number inside `low..=high`: what a valid pattern is
/// made of, so that a good share of generated patterns parse.
fn field_in(low: u32, high: u32) -> BoxedStrategy<String> {
    let value = low..=high;
    let ordered = (value.clone(), value.clone()).prop_map(|(a, b)| (a.min(b), a.max(b)));
    prop_oneof![
        3 => Just("*".to_string()),
        3 => value.clone().prop_map(|v| v.to_string()),
        2 => ordered.clone().prop_map(|(a, b)| format!("{a}-{b}")),
        2 => (1..=high).prop_map(|step| format!("*/{step}")),
        1 => (ordered, 1..=high).prop_map(|((a, b), step)| format!("{a}-{b}/{step}")),
        2 => prop::collection::vec(value, 2..4).prop_map(|values| {
            values.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
        }),
    ]
    .boxed()
}

/// Minute to day of week, each in range (the pattern may still never
/// match, e.g. February 30th).
fn five_valid_fields() -> BoxedStrategy<String> {
    let day_of_month = prop_oneof![
        6 => field_in(1, 31),
        1 => "(L|[1-9]W|1[0-9]W)",
    ];
    let day_of_week = prop_oneof![
        6 => field_in(0, 7),
        1 => "(MON-FRI|sun|SAT,SUN|[0-6]L|[0-6]#[1-5])",
    ];
    (
        field_in(0, 59),
        field_in(0, 23),
        day_of_month,
        field_in(1, 12),
        day_of_week,
    )
        .prop_map(|(mi, h, d, mo, w)| format!("{mi} {h} {d} {mo} {w}"))
        .boxed()
}

/// A 5-field or 6-field pattern with every field in range.
fn valid_cron_text() -> BoxedStrategy<String> {
    prop_oneof![
        3 => five_valid_fields(),
        1 => (field_in(0, 59), five_valid_fields()).prop_map(|(s, rest)| format!("{s} {rest}")),
    ]
    .boxed()
}

/// Cron text: valid patterns, plausible but often wrong field lists,
/// nicknames, and arbitrary strings.
fn cron_text() -> BoxedStrategy<String> {
    prop_oneof![
        5 => valid_cron_text(),
        3 => prop::collection::vec(cron_field(), 5..=6).prop_map(|f| f.join(" ")),
        1 => prop::collection::vec(cron_field(), 0..=8).prop_map(|f| f.join(" ")),
        1 => "@(yearly|annually|monthly|weekly|daily|hourly|reboot|[a-z]{0,6})",
        1 => any::<String>(),
    ]
    .boxed()
}

fn time_zone() -> BoxedStrategy<String> {
    prop_oneof![
        Just(String::new()),
        Just("UTC".to_string()),
        Just("Europe/Berlin".to_string()),
        Just("America/New_York".to_string()),
        // Half-hour DST shift, and a zone that skipped a whole day (2011).
        Just("Australia/Lord_Howe".to_string()),
        Just("Pacific/Apia".to_string()),
        any::<String>(),
    ]
    .boxed()
}

/// Raw schedule input as the API layer would hand it over.
fn schedule_input() -> BoxedStrategy<ScheduleInput> {
    let cadence = prop_oneof![
        3 => any_duration().prop_map(|d| (Some(d), None)),
        3 => cron_text().prop_map(|c| (None, Some(c))),
        1 => (any_duration(), cron_text()).prop_map(|(d, c)| (Some(d), Some(c))),
        1 => Just((None, None)),
    ];
    let jitter = prop_oneof![
        4 => Just(Duration::ZERO),
        1 => (0u64..120).prop_map(Duration::from_secs),
        1 => any_duration(),
    ];
    (
        cadence,
        time_zone(),
        jitter,
        prop::option::of(plausible_instant()),
        prop::option::of(plausible_instant()),
        any::<u64>(),
    )
        .prop_map(
            |((every, cron), time_zone, jitter, start_at, end_at, max_runs)| ScheduleInput {
                every,
                cron,
                time_zone,
                jitter,
                start_at,
                end_at,
                max_runs,
            },
        )
        .boxed()
}

/// A schedule built directly, without validation, so the maths sees inputs
/// (zero or huge intervals, far-off instants) that validation would refuse.
fn unvalidated_schedule() -> BoxedStrategy<Schedule> {
    let cadence = prop_oneof![
        any_duration().prop_map(Cadence::Every),
        cron_text().prop_filter_map("cron refused", |text| {
            CronCadence::parse(&text).ok().map(Cadence::Cron)
        }),
    ];
    let tz = prop_oneof![
        Just(Tz::UTC),
        Just(Tz::America__New_York),
        Just(Tz::Australia__Lord_Howe),
        Just(Tz::Pacific__Apia),
    ];
    (
        cadence,
        tz,
        any_duration(),
        prop::option::of(any_instant()),
        prop::option::of(any_instant()),
    )
        .prop_map(|(cadence, time_zone, jitter, start_at, end_at)| Schedule {
            cadence,
            time_zone,
            jitter,
            start_at,
            end_at,
            max_runs: None,
        })
        .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: CASES,
        // Next to this file: an integration test has no lib.rs for the
        // default location to be found from.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    /// Whatever the text, parsing returns: a pattern or an error naming
    /// `spec.schedule.cron`.
    #[test]
    fn cron_parsing_never_panics(text in cron_text()) {
        if let Err(e) = CronCadence::parse(&text) {
            prop_assert_eq!(e.field, "spec.schedule.cron");
            prop_assert!(!e.reason.is_empty());
        }
    }

    /// Validation of any input returns, and an error names a schedule field.
    #[test]
    fn schedule_validation_never_panics(input in schedule_input()) {
        if let Err(e) = Schedule::from_input(input, &limits()) {
            prop_assert!(e.field.starts_with("spec.schedule"), "{}", e);
        }
    }

    /// Slot maths on unvalidated schedules and any instants returns (maybe
    /// None) instead of panicking or overflowing.
    #[test]
    fn slot_maths_never_panics(
        schedule in unvalidated_schedule(),
        created in any_instant(),
        after in any_instant(),
        now in any_instant(),
    ) {
        let _ = schedule.next_slot_after(created, after);
        // Cron catch-up enumerates the slots it passes over (up to a cap);
        // keep that span short so the property stays fast.
        let now = match schedule.cadence {
            Cadence::Cron(_) => after
                .checked_add_signed(TimeDelta::hours(1))
                .map_or(now, |bound| now.min(bound)),
            Cadence::Every(_) => now,
        };
        let _ = schedule.latest_due_slot(created, after, now);
        let jitter = schedule.jitter_for("task", after);
        prop_assert!(jitter.is_zero() || jitter < schedule.jitter);
    }

    /// Every accepted schedule yields strictly increasing slots, none before
    /// start_at nor after end_at, from any starting point.
    #[test]
    fn accepted_schedules_yield_strictly_increasing_slots(
        input in schedule_input(),
        created in plausible_instant(),
        from in any_instant(),
    ) {
        let Ok(schedule) = Schedule::from_input(input, &limits()) else {
            return Ok(());
        };
        let mut after = from;
        for _ in 0..SLOTS_WALKED {
            let Some(slot) = schedule.next_slot_after(created, after) else {
                break;
            };
            prop_assert!(slot > after, "{slot} does not follow {after}");
            if let Some(start) = schedule.start_at {
                prop_assert!(slot >= start, "{slot} before start_at {start}");
            }
            if let Some(end) = schedule.end_at {
                prop_assert!(slot <= end, "{slot} after end_at {end}");
            }
            let jittered = schedule.jitter_for("task", slot);
            prop_assert!(jittered.is_zero() || jittered < schedule.jitter);
            after = slot;
        }
    }

    /// An interval's next slot lies on its grid and is the first grid point
    /// after the given instant: anchored, never "now + every".
    #[test]
    fn interval_slots_are_the_next_grid_point(
        every_secs in 1u64..=MAX_EVERY.as_secs(),
        every_nanos in 0u32..1_000_000_000,
        start_at in prop::option::of(plausible_instant()),
        created in plausible_instant(),
        after in plausible_instant(),
    ) {
        let every = Duration::new(every_secs, every_nanos).min(MAX_EVERY);
        let input = ScheduleInput { every: Some(every), start_at, ..ScheduleInput::default() };
        let schedule = Schedule::from_input(input, &limits()).expect("a valid interval");
        let Some(slot) = schedule.next_slot_after(created, after) else {
            return Ok(());
        };
        let nanos = |t: DateTime<Utc>| {
            i128::from(t.timestamp()) * 1_000_000_000 + i128::from(t.timestamp_subsec_nanos())
        };
        let step = every.as_nanos() as i128;
        let (origin, first) = match start_at {
            Some(start) => (nanos(start), 0),
            None => (nanos(created), 1),
        };
        let offset = nanos(slot) - origin;
        prop_assert_eq!(offset % step, 0, "off the grid");
        let index = offset / step;
        prop_assert!(index >= first);
        prop_assert!(nanos(slot) > nanos(after));
        prop_assert!(
            index == first || nanos(slot) - step <= nanos(after),
            "a grid point between {} and {} was skipped", after, slot
        );
    }

    /// Catch-up picks a slot in (after, now]; with nothing skipped it is the
    /// very next slot, otherwise a later one.
    #[test]
    fn latest_due_slot_agrees_with_next_slot_after(
        input in schedule_input(),
        created in plausible_instant(),
        after in plausible_instant(),
        span_secs in 0i64..200_000,
    ) {
        let Ok(schedule) = Schedule::from_input(input, &limits()) else {
            return Ok(());
        };
        // Cron catch-up enumerates what it skips: an hour keeps a
        // per-second pattern fast.
        let span_secs = match schedule.cadence {
            Cadence::Cron(_) => span_secs.min(3_600),
            Cadence::Every(_) => span_secs,
        };
        let Some(now) = after.checked_add_signed(TimeDelta::seconds(span_secs)) else {
            return Ok(());
        };
        let Some((slot, skipped)) = schedule.latest_due_slot(created, after, now) else {
            if let Some(next) = schedule.next_slot_after(created, after) {
                prop_assert!(next > now, "{next} was due by {now} but not returned");
            }
            return Ok(());
        };
        prop_assert!(slot > after && slot <= now, "{slot} outside ({after}, {now}]");
        let next = schedule.next_slot_after(created, after);
        if skipped == 0 {
            prop_assert_eq!(next, Some(slot));
        } else {
            prop_assert!(next.is_some_and(|n| n < slot), "{next:?} vs {slot}");
        }
    }
}
