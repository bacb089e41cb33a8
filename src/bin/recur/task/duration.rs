//! Durations as people write them on the command line (`90s`, `1m30s`,
//! `2h`, `500ms`) and as the output shows them (`83ms`, `1.2s`, `2m5s`).

use std::time::Duration;

/// The units a flag may use, longest spelling first so `ms` is not read
/// as `m` followed by garbage.
const UNITS: [(&str, u64); 5] = [
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

/// Parses `90s`, `1m30s`, `2h`, `500ms`, `1d`: whole numbers each followed
/// by a unit. Used as a clap value parser, so clap names the flag in the
/// error.
pub fn parse(text: &str) -> Result<Duration, String> {
    let hint = "use a form like 90s, 1m30s, 2h or 500ms";
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(format!("empty duration ({hint})"));
    }
    let mut millis: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("{text:?} is not a duration ({hint})"));
        }
        let (number, after) = rest.split_at(digits);
        let Some((unit, scale)) = UNITS.iter().find(|(unit, _)| after.starts_with(unit)) else {
            return Err(format!("{text:?} lacks a unit (ms, s, m, h or d): {hint}"));
        };
        let value: u64 = number
            .parse()
            .map_err(|_| format!("{text:?} is too long a duration"))?;
        millis = value
            .checked_mul(*scale)
            .and_then(|v| millis.checked_add(v))
            .ok_or_else(|| format!("{text:?} is too long a duration"))?;
        rest = &after[unit.len()..];
    }
    Ok(Duration::from_millis(millis))
}

/// The protobuf form of a duration.
pub fn to_proto(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        // Flags give at most u64 milliseconds; the seconds fit an i64.
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

/// A protobuf duration as a std one; negative ones count as zero.
pub fn from_proto(d: &prost_types::Duration) -> Duration {
    if d.seconds < 0 || d.nanos < 0 {
        return Duration::ZERO;
    }
    Duration::new(d.seconds as u64, d.nanos as u32)
}

/// A short rendering for output: `83ms` below a second, `1.2s` below a
/// minute, then `2m5s`, `3h0m`.
pub fn short(d: Duration) -> String {
    let millis = d.as_millis();
    if millis < 1_000 {
        return format!("{millis}ms");
    }
    if millis < 60_000 {
        return format!("{:.1}s", d.as_secs_f64());
    }
    let secs = d.as_secs();
    if secs < 3_600 {
        return format!("{}m{}s", secs / 60, secs % 60);
    }
    format!("{}h{}m", secs / 3_600, secs % 3_600 / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_forms() {
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1d"), Ok(Duration::from_secs(86_400)));
        for bad in ["", "10", "s", "1x", "1.5s", "-1s", "1m30"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn output_forms() {
        assert_eq!(short(Duration::from_millis(83)), "83ms");
        assert_eq!(short(Duration::from_millis(1_250)), "1.2s");
        assert_eq!(short(Duration::from_secs(125)), "2m5s");
        assert_eq!(short(Duration::from_secs(3 * 3600)), "3h0m");
    }
}
