//! How values read in the command's output: times (absolute UTC and
//! relative to now), enum names without their prefix, and printing a
//! JSON value as JSON or YAML.

use std::io::Write;

use chrono::{DateTime, SecondsFormat, Utc};
use recur::pb::v1 as pb;

use super::errors::CliError;

/// A protobuf timestamp as a chrono one; None when unset or out of range.
pub fn time(t: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let t = t?;
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
}

/// `2026-12-02T03:04:05Z`, or `-` when unset.
pub fn absolute(t: Option<&prost_types::Timestamp>) -> String {
    time(t).map_or_else(
        || "-".to_string(),
        |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

/// `2026-12-02T03:04:05.123Z`: result lines, where runs a second apart
/// must read apart.
pub fn absolute_millis(t: Option<&prost_types::Timestamp>) -> String {
    time(t).map_or_else(
        || "-".to_string(),
        |t| t.to_rfc3339_opts(SecondsFormat::Millis, true),
    )
}

/// `in 42s`, `in 5m`, `in 3h`, `in 2d`, `12s ago`, `-` when unset:
/// rounded to the nearest of the largest unit that fits, so the text does
/// not change with the second a command happens to run in.
pub fn relative(t: Option<&prost_types::Timestamp>, now: DateTime<Utc>) -> String {
    let Some(t) = time(t) else {
        return "-".to_string();
    };
    let millis = (t - now).num_milliseconds();
    // Within half a second either way (the server's clock and ours differ
    // by a little): neither "in 0s" nor "0s ago".
    if millis.unsigned_abs() < 500 {
        return "now".to_string();
    }
    let amount = rounded(millis.unsigned_abs());
    if millis >= 0 {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// `absolute (relative)`, or `-`.
pub fn absolute_and_relative(t: Option<&prost_types::Timestamp>, now: DateTime<Utc>) -> String {
    match time(t) {
        Some(_) => format!("{} ({})", absolute(t), relative(t, now)),
        None => "-".to_string(),
    }
}

/// A span in the largest unit whose rounded count stays below the next
/// unit: 59s, 1m ... 59m, 1h ... 23h, 1d ...
fn rounded(millis: u64) -> String {
    let round = |unit: u64| (millis + unit / 2) / unit;
    let seconds = round(1_000);
    if seconds < 60 {
        return format!("{seconds}s");
    }
    let minutes = round(60_000);
    if minutes < 60 {
        return format!("{minutes}m");
    }
    let hours = round(3_600_000);
    if hours < 24 {
        return format!("{hours}h");
    }
    format!("{}d", round(86_400_000))
}

/// An enum value's proto name without `prefix`, or the number when this
/// build does not know it (a newer server).
fn short<E: TryFrom<i32>>(raw: i32, name: fn(&E) -> &'static str, prefix: &str) -> String {
    E::try_from(raw).map_or_else(
        |_| raw.to_string(),
        |e| name(&e).trim_start_matches(prefix).to_string(),
    )
}

/// A task state without its prefix: `ACTIVE`.
pub fn state(raw: i32) -> String {
    short(raw, pb::TaskState::as_str_name, "TASK_STATE_")
}

/// An outcome without its prefix: `SUCCEEDED`.
pub fn outcome(raw: i32) -> String {
    short(raw, pb::Outcome::as_str_name, "OUTCOME_")
}

/// A trigger without its prefix, lowercase: `manual`.
pub fn trigger(raw: i32) -> String {
    short(raw, pb::Trigger::as_str_name, "TRIGGER_").to_ascii_lowercase()
}

/// Labels as `k=v,k=v` (sorted: maps are unordered), `-` when none.
pub fn labels(labels: &std::collections::HashMap<String, String>) -> String {
    if labels.is_empty() {
        return "-".to_string();
    }
    let mut pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    pairs.join(",")
}

/// Prints pretty JSON to stdout.
pub fn print_json(value: &impl serde::Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::Internal(format!("cannot write JSON: {e}")))?;
    write_stdout(&format!("{text}\n"))
}

/// Prints YAML to stdout.
pub fn print_yaml(value: &impl serde::Serialize) -> Result<(), CliError> {
    write_stdout(&yaml(value)?)
}

/// A value as a YAML document.
pub fn yaml(value: &impl serde::Serialize) -> Result<String, CliError> {
    serde_saphyr::to_string(value)
        .map_err(|e| CliError::Internal(format!("cannot write YAML: {e}")))
}

/// Writes to stdout; a closed pipe (`| head`) is not an error worth a
/// panic, as `println!` would make it, nor a reason to stop a command half
/// way through the changes it reports.
pub fn write_stdout(text: &str) -> Result<(), CliError> {
    match write_or_closed(text) {
        Err(CliError::StdoutClosed) => Ok(()),
        written => written,
    }
}

/// Writes to stdout; a closed pipe is [`CliError::StdoutClosed`], so a
/// command that only prints (`watch`) ends rather than writing on to nobody.
pub fn write_or_closed(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(CliError::StdoutClosed),
        Err(e) => Err(CliError::Internal(format!("cannot write to stdout: {e}"))),
    }
}

/// One JSON line; [`CliError::StdoutClosed`] when nobody reads.
pub fn json_line(value: &impl serde::Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string(value)
        .map_err(|e| CliError::Internal(format!("cannot write JSON: {e}")))?;
    write_or_closed(&format!("{text}\n"))
}

/// Writes one line to stdout.
pub fn line(text: &str) -> Result<(), CliError> {
    write_stdout(&format!("{text}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_round_to_one_unit() {
        let now = DateTime::from_timestamp(1_000_000, 0).unwrap_or_default();
        let at = |secs: i64| {
            Some(prost_types::Timestamp {
                seconds: 1_000_000 + secs,
                nanos: 0,
            })
        };
        assert_eq!(relative(at(42).as_ref(), now), "in 42s");
        assert_eq!(relative(at(5 * 60 + 10).as_ref(), now), "in 5m");
        assert_eq!(relative(at(3599).as_ref(), now), "in 1h");
        assert_eq!(relative(at(3 * 3600).as_ref(), now), "in 3h");
        assert_eq!(relative(at(2 * 86_400 + 100).as_ref(), now), "in 2d");
        assert_eq!(relative(at(-12).as_ref(), now), "12s ago");
        assert_eq!(relative(None, now), "-");
        assert_eq!(relative(at(0).as_ref(), now), "now");
    }
}
