//! Schedule maths for recur: validating a task's schedule and working out its
//! nominal slots (fixed-interval grids and cron patterns in a time zone),
//! catch-up after a stall, and deterministic per-slot jitter.
//!
//! This module is pure: it never reads the clock and does no I/O. Every
//! instant it needs (`created_at`, `after`, `now`) is passed in, so the same
//! inputs give the same answer on every replica and in every test.
//!
//! Cron daylight-saving behaviour follows Vixie cron. A job whose second,
//! minute and hour fields contain no `*` is "fixed-time": a local time skipped
//! by a spring-forward gap fires once at the first instant after the gap, and a
//! local time repeated by a fall-back fires once, on its first occurrence.
//! Every other job is an "interval" job: it fires at each real instant whose
//! local wall-clock time matches, so it runs in both copies of a repeated hour
//! and simply has no runs inside a gap. croner 4 applies the fixed-time rules
//! only when each of those fields is a single value (so `0 2,14 * * *` would
//! skip its 02:00 run on spring-forward day and `0 1,13 * * *` would run twice
//! on fall-back day); this module therefore resolves fixed-time jobs itself,
//! using croner only as a wall-clock matcher, and leaves interval jobs to
//! croner's real-time search, which already has the wanted behaviour.

use std::time::Duration;

use chrono::{DateTime, MappedLocalTime, NaiveDateTime, SecondsFormat, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// Field path for errors about the schedule as a whole (the every/cron choice).
pub const FIELD_SCHEDULE: &str = "spec.schedule";
/// Field path for errors about the fixed interval.
pub const FIELD_EVERY: &str = "spec.schedule.every";
/// Field path for errors about the cron expression.
pub const FIELD_CRON: &str = "spec.schedule.cron";
/// Field path for errors about the IANA time zone name.
pub const FIELD_TIME_ZONE: &str = "spec.schedule.time_zone";
/// Field path for errors about the jitter.
pub const FIELD_JITTER: &str = "spec.schedule.jitter";
/// Field path for errors about the end of the schedule window.
pub const FIELD_END_AT: &str = "spec.schedule.end_at";

/// The longest accepted `every`: 100 Julian years (36,525 days). Anything
/// longer is almost certainly a unit mistake, and the cap keeps grid maths far
/// from the edges of chrono's range.
pub const MAX_EVERY: Duration = Duration::from_secs(36_525 * 86_400);

/// The largest jitter accepted for a cron schedule. A cron job's slots are not
/// evenly spaced, so "less than the interval" has no single meaning; an hour
/// spreads load well without moving a daily job noticeably. The jitter must
/// also be shorter than the tightest gap between consecutive slots (see
/// [`Schedule::from_input`]).
pub const MAX_CRON_JITTER: Duration = Duration::from_secs(3_600);

/// [`Schedule::latest_due_slot`] stops counting passed-over cron slots here so
/// that a long stall of a per-second pattern is bounded work: firing plans a
/// whole batch of due slots on a runtime worker, and a day-long stall of a
/// thousand per-second tasks must not cost 86 million cron steps there. The
/// latest slot itself is found directly; only the count saturates (the
/// catch-up warning says "skipped" with this value as a floor). Interval
/// counts are exact (they are computed arithmetically) and only saturate at
/// `u64::MAX`.
pub const SKIPPED_COUNT_CAP: u64 = 1_000;

/// Cron slots are only produced in `[1900-01-01, 4000-01-01)` UTC. croner
/// refuses to search past the year 5000, and staying well inside both bounds
/// keeps local-time conversions away from chrono's limits, where they panic.
const CRON_DOMAIN_START_UNIX: i64 = -2_208_988_800;
const CRON_DOMAIN_END_UNIX: i64 = 64_060_588_800;

/// A fixed reference instant (2001-01-01T00:00:00Z) for validation-time
/// sampling, so validation never depends on the clock.
const VALIDATION_REFERENCE_UNIX: i64 = 978_307_200;

/// How many consecutive cron slots validation samples to find the tightest gap
/// between slots, which bounds the jitter.
const JITTER_GAP_SAMPLES: usize = 64;

/// Bound on the naive matches a fixed-time search may pass over inside a
/// repeated (fall-back) range before giving up. A per-second fixed-time
/// pattern across a whole repeated day needs 86,400.
const MAX_FOLD_SKIPS: u32 = 200_000;

/// Bound on the one-minute probes used to find the end of a spring-forward
/// gap. The longest real gap (Samoa skipping 2011-12-30) is 24 hours.
const MAX_GAP_MINUTES: u32 = 48 * 60;

const NANOS_PER_SEC: i128 = 1_000_000_000;

/// `d` as people write it: "5s", "1m30s", "2h", "1d", "250ms".
pub fn short_duration(d: Duration) -> String {
    let total = d.as_secs();
    let millis = d.subsec_millis();
    if total == 0 {
        return format!("{millis}ms");
    }
    let mut out = String::new();
    let (days, rest) = (total / 86_400, total % 86_400);
    let (hours, rest) = (rest / 3_600, rest % 3_600);
    let (minutes, seconds) = (rest / 60, rest % 60);
    for (n, unit) in [(days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    if millis > 0 {
        out.push_str(&format!("{millis}ms"));
    }
    out
}

/// A validated schedule. Times are UTC instants; `time_zone` only affects cron.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// How often the task fires.
    pub cadence: Cadence,
    /// Zone in which cron patterns are evaluated; ignored for `Every`.
    pub time_zone: Tz,
    /// Upper bound (exclusive) of the per-slot delay from [`Schedule::jitter_for`].
    pub jitter: Duration,
    /// No slot is earlier than this. For `Every` it is also the grid origin
    /// and the first slot.
    pub start_at: Option<DateTime<Utc>>,
    /// No slot is later than this (a slot exactly at `end_at` still fires).
    pub end_at: Option<DateTime<Utc>>,
    /// Carried for the runner, which counts runs; not enforced here.
    pub max_runs: Option<u64>,
}

/// How often a task fires.
#[derive(Debug, Clone, PartialEq)]
pub enum Cadence {
    /// A fixed grid of instants `every` apart (see [`Schedule::next_slot_after`]).
    Every(Duration),
    /// A cron pattern evaluated in the schedule's time zone.
    Cron(CronCadence),
}

/// A parsed cron pattern together with the text it came from.
///
/// Equality compares the source text only: croner's parsed form carries no
/// extra meaning, and the text is what the API stores and returns.
#[derive(Debug, Clone)]
pub struct CronCadence {
    source: String,
    // Boxed because croner's parsed form is large and `Cadence` would
    // otherwise carry that size for every `Every` too.
    cron: Box<Cron>,
    fixed_time: bool,
}

/// The raw, unvalidated inputs (what the API layer hands over).
#[derive(Debug, Clone, Default)]
pub struct ScheduleInput {
    /// Fixed interval; exactly one of `every` and `cron` must be set.
    pub every: Option<Duration>,
    /// Cron pattern (5 fields, or 6 with seconds first). An empty or blank
    /// string counts as unset, since that is how proto3 sends "no value".
    pub cron: Option<String>,
    /// IANA zone name such as `Europe/Paris`; empty means UTC.
    pub time_zone: String,
    /// Maximum random-looking delay added to each slot; zero disables it.
    pub jitter: Duration,
    /// See [`Schedule::start_at`].
    pub start_at: Option<DateTime<Utc>>,
    /// See [`Schedule::end_at`].
    pub end_at: Option<DateTime<Utc>>,
    /// Maximum number of runs; 0 means unlimited.
    pub max_runs: u64,
}

/// Service-wide limits applied during validation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// The smallest `every` accepted (zero is always rejected).
    pub min_interval: Duration,
}

/// A validation failure, naming the protobuf field path at fault.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{field}: {reason}")]
pub struct ScheduleError {
    /// Protobuf field path, one of the `FIELD_*` constants.
    pub field: &'static str,
    /// Human-readable explanation.
    pub reason: String,
}

impl ScheduleError {
    fn new(field: &'static str, reason: impl Into<String>) -> Self {
        ScheduleError {
            field,
            reason: reason.into(),
        }
    }
}

impl PartialEq for CronCadence {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl CronCadence {
    /// Parses a cron pattern: 5 fields (minute hour day-of-month month
    /// day-of-week), 6 fields with seconds first, or a nickname such as
    /// `@daily`. Patterns that can never fire (such as `0 0 30 2 *`) are
    /// rejected. Errors name [`FIELD_CRON`].
    pub fn parse(source: &str) -> Result<CronCadence, ScheduleError> {
        let trimmed = source.trim();
        // croner's own message for a wrong field count talks about years,
        // which this service does not offer, so count the fields here first.
        if !trimmed.starts_with('@') {
            let fields = trimmed.split_whitespace().count();
            if fields != 5 && fields != 6 {
                return Err(ScheduleError::new(
                    FIELD_CRON,
                    format!(
                        "expected 5 fields (minute hour day-of-month month day-of-week) \
                         or 6 fields (second first), got {fields}"
                    ),
                ));
            }
        }
        let cron = cron_parser()
            .parse(trimmed)
            .map_err(|e| ScheduleError::new(FIELD_CRON, explain_cron_error(trimmed, &e)))?;
        let pattern = &cron.pattern;
        // Vixie cron's rule: a job is tied to a wall-clock time of day unless
        // its time-of-day fields use `*`. croner's `from_wildcard` is set when
        // any comma-separated part of the field is `*` or `*/n`.
        let fixed_time = !(pattern.seconds.from_wildcard
            || pattern.minutes.from_wildcard
            || pattern.hours.from_wildcard);
        let cadence = CronCadence {
            // Trimmed, so specs that differ only in surrounding blanks compare equal.
            source: trimmed.to_owned(),
            cron: Box::new(cron),
            fixed_time,
        };
        let reference = DateTime::from_timestamp(VALIDATION_REFERENCE_UNIX, 0);
        if reference
            .and_then(|r| cadence.next_after(Tz::UTC, r))
            .is_none()
        {
            return Err(ScheduleError::new(
                FIELD_CRON,
                "cron expression never matches a real date",
            ));
        }
        Ok(cadence)
    }

    /// The pattern text as given, without surrounding blanks.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The parsed croner pattern.
    #[cfg(test)]
    pub fn cron(&self) -> &Cron {
        &self.cron
    }

    /// Whether the pattern is tied to fixed wall-clock times (no `*` in its
    /// second, minute or hour field), which selects the Vixie DST rules
    /// described in the module docs.
    #[cfg(test)]
    pub fn is_fixed_time(&self) -> bool {
        self.fixed_time
    }

    /// First slot strictly after `after`, ignoring start/end bounds.
    fn next_after(&self, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let (domain_start, domain_end) = cron_domain()?;
        // Slots are whole seconds, so "after x.5s" equals "after x s"; working
        // in whole seconds keeps croner (which drops sub-seconds) exact.
        let after = floor_to_second(after.max(domain_start))?;
        if after >= domain_end {
            return None;
        }
        let slot = if self.fixed_time {
            self.next_fixed_time(tz, after)?
        } else {
            self.cron
                .find_next_occurrence(&after.with_timezone(&tz), false)
                .ok()?
                .with_timezone(&Utc)
        };
        (slot < domain_end).then_some(slot)
    }

    /// Latest slot at or before `upper`, ignoring start/end bounds.
    fn latest_at_or_before(&self, tz: Tz, upper: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let (domain_start, domain_end) = cron_domain()?;
        let last = domain_end.checked_sub_signed(TimeDelta::seconds(1))?;
        let upper = floor_to_second(upper.min(last))?;
        if upper < domain_start {
            return None;
        }
        let slot = if self.fixed_time {
            self.latest_fixed_time(tz, upper)?
        } else {
            self.cron
                .find_previous_occurrence(&upper.with_timezone(&tz), true)
                .ok()?
                .with_timezone(&Utc)
        };
        (slot >= domain_start).then_some(slot)
    }

    // Fixed-time slots are the images of the pattern's wall-clock matches
    // under `fire_instant`, which never decreases as wall-clock time
    // increases. So walking the wall-clock matches in order and taking the
    // first image past `after` gives the next slot; images that are not past
    // it only occur inside a repeated range (or when gap-shifted runs
    // coincide), hence the bounded skip loop.
    fn next_fixed_time(&self, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut cursor = after.with_timezone(&tz).naive_local();
        for _ in 0..MAX_FOLD_SKIPS {
            let local = self.cron.find_next_occurrence(&cursor, false).ok()?;
            let slot = fire_instant(tz, local)?;
            if slot > after {
                return Some(slot);
            }
            cursor = local;
        }
        None
    }

    fn latest_fixed_time(&self, tz: Tz, upper: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = upper.with_timezone(&tz).naive_local();
        // When `upper` is the second copy of a repeated local time, the first
        // copies of the rest of the repeated range are already in the past,
        // so the backward walk starts that much later on the wall clock.
        let start = match tz.from_local_datetime(&local) {
            MappedLocalTime::Ambiguous(earlier, later) if upper > earlier.with_timezone(&Utc) => {
                local.checked_add_signed(later.signed_duration_since(earlier))?
            }
            _ => local,
        };
        let mut cursor = start;
        let mut inclusive = true;
        for _ in 0..MAX_FOLD_SKIPS {
            let local = self
                .cron
                .find_previous_occurrence(&cursor, inclusive)
                .ok()?;
            let slot = fire_instant(tz, local)?;
            if slot <= upper {
                return Some(slot);
            }
            cursor = local;
            inclusive = false;
        }
        None
    }
}

fn cron_parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

/// Names, in order, and accepted numeric ranges of the fields of a 6-field
/// pattern; a 5-field pattern is the same without the first.
const CRON_FIELDS: [(&str, u32, u32); 6] = [
    ("seconds", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
];

/// Nicknames croner expands; listed so an unknown one gets a useful error.
const CRON_NICKNAMES: [&str; 6] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@hourly",
];

/// Turns croner's error, which names neither field nor value ("Component
/// error: Number out of bounds."), into one that does, such as `hour field
/// "25" is out of range 0-23`. croner stops at the first bad field without
/// saying which, so each field is parsed again on its own, the others
/// replaced by `*`; the first that still fails is the one to blame. When no
/// single field fails alone, croner's own message is the best there is.
fn explain_cron_error(source: &str, error: &croner::errors::CronError) -> String {
    use croner::errors::CronError;

    if source.starts_with('@') {
        return format!(
            "unknown nickname {source:?} (use one of {})",
            CRON_NICKNAMES.join(", ")
        );
    }
    let fields: Vec<&str> = source.split_whitespace().collect();
    let names = &CRON_FIELDS[CRON_FIELDS.len().saturating_sub(fields.len())..];
    for (index, (text, (name, low, high))) in fields.iter().zip(names).enumerate() {
        let probe: Vec<&str> = (0..fields.len())
            .map(|i| if i == index { *text } else { "*" })
            .collect();
        let Err(field_error) = cron_parser().parse(&probe.join(" ")) else {
            continue;
        };
        return match field_error {
            CronError::ComponentError(detail) if detail.contains("out of bounds") => {
                if numbers_in_field(text).any(|n| n < *low || n > *high) {
                    format!("{name} field {text:?} is out of range {low}-{high}")
                } else {
                    format!("{name} field {text:?} has a range whose start is after its end")
                }
            }
            CronError::IllegalCharacters(_) => format!(
                "{name} field {text:?} contains a character that is not allowed \
                 (digits, names, * , - / everywhere; also L W ? in day of month, L # ? in day of week)"
            ),
            other => format!(
                "{name} field {text:?} is not valid: {}",
                croner_detail(&other)
            ),
        };
    }
    format!("invalid cron expression: {}", croner_detail(error))
}

/// The numbers a field names as values or range ends (not steps after `/`
/// nor the nth after `#`), for telling an out-of-range value from a range
/// that runs backwards. Names (MON, JAN) are never out of range.
fn numbers_in_field(text: &str) -> impl Iterator<Item = u32> + '_ {
    text.split(',')
        .filter_map(|part| part.split(['/', '#']).next())
        .flat_map(|values| values.split('-'))
        // A suffix does not hide the number: `8L` (last "eighth weekday")
        // and `32W` (weekday nearest the 32nd) are out of range too.
        .filter_map(|value| {
            value
                .trim_end_matches(|c: char| c.is_ascii_alphabetic())
                .parse::<u32>()
                .ok()
        })
}

/// croner's message without its variant prefix or final period, to fit in
/// the middle of a sentence.
fn croner_detail(error: &croner::errors::CronError) -> String {
    use croner::errors::CronError;

    let text = match error {
        CronError::InvalidPattern(detail)
        | CronError::IllegalCharacters(detail)
        | CronError::ComponentError(detail) => detail.clone(),
        other => other.to_string(),
    };
    text.trim_end_matches('.').to_string()
}

/// The instant a fixed-time job scheduled at wall-clock `local` fires: the
/// first copy of a repeated time, or the end of the gap for a skipped one.
fn fire_instant(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        MappedLocalTime::Single(t) | MappedLocalTime::Ambiguous(t, _) => {
            Some(t.with_timezone(&Utc))
        }
        MappedLocalTime::None => gap_end(tz, local),
    }
}

/// The first real instant after the spring-forward gap containing `local`.
/// chrono-tz exposes no transition table, so probe the wall clock a minute at
/// a time until it exists again, then bisect to the second (tz offsets are
/// whole seconds, so that is exact).
fn gap_end(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    let exists = |t: &NaiveDateTime| !matches!(tz.from_local_datetime(t), MappedLocalTime::None);
    let mut inside = local;
    let mut outside = None;
    for _ in 0..MAX_GAP_MINUTES {
        let probe = inside.checked_add_signed(TimeDelta::minutes(1))?;
        if exists(&probe) {
            outside = Some(probe);
            break;
        }
        inside = probe;
    }
    let mut outside = outside?;
    while outside.signed_duration_since(inside) > TimeDelta::seconds(1) {
        let half = outside.signed_duration_since(inside).num_seconds() / 2;
        let middle = inside.checked_add_signed(TimeDelta::seconds(half))?;
        if exists(&middle) {
            outside = middle;
        } else {
            inside = middle;
        }
    }
    match tz.from_local_datetime(&outside) {
        MappedLocalTime::Single(t) | MappedLocalTime::Ambiguous(t, _) => {
            Some(t.with_timezone(&Utc))
        }
        MappedLocalTime::None => None,
    }
}

fn cron_domain() -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    Some((
        DateTime::from_timestamp(CRON_DOMAIN_START_UNIX, 0)?,
        DateTime::from_timestamp(CRON_DOMAIN_END_UNIX, 0)?,
    ))
}

fn floor_to_second(t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    // `timestamp()` already floors towards minus infinity (chrono keeps the
    // sub-second part non-negative), so this is a floor for pre-1970 too.
    DateTime::from_timestamp(t.timestamp(), 0)
}

fn to_nanos(t: DateTime<Utc>) -> i128 {
    // Cannot overflow: |i64| * 1e9 + 2e9 is far below i128::MAX (~1.7e38).
    i128::from(t.timestamp()) * NANOS_PER_SEC + i128::from(t.timestamp_subsec_nanos())
}

fn from_nanos(nanos: i128) -> Option<DateTime<Utc>> {
    let secs = i64::try_from(nanos.div_euclid(NANOS_PER_SEC)).ok()?;
    let subsec = u32::try_from(nanos.rem_euclid(NANOS_PER_SEC)).ok()?;
    DateTime::from_timestamp(secs, subsec)
}

/// An `every` schedule's grid: slot `n` is `origin + n * step` for
/// `n >= first`, all in nanoseconds since the Unix epoch. i128 holds every
/// chrono instant and every `Duration`, and each step that could still
/// overflow is checked, so extreme inputs give `None` rather than a panic.
struct Grid {
    origin: i128,
    step: i128,
    first: i128,
}

impl Grid {
    fn new(
        every: Duration,
        start_at: Option<DateTime<Utc>>,
        created_at: DateTime<Utc>,
    ) -> Option<Grid> {
        let step = i128::try_from(every.as_nanos()).ok()?;
        if step <= 0 {
            return None;
        }
        Some(match start_at {
            // An explicit start is itself the first slot.
            Some(start) => Grid {
                origin: to_nanos(start),
                step,
                first: 0,
            },
            // Without one, the task fires one interval after it was created.
            None => Grid {
                origin: to_nanos(created_at),
                step,
                first: 1,
            },
        })
    }

    fn slot(&self, index: i128) -> Option<DateTime<Utc>> {
        from_nanos(index.checked_mul(self.step)?.checked_add(self.origin)?)
    }

    /// Index of the first slot strictly after `t`.
    fn first_index_after(&self, t: DateTime<Utc>) -> Option<i128> {
        let offset = to_nanos(t).checked_sub(self.origin)?;
        let index = offset.checked_div_euclid(self.step)?.checked_add(1)?;
        Some(index.max(self.first))
    }

    /// Index of the last grid point at or before `t` (may precede `first`).
    fn last_index_at_or_before(&self, t: DateTime<Utc>) -> Option<i128> {
        to_nanos(t)
            .checked_sub(self.origin)?
            .checked_div_euclid(self.step)
    }
}

impl Schedule {
    /// Validates API input. Checks, in order, each failing with its field:
    /// exactly one of every/cron ([`FIELD_SCHEDULE`]); the time zone is a
    /// known IANA name, empty meaning UTC ([`FIELD_TIME_ZONE`]); `every` is
    /// non-zero, at least `limits.min_interval` and at most [`MAX_EVERY`]
    /// ([`FIELD_EVERY`]); the cron expression parses and can fire
    /// ([`FIELD_CRON`]); the jitter is below `every`, or for cron at most
    /// [`MAX_CRON_JITTER`] and below the tightest gap between consecutive
    /// slots, sampled from a fixed reference date ([`FIELD_JITTER`]); and
    /// `end_at` is after `start_at` when both are set ([`FIELD_END_AT`]).
    pub fn from_input(input: ScheduleInput, limits: &Limits) -> Result<Schedule, ScheduleError> {
        let cron_text = input.cron.filter(|text| !text.trim().is_empty());
        let choice = match (input.every, cron_text) {
            (Some(every), None) => Ok(every),
            (None, Some(text)) => Err(text),
            _ => {
                return Err(ScheduleError::new(
                    FIELD_SCHEDULE,
                    "set exactly one of every or cron",
                ));
            }
        };
        let time_zone = parse_time_zone(&input.time_zone)?;
        let cadence = match choice {
            Ok(every) => Cadence::Every(validate_every(every, limits)?),
            Err(text) => Cadence::Cron(CronCadence::parse(&text)?),
        };
        // The zone only matters for cron; dropping it for an interval keeps
        // two specs that behave the same equal (idempotent registration).
        let time_zone = match cadence {
            Cadence::Every(_) => Tz::UTC,
            Cadence::Cron(_) => time_zone,
        };
        validate_jitter(&cadence, time_zone, input.jitter)?;
        if let (Some(start), Some(end)) = (input.start_at, input.end_at)
            && end <= start
        {
            return Err(ScheduleError::new(
                FIELD_END_AT,
                format!("end_at ({end}) must be after start_at ({start})"),
            ));
        }
        Ok(Schedule {
            cadence,
            time_zone,
            jitter: input.jitter,
            start_at: input.start_at,
            end_at: input.end_at,
            max_runs: (input.max_runs != 0).then_some(input.max_runs),
        })
    }

    /// First nominal slot strictly after `after`, given the task's
    /// `created_at`; `None` if it would be past `end_at`, if none exists, or
    /// on overflow.
    ///
    /// For `Every`, slots lie on the grid `origin + n * every`, where the
    /// origin is `start_at` (itself a slot) or else `created_at` (not a slot,
    /// so the first fire is `created_at + every`). The slot is found by
    /// integer division, so it is O(1) however old the origin, and a late
    /// `after` never shifts the grid. For `Cron`, `created_at` is unused and
    /// slots are at least `start_at`; cron slots exist only from 1900 up to
    /// (not including) the year 4000.
    pub fn next_slot_after(
        &self,
        created_at: DateTime<Utc>,
        after: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let slot = match &self.cadence {
            Cadence::Every(every) => {
                let grid = Grid::new(*every, self.start_at, created_at)?;
                grid.slot(grid.first_index_after(after)?)?
            }
            Cadence::Cron(cron) => cron.next_after(self.time_zone, self.cron_lower_bound(after))?,
        };
        match self.end_at {
            Some(end) if slot > end => None,
            _ => Some(slot),
        }
    }

    /// The schedule in words, the same for every client: "every 5s", or
    /// croner's reading of a cron pattern with its zone ("at 09:00, Monday
    /// through Friday (Europe/Berlin)"), then jitter and bounds.
    pub fn describe(&self) -> String {
        let mut out = match &self.cadence {
            Cadence::Every(every) => format!("every {}", short_duration(*every)),
            Cadence::Cron(cron) => {
                let words = cron.cron.describe();
                let words = words.trim_end_matches('.');
                let mut chars = words.chars();
                let first = chars.next().map(|c| c.to_lowercase().collect::<String>());
                format!(
                    "{}{} ({})",
                    first.unwrap_or_default(),
                    chars.as_str(),
                    self.time_zone.name()
                )
            }
        };
        if !self.jitter.is_zero() {
            out.push_str(&format!(", up to {} late (jitter)", short_duration(self.jitter)));
        }
        if let Some(start) = self.start_at {
            out.push_str(&format!(", from {}", start.to_rfc3339_opts(SecondsFormat::Secs, true)));
        }
        if let Some(end) = self.end_at {
            out.push_str(&format!(", until {}", end.to_rfc3339_opts(SecondsFormat::Secs, true)));
        }
        if let Some(max) = self.max_runs {
            out.push_str(&format!(", at most {max} run{}", if max == 1 { "" } else { "s" }));
        }
        out
    }

    /// The latest nominal slot `<= now` (and `<= end_at`) that is strictly
    /// after `after`, plus how many other slots in between were passed over:
    /// a stalled runner fires once, for the latest slot, and records the rest
    /// as skipped. `None` if no slot lies in `(after, now]`.
    ///
    /// For `Every` the count is exact (saturating at `u64::MAX`) and O(1).
    /// For `Cron` the skipped slots are enumerated, so the count stops at
    /// [`SKIPPED_COUNT_CAP`].
    pub fn latest_due_slot(
        &self,
        created_at: DateTime<Utc>,
        after: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<(DateTime<Utc>, u64)> {
        let upper = match self.end_at {
            Some(end) => now.min(end),
            None => now,
        };
        match &self.cadence {
            Cadence::Every(every) => {
                let grid = Grid::new(*every, self.start_at, created_at)?;
                let low = grid.first_index_after(after)?;
                let high = grid.last_index_at_or_before(upper)?;
                if high < low {
                    return None;
                }
                let skipped = u64::try_from(high.checked_sub(low)?).unwrap_or(u64::MAX);
                Some((grid.slot(high)?, skipped))
            }
            Cadence::Cron(cron) => {
                let lower = self.cron_lower_bound(after);
                let latest = cron.latest_at_or_before(self.time_zone, upper)?;
                if latest <= lower {
                    return None;
                }
                let mut skipped = 0;
                let mut cursor = lower;
                while skipped < SKIPPED_COUNT_CAP {
                    match cron.next_after(self.time_zone, cursor) {
                        Some(slot) if slot < latest => {
                            skipped += 1;
                            cursor = slot;
                        }
                        _ => break,
                    }
                }
                Some((latest, skipped))
            }
        }
    }

    /// Deterministic delay in `[0, jitter)` for one run of one task.
    ///
    /// Hashes the task id and the slot's Unix seconds and nanoseconds with
    /// FNV-1a 64 followed by the MurmurHash3 finaliser (FNV alone barely
    /// moves the high bits for inputs differing in their last bytes), then
    /// scales the hash into range by multiply-and-shift. Everything is
    /// written out here, so every replica and every Rust release computes the
    /// same value; std's `DefaultHasher` promises no such stability.
    pub fn jitter_for(&self, task_id: &str, slot: DateTime<Utc>) -> Duration {
        // Clamping to u64 nanoseconds (~584 years, far above anything
        // validation accepts) keeps the product below in u128.
        let span = self.jitter.as_nanos().min(u128::from(u64::MAX));
        if span == 0 {
            return Duration::ZERO;
        }
        let mut hash = fnv1a64(FNV_OFFSET_BASIS, task_id.as_bytes());
        // 0xFF never occurs in UTF-8, so the id and the slot cannot run into
        // each other ("a" + slot X never hashes like "a\u{..}" + slot Y).
        hash = fnv1a64(hash, &[0xFF]);
        hash = fnv1a64(hash, &slot.timestamp().to_le_bytes());
        hash = fnv1a64(hash, &slot.timestamp_subsec_nanos().to_le_bytes());
        let scaled = (u128::from(fmix64(hash)) * span) >> 64;
        // `scaled < span <= u64::MAX`, so the conversion cannot fail.
        Duration::from_nanos(u64::try_from(scaled).unwrap_or(0))
    }

    /// When `slot` of task `task_id` is due: the slot plus its jitter. The
    /// timer wakes for it then, and catch-up measures lateness from it, so
    /// the delay the schedule chose is never taken for lateness.
    pub fn due_at(&self, task_id: &str, slot: DateTime<Utc>) -> DateTime<Utc> {
        TimeDelta::from_std(self.jitter_for(task_id, slot))
            .ok()
            .and_then(|jitter| slot.checked_add_signed(jitter))
            .unwrap_or(slot)
    }

    /// Cron slots must not precede `start_at`; slots are whole seconds, so
    /// "strictly after start_at minus 1ns" means "at or after start_at".
    fn cron_lower_bound(&self, after: DateTime<Utc>) -> DateTime<Utc> {
        match self
            .start_at
            .and_then(|start| start.checked_sub_signed(TimeDelta::nanoseconds(1)))
        {
            Some(bound) => after.max(bound),
            None => after,
        }
    }
}

fn parse_time_zone(name: &str) -> Result<Tz, ScheduleError> {
    if name.is_empty() {
        return Ok(Tz::UTC);
    }
    name.parse::<Tz>().map_err(|_| {
        ScheduleError::new(FIELD_TIME_ZONE, format!("unknown IANA time zone {name:?}"))
    })
}

fn validate_every(every: Duration, limits: &Limits) -> Result<Duration, ScheduleError> {
    if every.is_zero() {
        return Err(ScheduleError::new(FIELD_EVERY, "must be greater than zero"));
    }
    if every < limits.min_interval {
        return Err(ScheduleError::new(
            FIELD_EVERY,
            format!(
                "must be at least {:?} (the service minimum), got {every:?}",
                limits.min_interval
            ),
        ));
    }
    if every > MAX_EVERY {
        return Err(ScheduleError::new(
            FIELD_EVERY,
            format!("must be at most 100 years, got {every:?}"),
        ));
    }
    Ok(every)
}

fn validate_jitter(cadence: &Cadence, tz: Tz, jitter: Duration) -> Result<(), ScheduleError> {
    if jitter.is_zero() {
        return Ok(());
    }
    match cadence {
        Cadence::Every(every) => {
            if jitter >= *every {
                return Err(ScheduleError::new(
                    FIELD_JITTER,
                    format!("must be less than every ({every:?}), got {jitter:?}"),
                ));
            }
        }
        Cadence::Cron(cron) => {
            if jitter > MAX_CRON_JITTER {
                return Err(ScheduleError::new(
                    FIELD_JITTER,
                    format!("must be at most 1h for a cron schedule, got {jitter:?}"),
                ));
            }
            // As with `every`, a jitter as long as the gap between slots
            // would let one run drift past the next slot.
            if let Some(gap) = tightest_cron_gap(cron, tz)
                && jitter >= gap
            {
                return Err(ScheduleError::new(
                    FIELD_JITTER,
                    format!(
                        "must be less than the shortest gap between cron slots ({gap:?}), \
                         got {jitter:?}"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Smallest gap between consecutive slots among the first
/// [`JITTER_GAP_SAMPLES`] after a fixed reference date.
fn tightest_cron_gap(cron: &CronCadence, tz: Tz) -> Option<Duration> {
    let mut previous =
        cron.next_after(tz, DateTime::from_timestamp(VALIDATION_REFERENCE_UNIX, 0)?)?;
    let mut tightest: Option<Duration> = None;
    for _ in 1..JITTER_GAP_SAMPLES {
        let Some(next) = cron.next_after(tz, previous) else {
            break;
        };
        if let Ok(gap) = next.signed_duration_since(previous).to_std() {
            tightest = Some(tightest.map_or(gap, |t| t.min(gap)));
        }
        previous = next;
    }
    tightest
}

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64, continuing from `hash` so several byte strings can be chained.
fn fnv1a64(mut hash: u64, bytes: &[u8]) -> u64 {
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// MurmurHash3's 64-bit finaliser: spreads every input bit over the output.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

#[cfg(test)]
mod tests;
