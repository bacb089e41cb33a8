//! UpdateTask's field mask (AIP-134): which paths of a `TaskSpec` a mask may
//! name, and copying the named fields of a request's spec onto the stored
//! one. Pure and proto-only: whether the merged spec is valid is
//! [`super::convert::spec`]'s question, asked afterwards of the whole.

use crate::{
    pb::v1::{self as pb, action::Kind, schedule::Cadence},
    scheduler::Error,
};

/// A field of `TaskSpec` that a mask can name. Parsed before anything is
/// read, so a bad mask is refused without touching the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecPath {
    /// `*`: the whole spec.
    All,
    /// `schedule`.
    Schedule,
    /// `schedule.every`.
    ScheduleEvery,
    /// `schedule.cron`.
    ScheduleCron,
    /// `schedule.time_zone`.
    ScheduleTimeZone,
    /// `schedule.jitter`.
    ScheduleJitter,
    /// `schedule.start_at`.
    ScheduleStartAt,
    /// `schedule.end_at`.
    ScheduleEndAt,
    /// `schedule.max_runs`.
    ScheduleMaxRuns,
    /// `action`.
    Action,
    /// `action.http`.
    Http,
    /// `action.http.method`.
    HttpMethod,
    /// `action.http.url`.
    HttpUrl,
    /// `action.http.headers`, the whole map.
    HttpHeaders,
    /// `action.http.body`.
    HttpBody,
    /// `action.http.secret_headers`, the whole map.
    HttpSecretHeaders,
    /// `action.redis`.
    Redis,
    /// `action.redis.args`.
    RedisArgs,
    /// `action.custom`.
    Custom,
    /// `action.custom.kind`.
    CustomKind,
    /// `action.custom.payload`.
    CustomPayload,
    /// `timeout`.
    Timeout,
    /// `overlap`.
    Overlap,
    /// `retry`.
    Retry,
    /// `retry.max_attempts`.
    RetryMaxAttempts,
    /// `retry.initial_backoff`.
    RetryInitialBackoff,
    /// `retry.max_backoff`.
    RetryMaxBackoff,
    /// `labels`, the whole map.
    Labels,
    /// `catchup_window`.
    CatchupWindow,
}

/// Every path a mask may name, spelled as in the proto.
const PATHS: [(&str, SpecPath); 29] = [
    ("*", SpecPath::All),
    ("schedule", SpecPath::Schedule),
    ("schedule.every", SpecPath::ScheduleEvery),
    ("schedule.cron", SpecPath::ScheduleCron),
    ("schedule.time_zone", SpecPath::ScheduleTimeZone),
    ("schedule.jitter", SpecPath::ScheduleJitter),
    ("schedule.start_at", SpecPath::ScheduleStartAt),
    ("schedule.end_at", SpecPath::ScheduleEndAt),
    ("schedule.max_runs", SpecPath::ScheduleMaxRuns),
    ("action", SpecPath::Action),
    ("action.http", SpecPath::Http),
    ("action.http.method", SpecPath::HttpMethod),
    ("action.http.url", SpecPath::HttpUrl),
    ("action.http.headers", SpecPath::HttpHeaders),
    ("action.http.body", SpecPath::HttpBody),
    ("action.http.secret_headers", SpecPath::HttpSecretHeaders),
    ("action.redis", SpecPath::Redis),
    ("action.redis.args", SpecPath::RedisArgs),
    ("action.custom", SpecPath::Custom),
    ("action.custom.kind", SpecPath::CustomKind),
    ("action.custom.payload", SpecPath::CustomPayload),
    ("timeout", SpecPath::Timeout),
    ("overlap", SpecPath::Overlap),
    ("retry", SpecPath::Retry),
    ("retry.max_attempts", SpecPath::RetryMaxAttempts),
    ("retry.initial_backoff", SpecPath::RetryInitialBackoff),
    ("retry.max_backoff", SpecPath::RetryMaxBackoff),
    ("labels", SpecPath::Labels),
    ("catchup_window", SpecPath::CatchupWindow),
];

/// Map fields: a mask replaces them whole and cannot name one entry.
const MAP_PATHS: [&str; 3] = [
    "labels",
    "action.http.headers",
    "action.http.secret_headers",
];

/// Whether a masked update keeps the stored header values (it names
/// neither the headers nor anything that holds them).
pub fn keeps_headers(paths: &[SpecPath]) -> bool {
    !paths.iter().any(|p| {
        matches!(
            p,
            SpecPath::All | SpecPath::Action | SpecPath::Http | SpecPath::HttpHeaders
        )
    })
}

/// Parses a mask's paths; an unknown one is INVALID_ARGUMENT naming
/// `update_mask.paths[i]`.
pub fn parse(paths: &[String]) -> Result<Vec<SpecPath>, Error> {
    paths
        .iter()
        .enumerate()
        .map(|(i, path)| {
            parse_one(path).map_err(|reason| Error::InvalidArgument {
                field: format!("update_mask.paths[{i}]"),
                reason,
            })
        })
        .collect()
}

fn parse_one(path: &str) -> Result<SpecPath, String> {
    if let Some((_, known)) = PATHS.iter().find(|(name, _)| *name == path) {
        return Ok(*known);
    }
    if let Some(map) = MAP_PATHS.iter().find(|map| {
        path.strip_prefix(**map)
            .is_some_and(|rest| rest.starts_with('.'))
    }) {
        return Err(format!(
            "{path:?} names a map entry; entries are not addressable, name {map:?} to replace the whole map"
        ));
    }
    Err(format!(
        "{path:?} is not a field of TaskSpec (paths are relative to TaskSpec, e.g. \"schedule.every\")"
    ))
}

/// `stored` with the fields named by `paths` taken from `patch`. A named
/// field unset in `patch` ends up unset (AIP-134); naming a field inside
/// one member of a oneof selects that member, as setting it in proto does.
pub fn apply(mut stored: pb::TaskSpec, patch: &pb::TaskSpec, paths: &[SpecPath]) -> pb::TaskSpec {
    for path in paths {
        copy(&mut stored, patch, *path);
    }
    stored
}

fn copy(to: &mut pb::TaskSpec, from: &pb::TaskSpec, path: SpecPath) {
    let from_schedule = from.schedule.clone().unwrap_or_default();
    let from_retry = from.retry.unwrap_or_default();
    let from_kind = from.action.as_ref().and_then(|a| a.kind.as_ref());
    match path {
        SpecPath::All => *to = from.clone(),
        SpecPath::Schedule => to.schedule = from.schedule.clone(),
        SpecPath::ScheduleEvery => {
            let every = match from_schedule.cadence {
                Some(Cadence::Every(d)) => Some(Cadence::Every(d)),
                _ => None,
            };
            set_cadence(to, every, |c| matches!(c, Cadence::Every(_)));
        }
        SpecPath::ScheduleCron => {
            let cron = match from_schedule.cadence {
                Some(Cadence::Cron(c)) => Some(Cadence::Cron(c)),
                _ => None,
            };
            set_cadence(to, cron, |c| matches!(c, Cadence::Cron(_)));
        }
        SpecPath::ScheduleTimeZone => schedule_mut(to).time_zone = from_schedule.time_zone,
        SpecPath::ScheduleJitter => schedule_mut(to).jitter = from_schedule.jitter,
        SpecPath::ScheduleStartAt => schedule_mut(to).start_at = from_schedule.start_at,
        SpecPath::ScheduleEndAt => schedule_mut(to).end_at = from_schedule.end_at,
        SpecPath::ScheduleMaxRuns => schedule_mut(to).max_runs = from_schedule.max_runs,
        SpecPath::Action => to.action = from.action.clone(),
        SpecPath::Http => {
            let http = match from_kind {
                Some(Kind::Http(h)) => Some(Kind::Http(h.clone())),
                _ => None,
            };
            set_kind(to, http, |k| matches!(k, Kind::Http(_)));
        }
        SpecPath::Redis => {
            let redis = match from_kind {
                Some(Kind::Redis(r)) => Some(Kind::Redis(r.clone())),
                _ => None,
            };
            set_kind(to, redis, |k| matches!(k, Kind::Redis(_)));
        }
        SpecPath::Custom => {
            let custom = match from_kind {
                Some(Kind::Custom(c)) => Some(Kind::Custom(c.clone())),
                _ => None,
            };
            set_kind(to, custom, |k| matches!(k, Kind::Custom(_)));
        }
        SpecPath::HttpMethod => with_http(to, |http| http.method = http_of(from).method),
        SpecPath::HttpUrl => with_http(to, |http| http.url = http_of(from).url),
        SpecPath::HttpHeaders => with_http(to, |http| http.headers = http_of(from).headers),
        SpecPath::HttpBody => with_http(to, |http| http.body = http_of(from).body),
        SpecPath::HttpSecretHeaders => with_http(to, |http| {
            http.secret_headers = http_of(from).secret_headers
        }),
        SpecPath::RedisArgs => {
            let args = match from_kind {
                Some(Kind::Redis(r)) => r.args.clone(),
                _ => Vec::new(),
            };
            set_member(to, Kind::Redis(pb::RedisAction { args }));
        }
        SpecPath::CustomKind => with_custom(to, |custom| custom.kind = custom_of(from).kind),
        SpecPath::CustomPayload => {
            with_custom(to, |custom| custom.payload = custom_of(from).payload)
        }
        SpecPath::Timeout => to.timeout = from.timeout,
        SpecPath::Overlap => to.overlap = from.overlap,
        SpecPath::Retry => to.retry = from.retry,
        SpecPath::RetryMaxAttempts => retry_mut(to).max_attempts = from_retry.max_attempts,
        SpecPath::RetryInitialBackoff => retry_mut(to).initial_backoff = from_retry.initial_backoff,
        SpecPath::RetryMaxBackoff => retry_mut(to).max_backoff = from_retry.max_backoff,
        SpecPath::Labels => to.labels = from.labels.clone(),
        SpecPath::CatchupWindow => to.catchup_window = from.catchup_window,
    }
}

fn schedule_mut(spec: &mut pb::TaskSpec) -> &mut pb::Schedule {
    spec.schedule.get_or_insert_default()
}

fn retry_mut(spec: &mut pb::TaskSpec) -> &mut pb::RetryPolicy {
    spec.retry.get_or_insert_default()
}

/// Sets one member of the cadence oneof: `Some` selects it with the new
/// value; `None` clears it, which only unsets the cadence if that member
/// was the one set (clearing `every` leaves a `cron` alone).
fn set_cadence(spec: &mut pb::TaskSpec, value: Option<Cadence>, is_member: fn(&Cadence) -> bool) {
    let schedule = schedule_mut(spec);
    match value {
        Some(value) => schedule.cadence = Some(value),
        None if schedule.cadence.as_ref().is_some_and(is_member) => schedule.cadence = None,
        None => {}
    }
}

/// [`set_cadence`] for the action kind oneof.
fn set_kind(spec: &mut pb::TaskSpec, value: Option<Kind>, is_member: fn(&Kind) -> bool) {
    let action = spec.action.get_or_insert_default();
    match value {
        Some(value) => action.kind = Some(value),
        None if action.kind.as_ref().is_some_and(is_member) => action.kind = None,
        None => {}
    }
}

fn set_member(spec: &mut pb::TaskSpec, kind: Kind) {
    spec.action.get_or_insert_default().kind = Some(kind);
}

/// The patch's HTTP action; an empty one if it has none, so a named field
/// it lacks is cleared.
fn http_of(spec: &pb::TaskSpec) -> pb::HttpAction {
    match spec.action.as_ref().and_then(|a| a.kind.as_ref()) {
        Some(Kind::Http(http)) => http.clone(),
        _ => pb::HttpAction::default(),
    }
}

/// [`http_of`] for the custom action.
fn custom_of(spec: &pb::TaskSpec) -> pb::CustomAction {
    match spec.action.as_ref().and_then(|a| a.kind.as_ref()) {
        Some(Kind::Custom(custom)) => custom.clone(),
        _ => pb::CustomAction::default(),
    }
}

/// Edits the stored HTTP action, selecting an empty one if the action was
/// of another kind (naming `action.http.url` means "the action is HTTP").
fn with_http(spec: &mut pb::TaskSpec, edit: impl FnOnce(&mut pb::HttpAction)) {
    let mut http = match spec.action.as_mut().and_then(|a| a.kind.take()) {
        Some(Kind::Http(h)) => h,
        _ => pb::HttpAction::default(),
    };
    edit(&mut http);
    set_member(spec, Kind::Http(http));
}

/// [`with_http`] for the custom action.
fn with_custom(spec: &mut pb::TaskSpec, edit: impl FnOnce(&mut pb::CustomAction)) {
    let mut custom = match spec.action.as_mut().and_then(|a| a.kind.take()) {
        Some(Kind::Custom(c)) => c,
        _ => pb::CustomAction::default(),
    };
    edit(&mut custom);
    set_member(spec, Kind::Custom(custom));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(raw: &[&str]) -> Vec<SpecPath> {
        parse(&raw.iter().map(|p| p.to_string()).collect::<Vec<_>>()).expect("known paths")
    }

    fn stored() -> pb::TaskSpec {
        pb::TaskSpec {
            schedule: Some(pb::Schedule {
                cadence: Some(Cadence::Every(prost_types::Duration {
                    seconds: 60,
                    nanos: 0,
                })),
                jitter: Some(prost_types::Duration {
                    seconds: 5,
                    nanos: 0,
                }),
                max_runs: 10,
                ..Default::default()
            }),
            action: Some(pb::Action {
                kind: Some(Kind::Http(pb::HttpAction {
                    method: "POST".into(),
                    url: "http://example.com/hook".into(),
                    headers: [("authorization".to_string(), "Bearer s3cr3t".to_string())].into(),
                    body: b"{}".to_vec(),
                    secret_headers: Default::default(),
                })),
            }),
            labels: [("team".to_string(), "ops".to_string())].into(),
            ..Default::default()
        }
    }

    fn every(seconds: i64) -> Option<Cadence> {
        Some(Cadence::Every(prost_types::Duration { seconds, nanos: 0 }))
    }

    #[test]
    fn every_known_path_parses_and_unknown_ones_name_their_index() {
        for (name, path) in PATHS {
            assert_eq!(paths(&[name]), vec![path]);
        }
        let err = parse(&["schedule.every".into(), "schedule.evry".into()]).unwrap_err();
        assert!(
            err.to_string().starts_with("update_mask.paths[1]: "),
            "{err}"
        );
        for bad in ["", "spec.schedule", "schedule.jitter.seconds", "Schedule"] {
            let err = parse(&[bad.into()]).unwrap_err().to_string();
            assert!(err.starts_with("update_mask.paths[0]: "), "{err}");
        }
        let err = parse(&["action.http.headers.authorization".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not addressable"), "{err}");
        assert!(err.contains("\"action.http.headers\""), "{err}");
    }

    #[test]
    fn a_leaf_path_changes_that_field_only() {
        let patch = pb::TaskSpec {
            schedule: Some(pb::Schedule {
                cadence: every(120),
                ..Default::default()
            }),
            ..Default::default()
        };
        let merged = apply(stored(), &patch, &paths(&["schedule.every"]));
        let mut expected = stored();
        expected.schedule.as_mut().unwrap().cadence = every(120);
        assert_eq!(merged, expected, "jitter, max_runs, action and labels kept");
    }

    #[test]
    fn a_message_path_replaces_the_whole_message() {
        let patch = pb::TaskSpec {
            schedule: Some(pb::Schedule {
                cadence: every(120),
                ..Default::default()
            }),
            ..Default::default()
        };
        let merged = apply(stored(), &patch, &paths(&["schedule"]));
        assert_eq!(merged.schedule, patch.schedule, "jitter and max_runs gone");
        assert_eq!(merged.action, stored().action);
    }

    #[test]
    fn a_named_field_unset_in_the_patch_is_cleared() {
        let merged = apply(
            stored(),
            &pb::TaskSpec::default(),
            &paths(&["labels", "schedule.jitter", "schedule.cron"]),
        );
        assert!(merged.labels.is_empty());
        let schedule = merged.schedule.unwrap();
        assert_eq!(schedule.jitter, None);
        assert_eq!(schedule.cadence, every(60), "clearing cron keeps every");
        let merged = apply(
            stored(),
            &pb::TaskSpec::default(),
            &paths(&["schedule.every"]),
        );
        assert_eq!(merged.schedule.unwrap().cadence, None);
    }

    #[test]
    fn naming_one_oneof_member_replaces_the_other() {
        let patch = pb::TaskSpec {
            schedule: Some(pb::Schedule {
                cadence: Some(Cadence::Cron("0 9 * * *".into())),
                ..Default::default()
            }),
            action: Some(pb::Action {
                kind: Some(Kind::Redis(pb::RedisAction {
                    args: vec!["INCR".into(), "hits".into()],
                })),
            }),
            ..Default::default()
        };
        let merged = apply(
            stored(),
            &patch,
            &paths(&["schedule.cron", "action.redis.args"]),
        );
        assert_eq!(
            merged.schedule.unwrap().cadence,
            patch.schedule.unwrap().cadence
        );
        assert_eq!(merged.action, patch.action);

        // Naming one field of a member not stored selects an empty member
        // with that field set: the rest of it is unset, for validation to
        // refuse if required.
        let patch = pb::TaskSpec {
            action: Some(pb::Action {
                kind: Some(Kind::Custom(pb::CustomAction {
                    kind: "word-count".into(),
                    payload: b"text".to_vec(),
                })),
            }),
            ..Default::default()
        };
        let merged = apply(stored(), &patch, &paths(&["action.custom.payload"]));
        let expected = Kind::Custom(pb::CustomAction {
            kind: String::new(),
            payload: b"text".to_vec(),
        });
        assert_eq!(merged.action.unwrap().kind, Some(expected));
    }

    #[test]
    fn http_sub_fields_keep_the_stored_headers() {
        let patch = pb::TaskSpec {
            action: Some(pb::Action {
                kind: Some(Kind::Http(pb::HttpAction {
                    url: "http://example.com/other".into(),
                    headers: [("authorization".to_string(), "<redacted>".to_string())].into(),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        };
        let merged = apply(stored(), &patch, &paths(&["action.http.url"]));
        let Some(Kind::Http(http)) = merged.action.unwrap().kind else {
            panic!("still http")
        };
        assert_eq!(http.url, "http://example.com/other");
        assert_eq!(http.method, "POST");
        assert_eq!(
            http.headers.get("authorization").map(String::as_str),
            Some("Bearer s3cr3t")
        );
    }

    #[test]
    fn the_catchup_window_is_set_and_cleared_on_its_own() {
        let window = Some(prost_types::Duration {
            seconds: 300,
            nanos: 0,
        });
        let patch = pb::TaskSpec {
            catchup_window: window,
            labels: [("team".to_string(), "web".to_string())].into(),
            ..Default::default()
        };
        let merged = apply(stored(), &patch, &paths(&["catchup_window"]));
        assert_eq!(merged.catchup_window, window);
        assert_eq!(
            pb::TaskSpec {
                catchup_window: None,
                ..merged.clone()
            },
            stored(),
            "nothing else changed"
        );
        let cleared = apply(merged, &pb::TaskSpec::default(), &paths(&["catchup_window"]));
        assert_eq!(cleared, stored(), "unset in the patch: back to unset");
    }

    #[test]
    fn star_and_repeated_paths() {
        let patch = pb::TaskSpec {
            labels: [("team".to_string(), "web".to_string())].into(),
            ..Default::default()
        };
        assert_eq!(apply(stored(), &patch, &paths(&["*"])), patch);
        let twice = apply(stored(), &patch, &paths(&["labels", "labels"]));
        assert_eq!(twice.labels, patch.labels);
    }
}
