//! Replicas sharing one Redis, seen from outside: `recur` processes on a
//! private redis-server, driven over gRPC, their runs counted by an HTTP
//! target (each run sends its occurrence id as the `Idempotency-Key`, so a
//! slot started twice shows as a repeated key and a lost one as a hole).

mod common;

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    time::{Duration, Instant},
};

use ::redis::AsyncCommands;
use chrono::{DateTime, Utc};
use common::{
    binary::Recur,
    http_target::{Behaviour, HttpTarget, Received},
    proxy::Proxy,
    redis::OwnRedis,
    *,
};
use recur::pb::v1::{self as pb, task_service_client::TaskServiceClient};
use tonic::transport::Channel;

/// Shards of the store (the default).
const SHARDS: u32 = 16;
/// The replicas' lease in these tests (seconds), renewed every fifth.
const LEASE_SECS: f64 = 2.0;
/// Longest a killed replica's tasks may wait to fire elsewhere: one
/// interval (1 s) plus the lease plus one renewal, plus a second of slack
/// for a debug build on a busy machine.
const FAILOVER_BOUND: Duration = Duration::from_millis(1000 + 2000 + 400 + 1000);

/// Starts replica `r<i>` for each of `ids` on `redis`.
async fn start(redis: &OwnRedis, ids: &[usize]) -> Vec<Recur> {
    let mut out = Vec::new();
    for i in ids {
        out.push(start_one(&redis.url(), *i).await);
    }
    out
}

async fn start_one(url: &str, i: usize) -> Recur {
    let node = format!("r{i}");
    let lease = LEASE_SECS.to_string();
    Recur::start_with(url, "recur:", &["--node-id", &node, "--lease-secs", &lease]).await
}

/// The shard of a task id, as the store computes it.
fn shard_of(id: &str) -> u32 {
    recur::store::redis::shard_of(id, SHARDS)
}

/// The node id owning each shard, None where none does.
async fn owners(url: &str) -> Vec<Option<String>> {
    let mut conn = common::redis::connect(url).await;
    let mut out = Vec::new();
    for shard in 0..SHARDS {
        let owner: Option<String> = conn
            .hget(format!("recur:{{s{shard}}}:lease"), "owner")
            .await
            .expect("HGET");
        // `r1/<incarnation>` -> `r1`
        out.push(
            owner
                .filter(|o| !o.is_empty())
                .and_then(|o| o.split('/').next().map(str::to_string)),
        );
    }
    out
}

/// Waits until the shards are shared by exactly `nodes` as the store
/// assigns them: shard s to the (s mod n)-th in node-id order.
async fn wait_shared_by(url: &str, nodes: &[&str]) {
    let mut sorted: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
    sorted.sort();
    eventually(&format!("the shards are shared by {nodes:?}"), || {
        let sorted = sorted.clone();
        async move {
            let owners = owners(url).await;
            owners
                .iter()
                .enumerate()
                .all(|(s, owner)| owner.as_deref() == Some(sorted[s % sorted.len()].as_str()))
        }
    })
    .await;
}

/// The slot of a scheduled run's occurrence id, `<task>@<RFC 3339>`.
fn slot_of(key: &str) -> Option<(String, DateTime<Utc>)> {
    let (task, slot) = key.split_once('@')?;
    let slot = DateTime::parse_from_rfc3339(slot).ok()?;
    Some((task.to_string(), slot.with_timezone(&Utc)))
}

/// Per task, the slots its requests carried, in arrival order, with when
/// each arrived.
fn slots_by_task(received: &[Received]) -> HashMap<String, Vec<(DateTime<Utc>, Instant)>> {
    let mut out: HashMap<String, Vec<(DateTime<Utc>, Instant)>> = HashMap::new();
    for request in received {
        let Some(key) = request.headers.get("idempotency-key") else {
            continue;
        };
        let Some((task, slot)) = key.to_str().ok().and_then(slot_of) else {
            continue;
        };
        out.entry(task).or_default().push((slot, request.at));
    }
    out
}

/// Asserts no slot of any task was started twice; returns each task's
/// distinct slots in order.
fn once_each(received: &[Received]) -> HashMap<String, Vec<DateTime<Utc>>> {
    slots_by_task(received)
        .into_iter()
        .map(|(task, slots)| {
            let mut seen = BTreeSet::new();
            for (slot, _) in &slots {
                assert!(seen.insert(*slot), "{task}: slot {slot} started twice");
            }
            (task, seen.into_iter().collect())
        })
        .collect()
}

/// Slots of a 1 s schedule missing between a task's first and last.
fn holes(slots: &[DateTime<Utc>]) -> Vec<DateTime<Utc>> {
    let mut missing = Vec::new();
    for pair in slots.windows(2) {
        let mut next = pair[0] + chrono::Duration::seconds(1);
        while next < pair[1] {
            missing.push(next);
            next += chrono::Duration::seconds(1);
        }
    }
    missing
}

/// The slots a SKIPPED result names: an overlap skip its slot, a catch-up
/// decision its run of `skipped_slots` from the first (the occurrence id
/// holds the slot to the millisecond, as the request's key does).
fn skipped_slots(result: &pb::TaskResult) -> Vec<DateTime<Utc>> {
    if outcome(result) != pb::Outcome::Skipped {
        return Vec::new();
    }
    let Some((_, first)) = slot_of(&result.occurrence_id) else {
        return Vec::new();
    };
    (0..result.skipped_slots.max(1))
        .map(|k| first + chrono::Duration::seconds(k as i64))
        .collect()
}

/// What the replicas logged about leases and catch-up, for a failure.
fn lease_log(replicas: &[Recur]) -> String {
    let mut out = String::new();
    for (i, replica) in replicas.iter().enumerate() {
        for line in replica.log().lines() {
            if line.contains("lease") || line.contains("shards") || line.contains("fell behind") {
                out.push_str(&format!("r{i}: {line}\n"));
            }
        }
    }
    out
}

/// Waits until every task of `ids` has had `n` runs.
async fn wait_runs(target: &HttpTarget, ids: &[String], n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let slots = slots_by_task(&target.received());
        let behind = ids
            .iter()
            .filter(|id| slots.get(*id).map_or(0, Vec::len) < n)
            .count();
        if behind == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{behind} of {} tasks had fewer than {n} runs",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Registers `ids` running every second against `target`, spread over
/// `clients`.
async fn register_every_second(
    clients: &mut [TaskServiceClient<Channel>],
    target: &HttpTarget,
    ids: &[String],
) {
    let n = clients.len();
    for (i, id) in ids.iter().enumerate() {
        let spec = spec_every(Duration::from_secs(1), http_get(&target.url("/tick")));
        register(&mut clients[i % n], id, spec).await;
    }
}

async fn clients(replicas: &[Recur]) -> Vec<TaskServiceClient<Channel>> {
    let mut out = Vec::new();
    for replica in replicas {
        out.push(replica.client().await);
    }
    out
}

#[tokio::test]
async fn three_replicas_start_each_slot_of_a_one_second_task_once() {
    let redis = OwnRedis::start();
    let target = HttpTarget::start().await;
    let replicas = start(&redis, &[0, 1, 2]).await;
    wait_shared_by(&redis.url(), &["r0", "r1", "r2"]).await;
    let mut clients = clients(&replicas).await;
    let ids = vec!["tick".to_string()];
    register_every_second(&mut clients, &target, &ids).await;
    // The first run at registration, then 20 s of slots.
    wait_runs(&target, &ids, 21).await;
    let slots = once_each(&target.received());
    assert_eq!(
        holes(&slots["tick"]),
        Vec::<DateTime<Utc>>::new(),
        "no slot lost"
    );
    let task = get(&mut clients[2], "tick").await;
    assert_eq!(task.skipped_count, 0);
    for replica in replicas {
        replica.terminate().await;
    }
}

#[tokio::test]
async fn three_replicas_share_a_thousand_tasks_each_slot_once() {
    let redis = OwnRedis::start();
    let target = HttpTarget::start().await;
    let replicas = start(&redis, &[0, 1, 2]).await;
    wait_shared_by(&redis.url(), &["r0", "r1", "r2"]).await;
    // Each replica owns a share: 16 shards over 3 is 5 or 6 each.
    let owners = owners(&redis.url()).await;
    for node in ["r0", "r1", "r2"] {
        let owned = owners.iter().flatten().filter(|o| *o == node).count();
        assert!((5..=6).contains(&owned), "{node} owns {owned} shards");
    }
    let mut clients = clients(&replicas).await;
    // One stream on r0 follows the results of every replica's runs.
    let mut results = stream(&mut clients[0], &[], "", false).await;
    let ids: Vec<String> = (0..1000).map(|i| format!("t{i:04}")).collect();
    register_every_second(&mut clients, &target, &ids).await;
    wait_runs(&target, &ids, 10).await;
    let slots = once_each(&target.received());
    // On a loaded machine a run may outlast its second (the overlap policy
    // skips the next slot) or a replica may fall behind (catch-up passes
    // over slots): allowed, when reported. A hole that no SKIPPED result
    // names is a slot silently lost.
    let mut unreported: HashSet<(String, DateTime<Utc>)> = ids
        .iter()
        .flat_map(|id| holes(&slots[id]).into_iter().map(|h| (id.clone(), h)))
        .collect();
    let mut fired_by: BTreeSet<&str> = BTreeSet::new();
    let mut last: Option<(u64, u64)> = None;
    let mut read = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while read < 3000 || !unreported.is_empty() {
        let result = match next_result(&mut results).await {
            Ok(Some(result)) => result,
            other => panic!(
                "the stream ended ({other:?}) with slots lost silently: {unreported:?}\n{}",
                lease_log(&replicas)
            ),
        };
        read += 1;
        let seq = cursor_seq(&result.cursor);
        assert!(last < Some(seq), "cursor {} out of order", result.cursor);
        last = Some(seq);
        if let Some(owner) = &owners[shard_of(&result.task_id) as usize] {
            fired_by.insert(owner.as_str());
        }
        for slot in skipped_slots(&result) {
            unreported.remove(&(result.task_id.clone(), slot));
        }
        assert!(
            Instant::now() < deadline,
            "slots lost silently (no SKIPPED result names them): {unreported:?}\n{}",
            lease_log(&replicas)
        );
    }
    assert_eq!(fired_by, BTreeSet::from(["r0", "r1", "r2"]));
    for replica in replicas {
        replica.terminate().await;
    }
}

#[tokio::test]
async fn a_replica_killed_with_kill_9_has_its_tasks_fire_elsewhere_within_the_bound() {
    let redis = OwnRedis::start();
    let target = HttpTarget::start().await;
    let mut replicas = start(&redis, &[0, 1, 2]).await;
    wait_shared_by(&redis.url(), &["r0", "r1", "r2"]).await;
    let mut clients = clients(&replicas).await;
    let ids: Vec<String> = (0..48).map(|i| format!("k{i:02}")).collect();
    register_every_second(&mut clients, &target, &ids).await;
    wait_runs(&target, &ids, 2).await;
    let owners = owners(&redis.url()).await;
    let victims: Vec<String> = ids
        .iter()
        .filter(|id| owners[shard_of(id) as usize].as_deref() == Some("r0"))
        .cloned()
        .collect();
    assert!(!victims.is_empty(), "r0 fires some of the tasks");

    let killed = Instant::now();
    replicas.remove(0).kill();
    wait_shared_by(&redis.url(), &["r1", "r2"]).await;
    // Every task of r0's shards fires elsewhere, within the bound.
    let deadline = killed + Duration::from_secs(30);
    let resumed = loop {
        let slots = slots_by_task(&target.received());
        let first_after: Vec<Option<Instant>> = victims
            .iter()
            .map(|id| slots[id].iter().map(|(_, at)| *at).find(|at| *at > killed))
            .collect();
        if first_after.iter().all(Option::is_some) {
            break first_after.into_iter().flatten().collect::<Vec<_>>();
        }
        assert!(
            Instant::now() < deadline,
            "r0's tasks did not fire elsewhere"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let worst = resumed
        .iter()
        .map(|at| *at - killed)
        .max()
        .unwrap_or_default();
    assert!(
        worst <= FAILOVER_BOUND,
        "the last of r0's tasks fired {worst:?} after the kill (bound {FAILOVER_BOUND:?})"
    );
    // Then they run every second again, and no slot was started twice.
    wait_runs(&target, &ids, 8).await;
    let slots = once_each(&target.received());
    // What was missed in the failover is reported, never silent: each hole
    // is a skipped slot (catch-up ran the latest) or a run r0 had claimed,
    // reported ABANDONED.
    let mut client = clients.pop().expect("a client");
    let history = history(&mut client, "").await;
    for id in &victims {
        let missing = holes(&slots[id]).len() as u64;
        let task = get(&mut client, id).await;
        let abandoned = history
            .iter()
            .filter(|r| r.task_id == *id && outcome(r) == pb::Outcome::Abandoned)
            .count() as u64;
        assert!(
            missing <= task.skipped_count + abandoned,
            "{id}: {missing} slots missing, {} skipped, {abandoned} abandoned",
            task.skipped_count
        );
    }
    for replica in replicas {
        replica.terminate().await;
    }
}

#[tokio::test]
async fn a_replica_stopped_gracefully_hands_its_tasks_over_with_no_gap() {
    let redis = OwnRedis::start();
    let target = HttpTarget::start().await;
    let mut replicas = start(&redis, &[0, 1, 2]).await;
    wait_shared_by(&redis.url(), &["r0", "r1", "r2"]).await;
    let mut clients = clients(&replicas).await;
    let ids: Vec<String> = (0..48).map(|i| format!("g{i:02}")).collect();
    register_every_second(&mut clients, &target, &ids).await;
    wait_runs(&target, &ids, 2).await;
    let stopping = replicas.remove(0);
    let stopped = Instant::now();
    stopping.sigterm();
    // Handed over at once, not after the lease.
    wait_shared_by(&redis.url(), &["r1", "r2"]).await;
    let handed_over = stopped.elapsed();
    stopping.exited().await;
    assert!(
        handed_over < Duration::from_secs_f64(LEASE_SECS),
        "the shards moved {handed_over:?} after SIGTERM, not at once"
    );
    wait_runs(&target, &ids, 6).await;
    let slots = once_each(&target.received());
    let mut client = clients.pop().expect("a client");
    for id in &ids {
        assert_eq!(
            holes(&slots[id]),
            Vec::<DateTime<Utc>>::new(),
            "{id}: no gap"
        );
        assert_eq!(get(&mut client, id).await.skipped_count, 0, "{id}");
    }
    for replica in replicas {
        replica.terminate().await;
    }
}

/// A cursor's place in the log: `<epoch>-<ms>-<seq>`.
fn cursor_seq(cursor: &str) -> (u64, u64) {
    let mut parts = cursor.rsplitn(3, '-');
    let seq = parts.next().and_then(|p| p.parse().ok());
    let ms = parts.next().and_then(|p| p.parse().ok());
    ms.zip(seq)
        .unwrap_or_else(|| panic!("{cursor} is not a recur cursor"))
}

/// How many runs of task `id` reached the target.
fn runs_of(received: &[Received], id: &str) -> usize {
    let prefix = format!("{id}@");
    received
        .iter()
        .filter(|r| {
            r.headers
                .get("idempotency-key")
                .and_then(|k| k.to_str().ok())
                .is_some_and(|k| k.starts_with(&prefix))
        })
        .count()
}

/// `spec` with its first slot `secs` seconds from now, to the nanosecond:
/// whole seconds put it anywhere from 0 to `secs` ahead, and a start_at
/// already past when a loaded server registers the task means the next
/// slot on its grid (an hour later for an hourly task), which a test
/// waiting for the first run then never sees.
fn starting_in(mut spec: pb::TaskSpec, secs: i64) -> pb::TaskSpec {
    if let Some(schedule) = spec.schedule.as_mut() {
        let at = Utc::now() + chrono::Duration::seconds(secs);
        schedule.start_at = Some(prost_types::Timestamp {
            seconds: at.timestamp(),
            nanos: at.timestamp_subsec_nanos() as i32,
        });
    }
    spec
}

/// A task id whose shard `node` owns.
fn id_owned_by(owners: &[Option<String>], node: &str, stem: &str) -> String {
    (0..10_000)
        .map(|i| format!("{stem}{i}"))
        .find(|id| owners[shard_of(id) as usize].as_deref() == Some(node))
        .expect("some id hashes to one of the node's shards")
}

#[tokio::test]
async fn a_control_call_on_one_replica_takes_effect_on_the_one_that_fires() {
    let redis = OwnRedis::start();
    let target = HttpTarget::start().await;
    let replicas = start(&redis, &[0, 1]).await;
    wait_shared_by(&redis.url(), &["r0", "r1"]).await;
    let id = id_owned_by(&owners(&redis.url()).await, "r1", "ctl");
    let mut on_r0 = replicas[0].client().await;
    let hour = Duration::from_secs(3600);

    // Registered on r0, armed by r1: the first run, at start_at.
    let asked = Instant::now();
    let spec = starting_in(spec_every(hour, http_get(&target.url("/ctl"))), 1);
    register(&mut on_r0, &id, spec).await;
    let first = target.next_request().await;
    assert!(
        first.at - asked < Duration::from_millis(2500),
        "the first run came {:?} after the registration",
        first.at - asked
    );

    // Changed on r0 to every second: r1 fires at the new cadence.
    on_r0
        .update_task(pb::UpdateTaskRequest {
            task_id: id.clone(),
            spec: Some(spec_every(
                Duration::from_secs(1),
                http_get(&target.url("/ctl")),
            )),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["schedule.every".into()],
            }),
            ..Default::default()
        })
        .await
        .expect("update");
    let updated = Instant::now();
    let next = target.next_request().await;
    assert!(
        next.at - updated < Duration::from_millis(1500),
        "the next run came {:?} after the update",
        next.at - updated
    );

    // Paused on r0: nothing more starts. Resumed on r0: r1 fires again.
    on_r0
        .pause_task(pb::PauseTaskRequest {
            task_id: id.clone(),
            reason: "test".into(),
        })
        .await
        .expect("pause");
    let paused = Instant::now();
    let resume_at = paused + Duration::from_millis(2500);
    tokio::time::sleep_until(resume_at.into()).await;
    let during: Vec<Received> = target
        .received()
        .into_iter()
        .filter(|r| r.at > paused)
        .collect();
    assert!(
        during.is_empty(),
        "{} runs started while paused",
        during.len()
    );
    on_r0
        .resume_task(pb::ResumeTaskRequest {
            task_id: id.clone(),
        })
        .await
        .expect("resume");
    let resumed = Instant::now();
    let next = target.next_request().await;
    assert!(
        next.at - resumed < Duration::from_millis(1500),
        "the first run after resuming came {:?} after it",
        next.at - resumed
    );
    for replica in replicas {
        replica.terminate().await;
    }
}

#[tokio::test]
async fn a_cancel_on_one_replica_stops_a_run_going_on_another_within_a_second() {
    let redis = OwnRedis::start();
    let target = HttpTarget::start().await;
    target.set(
        "/slow",
        Behaviour {
            hold: true,
            ..Behaviour::default()
        },
    );
    let replicas = start(&redis, &[0, 1]).await;
    wait_shared_by(&redis.url(), &["r0", "r1"]).await;
    let mut on_r0 = replicas[0].client().await;
    let mut on_r1 = replicas[1].client().await;
    let hour = Duration::from_secs(3600);
    // Registered with its first slot an hour away, triggered on r1: the
    // run goes on r1.
    let spec = starting_in(spec_every(hour, http_get(&target.url("/slow"))), 3600);
    register(&mut on_r1, "held", spec).await;
    trigger(&mut on_r1, "held").await;
    target.next_request().await;

    on_r0
        .cancel_task(pb::CancelTaskRequest {
            task_id: "held".into(),
            reason: "test".into(),
        })
        .await
        .expect("cancel");
    let cancelled_at = Utc::now();
    eventually("the run going on r1 is cancelled", || {
        let mut client = on_r0.clone();
        async move {
            let task = get(&mut client, "held").await;
            task.last_result
                .is_some_and(|r| outcome(&r) == pb::Outcome::Cancelled)
        }
    })
    .await;
    let result = get(&mut on_r0, "held")
        .await
        .last_result
        .expect("a last result");
    let finished = result.finished_at.expect("finished_at");
    let finished =
        DateTime::from_timestamp(finished.seconds, finished.nanos as u32).expect("a time");
    assert!(
        finished - cancelled_at < chrono::Duration::seconds(1),
        "the run stopped {:?} after the cancel",
        finished - cancelled_at
    );
    target.release();
    for replica in replicas {
        replica.terminate().await;
    }
}

#[tokio::test]
async fn registrations_racing_on_two_replicas_make_one_task() {
    let redis = OwnRedis::start();
    let target = HttpTarget::start().await;
    let replicas = start(&redis, &[0, 1]).await;
    let mut clients = clients(&replicas).await;
    let hour = Duration::from_secs(3600);
    let spec = spec_every(hour, http_get(&target.url("/race")));
    for round in 0..20 {
        // The same id on both at once.
        let id = format!("race{round}");
        let calls = clients.iter_mut().map(|client| {
            client.register_task(pb::RegisterTaskRequest {
                task_id: id.clone(),
                spec: Some(spec.clone()),
                request_id: String::new(),
                ..Default::default()
            })
        });
        let tasks: Vec<pb::Task> = futures::future::join_all(calls)
            .await
            .into_iter()
            .map(|r| r.expect("an identical registration succeeds").into_inner())
            .collect();
        assert_eq!(tasks[0].created_at, tasks[1].created_at, "one task, {id}");
        // The same request id, no task id, on both at once.
        let request_id = format!("request-{round}");
        let calls = clients.iter_mut().map(|client| {
            client.register_task(pb::RegisterTaskRequest {
                task_id: String::new(),
                spec: Some(spec.clone()),
                request_id: request_id.clone(),
                ..Default::default()
            })
        });
        let tasks: Vec<pb::Task> = futures::future::join_all(calls)
            .await
            .into_iter()
            .map(|r| r.expect("a retried registration succeeds").into_inner())
            .collect();
        assert_eq!(
            tasks[0].task_id, tasks[1].task_id,
            "one task per request id"
        );
    }
    let listed = clients[0]
        .list_tasks(pb::ListTasksRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .tasks;
    assert_eq!(listed.len(), 40, "20 by id, 20 by request id");
    let distinct: HashSet<String> = listed.into_iter().map(|t| t.task_id).collect();
    assert_eq!(distinct.len(), 40);
    for replica in replicas {
        replica.terminate().await;
    }
}

#[tokio::test]
async fn a_replica_cut_off_past_its_lease_has_its_run_given_up_and_its_late_result_fenced() {
    let redis = OwnRedis::start();
    let proxy = Proxy::start(redis.port).await;
    let target = HttpTarget::start().await;
    target.set(
        "/held",
        Behaviour {
            hold: true,
            ..Behaviour::default()
        },
    );
    let r0 = start_one(&redis.url(), 0).await;
    // r1 reaches Redis only through the proxy.
    let r1 = start_one(&proxy.url(), 1).await;
    wait_shared_by(&redis.url(), &["r0", "r1"]).await;
    let mut on_r0 = r0.client().await;
    let mut on_r1 = r1.client().await;
    let spec = starting_in(
        spec_every(Duration::from_secs(3600), http_get(&target.url("/held"))),
        3600,
    );
    register(&mut on_r1, "cut", spec).await;
    trigger(&mut on_r1, "cut").await;
    target.next_request().await;

    // Cut off: r1's lease lapses, r0 takes every shard and gives r1's run up.
    proxy.freeze();
    wait_shared_by(&redis.url(), &["r0"]).await;
    eventually("r0 reports r1's run ABANDONED", || {
        let mut client = on_r0.clone();
        async move {
            get(&mut client, "cut")
                .await
                .last_result
                .is_some_and(|r| outcome(&r) == pb::Outcome::Abandoned)
        }
    })
    .await;

    // The run ends on r1 and, once r1 reaches Redis again, its result is
    // recorded: as history, marked, changing nothing of the task.
    target.release();
    proxy.thaw();
    eventually("r1's late result is in the history", || {
        let mut client = on_r0.clone();
        async move {
            history(&mut client, "")
                .await
                .iter()
                .any(|r| r.task_id == "cut" && r.claim_lapsed)
        }
    })
    .await;
    let results: Vec<pb::TaskResult> = history(&mut on_r0, "")
        .await
        .into_iter()
        .filter(|r| r.task_id == "cut")
        .collect();
    let seen: Vec<(u64, pb::Outcome, bool)> = results
        .iter()
        .map(|r| (r.run, outcome(r), r.claim_lapsed))
        .collect();
    assert_eq!(
        seen,
        [
            (1, pb::Outcome::Abandoned, false),
            (1, pb::Outcome::Succeeded, true)
        ]
    );
    let task = get(&mut on_r0, "cut").await;
    assert_eq!(
        task.last_result.map(|r| outcome(&r)),
        Some(pb::Outcome::Abandoned),
        "the late result changed nothing of the task"
    );
    // Nothing of run 1 is left in flight: a manual run is not refused
    // (SKIP would refuse it while one is).
    target.set("/held", Behaviour::default());
    trigger(&mut on_r0, "cut").await;
    r0.terminate().await;
    r1.terminate().await;
}

#[tokio::test]
async fn a_replica_of_a_format_the_store_no_longer_allows_refuses_to_start_and_stops_firing() {
    let redis = OwnRedis::start();
    let r0 = start_one(&redis.url(), 0).await;
    wait_shared_by(&redis.url(), &["r0"]).await;
    // A newer build that cannot share the store with this one took over.
    let mut conn = common::redis::connect(&redis.url()).await;
    let _: () = conn.set("recur:{meta}:format", "3").await.expect("SET");
    let _: () = conn.set("recur:{meta}:compat", "3").await.expect("SET");
    // The running one stops renewing: its shards lapse.
    eventually("r0's shards lapse", || {
        let url = redis.url();
        async move {
            let mut conn = common::redis::connect(&url).await;
            let mut lapsed = true;
            for shard in 0..SHARDS {
                let until: Option<i64> = conn
                    .hget(format!("recur:{{s{shard}}}:lease"), "until")
                    .await
                    .expect("HGET");
                let now = Utc::now().timestamp_millis();
                lapsed &= until.is_none_or(|until| until < now);
            }
            lapsed
        }
    })
    .await;
    assert!(r0.log().contains("requires format 3"), "{}", r0.log());
    // A new one refuses to start, saying why.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_recur"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--redis-url",
            &redis.url(),
        ])
        .env("NO_COLOR", "1")
        .output()
        .expect("run recur");
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(
        said.contains("format 3") && said.contains("upgrade recur"),
        "{said}"
    );
    drop(r0);
}

#[tokio::test]
async fn redis_back_empty_gets_the_newest_state_any_replica_held() {
    let mut redis = OwnRedis::start();
    let target = HttpTarget::start().await;
    let replicas = start(&redis, &[0, 1, 2]).await;
    wait_shared_by(&redis.url(), &["r0", "r1", "r2"]).await;
    let mut clients = clients(&replicas).await;
    let ids: Vec<String> = (0..12).map(|i| format!("e{i:02}")).collect();
    register_every_second(&mut clients, &target, &ids).await;
    // Firing moves each task on its owner alone (no notice): the others
    // hold it as registered.
    wait_runs(&target, &ids, 3).await;
    let (paused, cancelled, deleted) = (&ids[0], &ids[1], &ids[2]);
    clients[0]
        .pause_task(pb::PauseTaskRequest {
            task_id: paused.clone(),
            reason: "kept".into(),
        })
        .await
        .expect("pause");
    clients[1]
        .cancel_task(pb::CancelTaskRequest {
            task_id: cancelled.clone(),
            reason: "kept".into(),
        })
        .await
        .expect("cancel");
    clients[2]
        .cancel_task(pb::CancelTaskRequest {
            task_id: deleted.clone(),
            reason: "then deleted".into(),
        })
        .await
        .expect("cancel");
    eventually("the cancelled task can be deleted", || {
        let mut client = clients[2].clone();
        let id = deleted.clone();
        async move {
            client
                .delete_task(pb::DeleteTaskRequest { task_id: id })
                .await
                .is_ok()
        }
    })
    .await;
    let mut before = HashMap::new();
    for id in &ids[..2] {
        before.insert(id.clone(), get(&mut clients[0], id).await);
    }
    let counted: HashMap<String, u64> = {
        let mut out = HashMap::new();
        for id in &ids[3..] {
            out.insert(id.clone(), get(&mut clients[0], id).await.run_count);
        }
        out
    };

    redis.restart();
    // Every definition is back, in the newest state any replica held: a
    // task's runs as counted by the replica that fired it, a pause and a
    // cancel as made, a delete still a delete.
    for client in &clients {
        eventually("each replica is on the restored store", || {
            let mut client = client.clone();
            let id = ids[11].clone();
            async move {
                client
                    .get_task(pb::GetTaskRequest {
                        task_id: id,
                        ..Default::default()
                    })
                    .await
                    .is_ok()
            }
        })
        .await;
    }
    for client in &mut clients {
        for (id, was) in &before {
            let now = get(client, id).await;
            assert_eq!(state(&now), state(was), "{id}");
            assert_eq!(now.run_count, was.run_count, "{id}");
            // The fingerprint key was written back too: one key, every
            // replica.
            assert_eq!(now.spec_fingerprint, was.spec_fingerprint, "{id}");
        }
        for (id, runs) in &counted {
            let now = get(client, id).await;
            assert!(
                now.run_count >= *runs,
                "{id}: {} runs, {runs} before",
                now.run_count
            );
        }
        let gone = client
            .get_task(pb::GetTaskRequest {
                task_id: deleted.clone(),
                ..Default::default()
            })
            .await;
        assert_eq!(
            gone.err().map(|s| s.code()),
            Some(tonic::Code::NotFound),
            "{deleted}"
        );
    }
    let logs: String = replicas.iter().map(Recur::log).collect();
    assert!(logs.contains("the store came back empty"), "{logs}");
    // A replica that starts after the loss reads the key written back:
    // its fingerprints are the others'.
    let late = start_one(&redis.url(), 3).await;
    let mut on_late = late.client().await;
    for (id, was) in &before {
        let now = get(&mut on_late, id).await;
        assert_eq!(now.spec_fingerprint, was.spec_fingerprint, "{id} on r3");
    }
    late.terminate().await;
    for replica in replicas {
        replica.terminate().await;
    }
}

#[tokio::test]
async fn overlap_policies_hold_across_replicas() {
    let redis = OwnRedis::start();
    let target = HttpTarget::start().await;
    target.set(
        "/hold",
        Behaviour {
            hold: true,
            ..Behaviour::default()
        },
    );
    let replicas = start(&redis, &[0, 1]).await;
    wait_shared_by(&redis.url(), &["r0", "r1"]).await;
    let owners = owners(&redis.url()).await;
    // Both fired by r0; each gets a manual run going on r1 before its
    // first slot.
    let skip = id_owned_by(&owners, "r0", "skip");
    let cancel = id_owned_by(&owners, "r0", "cancel");
    let mut on_r1 = replicas[1].client().await;
    for (id, policy) in [
        (&skip, pb::OverlapPolicy::Skip),
        (&cancel, pb::OverlapPolicy::CancelRunning),
    ] {
        // Time enough to register and trigger both before it.
        let mut spec = starting_in(
            spec_every(Duration::from_secs(3600), http_get(&target.url("/hold"))),
            5,
        );
        spec.overlap = policy as i32;
        register(&mut on_r1, id, spec).await;
        trigger(&mut on_r1, id).await;
    }
    // At the slot, r0 decides by the runs the store holds: SKIP passes the
    // slot over; CANCEL_RUNNING cancels the run going on r1 and starts
    // the slot's run.
    eventually("the slot of the SKIP task is skipped", || {
        let mut client = on_r1.clone();
        let id = skip.clone();
        async move { get(&mut client, &id).await.skipped_count == 1 }
    })
    .await;
    eventually("r1's run of the CANCEL_RUNNING task is cancelled", || {
        let mut client = on_r1.clone();
        let id = cancel.clone();
        async move {
            history(&mut client, "")
                .await
                .iter()
                .any(|r| r.task_id == id && r.run == 1 && outcome(r) == pb::Outcome::Cancelled)
        }
    })
    .await;
    eventually("the CANCEL_RUNNING slot's run started", || {
        let started = runs_of(&target.received(), &cancel);
        async move { started == 2 }
    })
    .await;
    assert_eq!(
        runs_of(&target.received(), &skip),
        1,
        "the SKIP task's slot did not start a run"
    );
    target.release();
    for replica in replicas {
        replica.terminate().await;
    }
}

#[tokio::test]
async fn programs_see_one_task_the_same_from_every_replica() {
    let redis = OwnRedis::start();
    let target = HttpTarget::start().await;
    let replicas = start(&redis, &[0, 1]).await;
    wait_shared_by(&redis.url(), &["r0", "r1"]).await;
    let owners = owners(&redis.url()).await;
    let id = id_owned_by(&owners, "r1", "prog");
    let mut on_r0 = replicas[0].client().await;
    let mut on_r1 = replicas[1].client().await;

    // A watcher on r0 is told of changes made on r1.
    let mut events = on_r0
        .watch_tasks(pb::WatchTasksRequest::default())
        .await
        .expect("watch")
        .into_inner();
    let synced = next_event(&mut events).await;
    assert_eq!(synced.r#type, pb::TaskEventType::Synced as i32);
    let hour = Duration::from_secs(3600);
    let spec = spec_every(hour, http_get(&target.url("/prog")));
    let registered = register(&mut on_r1, &id, spec.clone()).await;
    let created = next_event(&mut events).await;
    assert_eq!(
        (created.r#type, created.task_id.as_str()),
        (pb::TaskEventType::Created as i32, id.as_str())
    );

    // The fingerprint key is the store's: a dry run on r0 matches what r1
    // stored.
    let dry = on_r0
        .register_task(pb::RegisterTaskRequest {
            task_id: id.clone(),
            spec: Some(spec),
            validate_only: true,
            ..Default::default()
        })
        .await
        .expect("dry run")
        .into_inner();
    assert_eq!(dry.spec_fingerprint, registered.spec_fingerprint);

    // A manual run runs on the replica asked for it, which names itself;
    // the run's health is stored for every replica to read.
    target.set(
        "/prog",
        Behaviour {
            status: Some(503),
            ..Default::default()
        },
    );
    let mut results = stream(&mut on_r0, &[&id], "", false).await;
    trigger(&mut on_r0, &id).await;
    let result = next_result(&mut results)
        .await
        .expect("stream")
        .expect("result");
    assert_eq!(result.executor, "r0");
    assert_eq!(outcome(&result), pb::Outcome::Failed);
    let task = get(&mut on_r1, &id).await;
    assert_eq!((task.failure_count, task.consecutive_failures), (1, 1));
    assert_eq!(task.recent_runs.len(), 1);
    for replica in replicas {
        replica.terminate().await;
    }
}
