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

use chrono::{DateTime, MappedLocalTime, NaiveDateTime, TimeDelta, TimeZone, Utc};
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
/// that a long stall of a per-second pattern is bounded work. Interval counts
/// are exact (they are computed arithmetically) and only saturate at
/// `u64::MAX`.
pub const SKIPPED_COUNT_CAP: u64 = 100_000;

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
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(trimmed)
            .map_err(|e| ScheduleError::new(FIELD_CRON, format!("invalid cron expression: {e}")))?;
        let pattern = &cron.pattern;
        // Vixie cron's rule: a job is tied to a wall-clock time of day unless
        // its time-of-day fields use `*`. croner's `from_wildcard` is set when
        // any comma-separated part of the field is `*` or `*/n`.
        let fixed_time = !(pattern.seconds.from_wildcard
            || pattern.minutes.from_wildcard
            || pattern.hours.from_wildcard);
        let cadence = CronCadence {
            source: source.to_owned(),
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

    /// The pattern text exactly as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The parsed croner pattern.
    pub fn cron(&self) -> &Cron {
        &self.cron
    }

    /// Whether the pattern is tied to fixed wall-clock times (no `*` in its
    /// second, minute or hour field), which selects the Vixie DST rules
    /// described in the module docs.
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
mod tests {
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
        assert!(err.reason.contains("Number out of bounds"), "{err}");
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
}
