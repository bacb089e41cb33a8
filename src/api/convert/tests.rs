//! Tests of the spec conversion: redaction, and property tests that no proto
//! spec makes it panic and that every accepted spec survives the trip to
//! proto (with real header values, as a masked update reads it) and back.
//! Unit tests because the unredacted conversion is crate-private.

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock},
};

use proptest::prelude::*;

use super::*;
use crate::{
    HandlerContext, HandlerError, TaskHandler,
    action::http::{HttpRunner, HttpSettings},
};

/// Cases per property; see `tests/properties.rs`.
const CASES: u32 = 256;

/// A custom kind that accepts any payload except one starting with "bad",
/// so both answers of `validate` are exercised.
struct Picky;

#[async_trait::async_trait]
impl TaskHandler for Picky {
    fn validate(&self, payload: &[u8]) -> Result<(), String> {
        if payload.starts_with(b"bad") {
            return Err("starts with bad".into());
        }
        Ok(())
    }

    async fn run(&self, _ctx: HandlerContext) -> Result<Bytes, HandlerError> {
        Ok(Bytes::new())
    }
}

/// Built once: the HTTP client loads root certificates.
static ACTIONS: LazyLock<Actions> = LazyLock::new(|| {
    let http = HttpRunner::new(HttpSettings {
        connect_timeout: Duration::from_secs(1),
        read_timeout: Duration::from_secs(1),
        total_timeout: Duration::from_secs(1),
        max_redirects: 0,
        output_cap: 1024,
        addresses: Default::default(),
        secrets: Default::default(),
    })
    .expect("http client");
    let handlers: HashMap<String, Arc<dyn TaskHandler>> =
        [("picky".to_string(), Arc::new(Picky) as Arc<dyn TaskHandler>)].into();
    Actions::new(http, None, handlers, 1024)
});

fn ctx() -> SpecContext<'static> {
    SpecContext {
        min_interval: Duration::from_secs(1),
        default_timeout: Duration::from_secs(30),
        max_timeout: Duration::from_secs(86_400),
        key_prefix: "recur:",
        actions: &ACTIONS,
        secrets: None,
        namespace: None,
    }
}

fn secret_spec() -> pb::TaskSpec {
    pb::TaskSpec {
        schedule: Some(pb::Schedule {
            cadence: Some(pb::schedule::Cadence::Cron("0 9 * * MON-FRI".into())),
            time_zone: "Europe/Berlin".into(),
            ..Default::default()
        }),
        action: Some(pb::Action {
            kind: Some(pb::action::Kind::Http(pb::HttpAction {
                method: "post".into(),
                url: "https://example.com/hook".into(),
                headers: [("Authorization".to_string(), "Bearer s3cr3t".to_string())].into(),
                body: b"{}".to_vec(),
                secret_headers: Default::default(),
            })),
        }),
        ..Default::default()
    }
}

fn http_of(spec: &pb::TaskSpec) -> &pb::HttpAction {
    match spec.action.as_ref().and_then(|a| a.kind.as_ref()) {
        Some(pb::action::Kind::Http(http)) => http,
        other => panic!("not http: {other:?}"),
    }
}

#[test]
fn responses_redact_header_values_and_the_merge_source_does_not() {
    let domain = spec("spec", Some(secret_spec()), &ctx()).expect("valid");
    let shown = spec_to_proto(&domain);
    assert_eq!(
        http_of(&shown)
            .headers
            .get("authorization")
            .map(String::as_str),
        Some(REDACTED)
    );
    let stored = spec_to_proto_unredacted(&domain);
    assert_eq!(
        http_of(&stored)
            .headers
            .get("authorization")
            .map(String::as_str),
        Some("Bearer s3cr3t")
    );
    assert_eq!(spec("spec", Some(stored), &ctx()).expect("valid"), domain);
}

#[test]
fn the_placeholder_is_refused_naming_the_header() {
    let mut raw = secret_spec();
    if let Some(pb::action::Kind::Http(http)) = raw.action.as_mut().and_then(|a| a.kind.as_mut()) {
        http.headers
            .insert("Authorization".into(), REDACTED.to_string());
    }
    let err = spec("spec", Some(raw), &ctx()).expect_err("placeholder refused");
    assert!(
        err.to_string()
            .starts_with(r#"spec.action.http.headers["Authorization"]: "#),
        "{err}"
    );
}

#[test]
fn a_negative_catchup_window_is_refused_naming_the_field() {
    for (seconds, nanos) in [(-1, 0), (0, -1), (5, 1_000_000_000)] {
        let raw = pb::TaskSpec {
            catchup_window: Some(prost_types::Duration { seconds, nanos }),
            ..secret_spec()
        };
        let err = spec("spec", Some(raw), &ctx()).expect_err("refused");
        assert!(
            matches!(&err, Error::InvalidArgument { field, .. } if field == "spec.catchup_window"),
            "{seconds}s {nanos}ns: {err}"
        );
    }
}

#[test]
fn the_catchup_window_round_trips_and_unset_stays_unset() {
    let window = |seconds, nanos| Some(prost_types::Duration { seconds, nanos });
    for (raw, domain) in [
        (None, None),
        (window(0, 0), Some(Duration::ZERO)),
        (window(90, 500), Some(Duration::new(90, 500))),
    ] {
        let converted = spec(
            "spec",
            Some(pb::TaskSpec {
                catchup_window: raw,
                ..secret_spec()
            }),
            &ctx(),
        )
        .expect("valid");
        assert_eq!(converted.catchup_window, domain);
        assert_eq!(spec_to_proto(&converted).catchup_window, raw, "read back");
    }
}

/// Mostly `tame`, sometimes `wild` when `wild_too` is set. Tame values are
/// what a careful client sends, so most tame specs are accepted (the round
/// trip needs accepted specs); wild ones probe the refusals.
fn sometimes<T: std::fmt::Debug + 'static>(
    tame: BoxedStrategy<T>,
    wild: BoxedStrategy<T>,
    wild_too: bool,
) -> BoxedStrategy<T> {
    if wild_too {
        prop_oneof![4 => tame, 1 => wild].boxed()
    } else {
        tame
    }
}

fn duration(low_secs: i64, high_secs: i64, wild_too: bool) -> BoxedStrategy<prost_types::Duration> {
    sometimes(
        (low_secs..high_secs, 0i32..1_000_000_000).boxed(),
        (any::<i64>(), any::<i32>()).boxed(),
        wild_too,
    )
    .prop_map(|(seconds, nanos)| prost_types::Duration { seconds, nanos })
    .boxed()
}

fn timestamp(wild_too: bool) -> BoxedStrategy<prost_types::Timestamp> {
    sometimes(
        (0i64..4_000_000_000, 0i32..1_000_000_000).boxed(),
        (any::<i64>(), any::<i32>()).boxed(),
        wild_too,
    )
    .prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos })
    .boxed()
}

fn cron_text(wild_too: bool) -> BoxedStrategy<String> {
    let tame = prop_oneof![
        4 => "(\\*|[0-5]?[0-9]|\\*/[1-9]) (\\*|[0-9]|1[0-9]|2[0-3]|9-17) (\\*|[1-9]|L) (\\*|[1-9]|JAN-MAR) (\\*|[0-6]|MON-FRI)",
        1 => " ?[0-5]?[0-9] (\\*|[0-5]?[0-9]) (\\*|[0-9]) \\* \\* \\* ?",
        1 => "@(daily|hourly|weekly|monthly|yearly)",
    ];
    let wild = prop_oneof!["[0-9 *]{0,12}", any::<String>()];
    sometimes(tame.boxed(), wild.boxed(), wild_too)
}

fn schedule(wild_too: bool) -> BoxedStrategy<pb::Schedule> {
    use pb::schedule::Cadence;
    let cadence = sometimes(
        prop_oneof![
            duration(1, 100_000, wild_too).prop_map(|d| Some(Cadence::Every(d))),
            cron_text(wild_too).prop_map(|c| Some(Cadence::Cron(c))),
        ]
        .boxed(),
        Just(None).boxed(),
        wild_too,
    );
    let zone = sometimes(
        prop_oneof![
            Just(String::new()),
            Just("UTC".to_string()),
            Just("Europe/Berlin".to_string()),
            Just("America/New_York".to_string()),
        ]
        .boxed(),
        "[A-Za-z/_]{0,12}".boxed(),
        wild_too,
    );
    // Below one second: under every accepted interval and cron gap.
    let jitter = sometimes(
        prop_oneof![
            3 => Just(None),
            1 => (0i32..1_000_000_000).prop_map(|nanos| Some(prost_types::Duration { seconds: 0, nanos })),
        ]
        .boxed(),
        prop::option::of(duration(0, 100_000, true)).boxed(),
        wild_too,
    );
    // end_at as an offset after start_at, so tame windows are never empty.
    let window = sometimes(
        (
            prop::option::of(timestamp(false)),
            prop::option::of(1i64..1_000_000_000),
        )
            .prop_map(|(start, end_offset)| {
                let end = end_offset.map(|offset| prost_types::Timestamp {
                    seconds: start.map_or(0, |s| s.seconds) + offset,
                    nanos: 0,
                });
                (start, end)
            })
            .boxed(),
        (
            prop::option::of(timestamp(true)),
            prop::option::of(timestamp(true)),
        )
            .boxed(),
        wild_too,
    );
    (
        cadence,
        zone,
        jitter,
        window,
        prop_oneof![3 => Just(0u64), 1 => any::<u64>()],
    )
        .prop_map(
            |(cadence, time_zone, jitter, (start_at, end_at), max_runs)| pb::Schedule {
                cadence,
                time_zone,
                jitter,
                start_at,
                end_at,
                max_runs,
            },
        )
        .boxed()
}

fn http(wild_too: bool) -> BoxedStrategy<pb::HttpAction> {
    let method = sometimes(
        prop_oneof![
            Just(String::new()),
            Just("GET".to_string()),
            Just("post".to_string()),
            Just("Delete".to_string()),
        ]
        .boxed(),
        prop_oneof![Just("TRACE".to_string()), "[A-Za-z]{0,8}"].boxed(),
        wild_too,
    );
    let url = sometimes(
        "https?://[a-z]{1,8}(\\.[a-z]{1,4})?(:[0-9]{1,5})?(/[A-Za-z0-9._~%!$&'()*+,;=:@-]{0,8}){0,3}(\\?[a-z=&%]{0,8})?(#[a-z]{0,4})?".boxed(),
        prop_oneof!["[A-Za-z]{1,6}://[ -~]{0,16}", any::<String>()].boxed(),
        wild_too,
    );
    let name = sometimes(
        prop_oneof![4 => "[A-Za-z][A-Za-z0-9-]{0,12}", 1 => Just("Authorization".to_string())]
            .boxed(),
        any::<String>().boxed(),
        wild_too,
    );
    let value = sometimes(
        "[!-~]([ -~]{0,22}[!-~])?".boxed(),
        prop_oneof![Just(REDACTED.to_string()), any::<String>()].boxed(),
        wild_too,
    );
    (
        method,
        url,
        prop::collection::hash_map(name, value, 0..4),
        prop::collection::vec(any::<u8>(), 0..16),
    )
        .prop_map(|(method, url, headers, body)| pb::HttpAction {
            method,
            url,
            headers,
            body,
            secret_headers: Default::default(),
        })
        .boxed()
}

fn action(wild_too: bool) -> BoxedStrategy<Option<pb::Action>> {
    use pb::action::Kind;
    let custom = (
        sometimes(
            Just("picky".to_string()).boxed(),
            "[a-z]{0,6}".boxed(),
            wild_too,
        ),
        sometimes(
            prop::collection::vec(any::<u8>(), 0..8)
                .prop_filter("refused payload", |p| !p.starts_with(b"bad"))
                .boxed(),
            Just(b"bad".to_vec()).boxed(),
            wild_too,
        ),
    )
        .prop_map(|(kind, payload)| Kind::Custom(pb::CustomAction { kind, payload }));
    // Redis is refused without a pool, so it is only ever wild here.
    let redis = prop::collection::vec("[A-Za-z:]{0,8}", 0..4)
        .prop_map(|args| Kind::Redis(pb::RedisAction { args }));
    sometimes(
        prop_oneof![
            3 => http(wild_too).prop_map(|h| Some(pb::Action { kind: Some(Kind::Http(h)) })),
            1 => custom.prop_map(|c| Some(pb::Action { kind: Some(c) })),
        ]
        .boxed(),
        prop_oneof![
            redis.prop_map(|r| Some(pb::Action { kind: Some(r) })),
            Just(Some(pb::Action { kind: None })),
            Just(None),
        ]
        .boxed(),
        wild_too,
    )
}

fn retry(wild_too: bool) -> BoxedStrategy<Option<pb::RetryPolicy>> {
    let max_attempts = sometimes(
        (0u32..=MAX_ATTEMPTS).boxed(),
        any::<u32>().boxed(),
        wild_too,
    );
    // Ordered seconds, so tame policies never start above their cap.
    let backoffs = sometimes(
        (0i64..100, 0i64..100)
            .prop_map(|(a, b)| {
                let at = |seconds| Some(prost_types::Duration { seconds, nanos: 0 });
                (at(a.min(b)), at(a.max(b)))
            })
            .boxed(),
        (
            prop::option::of(duration(0, 100, true)),
            prop::option::of(duration(0, 100, true)),
        )
            .boxed(),
        wild_too,
    );
    prop::option::of((max_attempts, backoffs).prop_map(
        |(max_attempts, (initial_backoff, max_backoff))| pb::RetryPolicy {
            max_attempts,
            initial_backoff,
            max_backoff,
        },
    ))
    .boxed()
}

fn task_spec(wild_too: bool) -> BoxedStrategy<pb::TaskSpec> {
    let schedule = sometimes(
        schedule(wild_too).prop_map(Some).boxed(),
        Just(None).boxed(),
        wild_too,
    );
    let overlap = sometimes((0i32..5).boxed(), any::<i32>().boxed(), wild_too);
    let labels = sometimes(
        prop::collection::hash_map("[a-z]{1,63}", "[ -~]{0,8}", 0..4).boxed(),
        prop::collection::hash_map(".{0,70}", ".{0,300}", 0..40).boxed(),
        wild_too,
    );
    (
        schedule,
        action(wild_too),
        prop::option::of(duration(1, 86_400, wild_too)),
        overlap,
        retry(wild_too),
        labels,
        prop::option::of(duration(0, 86_400, wild_too)),
    )
        .prop_map(
            |(schedule, action, timeout, overlap, retry, labels, catchup_window)| pb::TaskSpec {
                schedule,
                action,
                timeout,
                overlap,
                retry,
                labels,
                catchup_window,
            },
        )
        .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Any proto spec converts or is refused naming a field under `spec`.
    #[test]
    fn spec_conversion_never_panics(raw in task_spec(true)) {
        match spec("spec", Some(raw), &ctx()) {
            Ok(_) => {}
            Err(Error::InvalidArgument { field, .. } | Error::Unsupported { field, .. }) => {
                prop_assert!(field.starts_with("spec"), "{}", field);
            }
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
    }

    /// An accepted spec, written out as the merge reads the stored one and
    /// converted again, is the same spec: a masked update that names
    /// nothing changes nothing.
    #[test]
    fn valid_specs_round_trip_through_proto(raw in task_spec(false)) {
        let Ok(domain) = spec("spec", Some(raw), &ctx()) else {
            return Ok(());
        };
        let stored = spec_to_proto_unredacted(&domain);
        let again = spec("spec", Some(stored.clone()), &ctx())
            .map_err(|e| TestCaseError::fail(format!("a stored spec is refused: {e}")))?;
        prop_assert_eq!(&again, &domain);
        prop_assert_eq!(spec_to_proto_unredacted(&again), stored);
    }
}

#[test]
fn a_header_value_that_looks_encrypted_is_refused() {
    let mut raw = secret_spec();
    if let Some(pb::action::Kind::Http(h)) = raw.action.as_mut().and_then(|a| a.kind.as_mut()) {
        h.headers
            .insert("x-token".into(), "enc:v1:00000000:abcd".into());
    }
    let error = spec("spec", Some(raw), &ctx()).expect_err("looks sealed");
    assert!(
        error.to_string().starts_with("spec.action.http.headers[\"x-token\"]"),
        "{error}"
    );
}
