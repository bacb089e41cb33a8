//! Which update-mask paths differ between two specs, both as the server
//! returns them (defaults filled in, header values redacted). The paths
//! are those `src/api/mask.rs` accepts, at the finest grain that still
//! means one thing: a cadence that switches between `every` and `cron`
//! names both leaves; an action that changes kind is `action`; maps
//! (`labels`, headers) are whole. Header values read `<redacted>` on both
//! sides, so a changed value is invisible here: the planner finds it by
//! fingerprint.

use recur::pb::v1::{self as pb, action::Kind, schedule::Cadence};

/// Every path this module reports, in the order plans list them (the
/// proto's field order).
pub const ORDER: [&str; 24] = [
    "schedule.every",
    "schedule.cron",
    "schedule.time_zone",
    "schedule.jitter",
    "schedule.start_at",
    "schedule.end_at",
    "schedule.max_runs",
    "action",
    "action.http.method",
    "action.http.url",
    "action.http.headers",
    "action.http.body",
    "action.http.secret_headers",
    "action.redis.args",
    "action.custom.kind",
    "action.custom.payload",
    "timeout",
    "overlap",
    "retry.max_attempts",
    "retry.initial_backoff",
    "retry.max_backoff",
    "labels",
    "catchup_window",
    "*",
];

/// Sorts paths into [`ORDER`] and drops repeats.
pub fn sort(paths: &mut Vec<&'static str>) {
    paths.sort_by_key(|p| ORDER.iter().position(|o| o == p).unwrap_or(ORDER.len()));
    paths.dedup();
}

/// The paths whose values differ between `old` and `new`, in [`ORDER`].
pub fn changed_paths(old: &pb::TaskSpec, new: &pb::TaskSpec) -> Vec<&'static str> {
    let mut paths = Vec::new();
    let mut check = |path: &'static str, differs: bool| {
        if differs {
            paths.push(path);
        }
    };
    let (a, b) = (
        old.schedule.clone().unwrap_or_default(),
        new.schedule.clone().unwrap_or_default(),
    );
    match (&a.cadence, &b.cadence) {
        (Some(Cadence::Every(x)), Some(Cadence::Every(y))) => check("schedule.every", x != y),
        (Some(Cadence::Cron(x)), Some(Cadence::Cron(y))) => check("schedule.cron", x != y),
        (x, y) if x == y => {}
        _ => {
            check("schedule.every", true);
            check("schedule.cron", true);
        }
    }
    check("schedule.time_zone", a.time_zone != b.time_zone);
    check("schedule.jitter", a.jitter != b.jitter);
    check("schedule.start_at", a.start_at != b.start_at);
    check("schedule.end_at", a.end_at != b.end_at);
    check("schedule.max_runs", a.max_runs != b.max_runs);
    let kind = |spec: &pb::TaskSpec| spec.action.clone().and_then(|a| a.kind);
    match (kind(old), kind(new)) {
        (Some(Kind::Http(x)), Some(Kind::Http(y))) => {
            check("action.http.method", x.method != y.method);
            check("action.http.url", x.url != y.url);
            check("action.http.headers", x.headers != y.headers);
            check("action.http.body", x.body != y.body);
            check(
                "action.http.secret_headers",
                x.secret_headers != y.secret_headers,
            );
        }
        (Some(Kind::Redis(x)), Some(Kind::Redis(y))) => {
            check("action.redis.args", x.args != y.args)
        }
        (Some(Kind::Custom(x)), Some(Kind::Custom(y))) => {
            check("action.custom.kind", x.kind != y.kind);
            check("action.custom.payload", x.payload != y.payload);
        }
        (x, y) => check("action", x != y),
    }
    check("timeout", old.timeout != new.timeout);
    check("overlap", old.overlap != new.overlap);
    let (x, y) = (old.retry.unwrap_or_default(), new.retry.unwrap_or_default());
    check("retry.max_attempts", x.max_attempts != y.max_attempts);
    check(
        "retry.initial_backoff",
        x.initial_backoff != y.initial_backoff,
    );
    check("retry.max_backoff", x.max_backoff != y.max_backoff);
    check("labels", old.labels != new.labels);
    check("catchup_window", old.catchup_window != new.catchup_window);
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(every: Option<i64>, cron: Option<&str>, team: &str) -> pb::TaskSpec {
        let cadence = match (every, cron) {
            (Some(s), _) => Some(Cadence::Every(prost_types::Duration {
                seconds: s,
                nanos: 0,
            })),
            (None, Some(c)) => Some(Cadence::Cron(c.into())),
            _ => None,
        };
        pb::TaskSpec {
            schedule: Some(pb::Schedule {
                cadence,
                ..Default::default()
            }),
            action: Some(pb::Action {
                kind: Some(Kind::Http(pb::HttpAction {
                    url: "http://x/".into(),
                    ..Default::default()
                })),
            }),
            labels: [("team".to_string(), team.to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn leaves_that_differ() {
        let a = spec(Some(60), None, "a");
        assert!(changed_paths(&a, &a).is_empty());
        assert_eq!(
            changed_paths(&a, &spec(Some(30), None, "b")),
            ["schedule.every", "labels"]
        );
        assert_eq!(
            changed_paths(&a, &spec(None, Some("* * * * *"), "a")),
            ["schedule.every", "schedule.cron"]
        );
        let mut redis = a.clone();
        redis.action = Some(pb::Action {
            kind: Some(Kind::Redis(pb::RedisAction::default())),
        });
        assert_eq!(changed_paths(&a, &redis), ["action"]);
    }
}
