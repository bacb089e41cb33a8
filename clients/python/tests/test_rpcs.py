"""Every RPC of recur.v1.TaskService through the wrapper, against the binary."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from conftest import Reader, collect, unique

import recur_client
from recur_client import (
    AlreadyExistsError,
    Client,
    NotFoundError,
    Outcome,
    Scope,
    TaskEventType,
    TaskState,
    Trigger,
    recur_pb2,
    to_datetime,
)


def test_register_validate_only_then_register_has_same_fingerprint(
    client: Client, http_target: str
) -> None:
    tid = unique("reg")
    kwargs = dict(
        every=timedelta(hours=1),
        http_url=http_target,
        http_method="post",
        headers={"X-Token": "s3cret"},
        body='{"hello": 1}',
        labels={"team": "py"},
        timeout=timedelta(seconds=5),
        overlap="buffer_one",
        retry_max_attempts=3,
        retry_initial_backoff=0.5,
        catchup_window=timedelta(0),
    )
    preview = client.register(tid, validate_only=True, **kwargs)  # type: ignore[arg-type]
    assert preview.task_id == tid
    assert preview.spec_fingerprint
    with pytest.raises(NotFoundError):
        client.get(tid)  # a dry run stores nothing

    task = client.register(tid, **kwargs)  # type: ignore[arg-type]
    assert task.spec_fingerprint == preview.spec_fingerprint
    assert task.state == TaskState.TASK_STATE_ACTIVE
    assert task.spec.schedule.every.ToTimedelta() == timedelta(hours=1)
    assert task.spec.action.http.method == "POST"
    assert task.spec.action.http.headers == {"x-token": "<redacted>"}
    assert task.spec.action.http.body == b'{"hello": 1}'
    assert task.spec.overlap == recur_pb2.OVERLAP_POLICY_BUFFER_ONE
    assert task.spec.retry.max_attempts == 3
    assert task.spec.retry.initial_backoff.ToTimedelta() == timedelta(milliseconds=500)
    assert task.spec.HasField("catchup_window")
    assert task.spec.catchup_window.ToTimedelta() == timedelta(0)
    assert dict(task.spec.labels) == {"team": "py"}
    assert task.schedule_description == "every 1h"
    assert to_datetime(task.created_at) <= datetime.now(timezone.utc)

    # Idempotent: the same spec again returns the stored task.
    again = client.register(tid, **kwargs)  # type: ignore[arg-type]
    assert again.created_at == task.created_at
    assert again.spec_fingerprint == task.spec_fingerprint
    # The fingerprint covers header values, which read back redacted.
    other = client.register(
        unique("reg"),
        validate_only=True,
        **{**kwargs, "headers": {"X-Token": "other"}},  # type: ignore[arg-type]
    )
    assert other.spec_fingerprint != task.spec_fingerprint
    # Registering the id again with a different spec is ALREADY_EXISTS,
    # also as a dry run.
    with pytest.raises(AlreadyExistsError):
        client.register(
            tid, validate_only=True, **{**kwargs, "headers": {"X-Token": "other"}}  # type: ignore[arg-type]
        )


def test_register_generated_id_with_request_id(client: Client, http_target: str) -> None:
    request_id = uuid.uuid4().hex
    first = client.register(every=3600, http_url=http_target, request_id=request_id)
    assert first.task_id
    second = client.register(every=3600, http_url=http_target, request_id=request_id)
    assert second.task_id == first.task_id


def test_register_cron_and_whole_spec(client: Client, http_target: str) -> None:
    tid = unique("cron")
    task = client.register(
        tid, cron="0 9 * * MON-FRI", time_zone="Europe/Berlin", http_url=http_target
    )
    assert task.spec.schedule.cron == "0 9 * * MON-FRI"
    assert "Europe/Berlin" in task.schedule_description
    spec, _ = recur_client.build_spec(every=timedelta(minutes=5), http_url=http_target)
    assert client.register(unique("spec"), spec=spec).spec.schedule.every.seconds == 300


def test_get_with_next_run_count(client: Client, http_target: str) -> None:
    tid = unique("get")
    start = (datetime.now(timezone.utc) + timedelta(hours=1)).replace(microsecond=0)
    client.register(tid, every=timedelta(seconds=10), start_at=start, http_url=http_target)
    task = client.get(tid, next_run_count=5)
    times = [to_datetime(t) for t in task.next_run_times]
    assert times == [start + timedelta(seconds=10 * i) for i in range(5)]
    assert to_datetime(task.next_run_at) == start
    assert client.get(tid).next_run_times == []


def test_update_by_keywords_keeps_secret_headers(client: Client, http_target: str) -> None:
    tid = unique("upd")
    task = client.register(
        tid, every=timedelta(hours=1), http_url=http_target, headers={"Authorization": "Bearer x"}
    )
    preview = client.update(tid, every=timedelta(hours=2), validate_only=True)
    assert preview.spec.schedule.every.ToTimedelta() == timedelta(hours=2)
    assert client.get(tid).spec.schedule.every.ToTimedelta() == timedelta(hours=1)

    updated = client.update(tid, every=timedelta(hours=2), labels={"v": "2"})
    assert updated.spec.schedule.every.ToTimedelta() == timedelta(hours=2)
    assert dict(updated.spec.labels) == {"v": "2"}
    assert updated.spec.action.http.headers == {"authorization": "<redacted>"}
    assert updated.spec_fingerprint != task.spec_fingerprint
    # Headers kept: the spec with the original header value has the same
    # fingerprint as the stored one.
    same = client.register(
        tid,
        validate_only=True,
        every=timedelta(hours=2),
        http_url=http_target,
        headers={"Authorization": "Bearer x"},
        labels={"v": "2"},
    )
    assert same.spec_fingerprint == updated.spec_fingerprint

    # None clears a field named in the mask.
    cleared = client.update(tid, labels=None)
    assert dict(cleared.spec.labels) == {}

    # An explicit mask with a spec.
    spec = recur_pb2.TaskSpec(retry=recur_pb2.RetryPolicy(max_attempts=4))
    masked = client.update(tid, spec=spec, update_mask=["retry.max_attempts"])
    assert masked.spec.retry.max_attempts == 4
    assert masked.spec.schedule.every.ToTimedelta() == timedelta(hours=2)


def test_list_iterates_all_pages(client: Client, http_target: str) -> None:
    label = uuid.uuid4().hex
    ids = sorted(unique("list") for _ in range(5))
    for tid in ids:
        client.register(tid, every=3600, http_url=http_target, labels={"batch": label})
    client.pause(ids[1])
    listed = list(client.list(labels={"batch": label}, page_size=2, next_run_count=2))
    assert [t.task_id for t in listed] == ids
    assert all(len(t.next_run_times) == 2 for t in listed if t.task_id != ids[1])
    paused = list(client.list(labels={"batch": label}, state=TaskState.TASK_STATE_PAUSED))
    assert [t.task_id for t in paused] == [ids[1]]


def test_pause_trigger_resume_cancel_delete_and_results(client: Client, http_target: str) -> None:
    tid = unique("life")
    client.register(tid, every=timedelta(hours=1), http_url=http_target)

    paused = client.pause(tid, "deploy")
    assert paused.state == TaskState.TASK_STATE_PAUSED
    assert paused.pause_reason == "deploy"
    assert not paused.HasField("next_run_at")
    assert client.pause(tid, "deploy").state == TaskState.TASK_STATE_PAUSED  # idempotent

    # Without a cursor the stream shows live results: open it first.
    stream = client.results([tid])
    reader = Reader(stream, 1)
    run = client.trigger(tid)  # works while paused
    result = reader.wait()[0]
    assert isinstance(result, recur_pb2.TaskResult)
    assert result.task_id == tid
    assert result.run == run
    assert result.trigger == Trigger.TRIGGER_MANUAL
    assert result.outcome == Outcome.OUTCOME_SUCCEEDED, result.error
    assert result.http_status == 200
    assert result.output == b'{"ok":true}'
    assert result.cursor
    assert result.executor
    assert result.occurrence_id.startswith(tid + "@")
    assert stream.cursor == result.cursor

    # The same result replayed from history.
    history = list(client.results(tid, history_only=True))
    assert [r.cursor for r in history] == [result.cursor]
    assert list(client.results(tid, after_cursor=result.cursor, history_only=True)) == []

    task = client.get(tid)
    assert task.run_count == 1
    assert task.last_result.cursor == result.cursor
    assert [r.run for r in task.recent_runs] == [result.run]
    assert task.HasField("last_success_at")

    resumed = client.resume(tid)
    assert resumed.state == TaskState.TASK_STATE_ACTIVE
    assert resumed.HasField("next_run_at")

    cancelled = client.cancel(tid, "done")
    assert cancelled.state == TaskState.TASK_STATE_CANCELLED
    client.delete(tid)
    with pytest.raises(NotFoundError):
        client.get(tid)


def test_results_follow_scheduled_runs(client: Client, http_target: str) -> None:
    tid = unique("every")
    client.register(tid, every=timedelta(seconds=1), http_url=http_target)
    results = collect(client.results([tid]), 2, timeout=15)
    runs = [r.run for r in results]  # type: ignore[attr-defined]
    assert runs == sorted(runs) and len(set(runs)) == 2
    assert all(r.trigger == Trigger.TRIGGER_SCHEDULED for r in results)  # type: ignore[attr-defined]
    client.cancel(tid)


def test_who_am_i_anonymous(client: Client) -> None:
    me = client.who_am_i()
    assert me.name == "anonymous"
    assert set(me.scopes) == {Scope.SCOPE_READ, Scope.SCOPE_WRITE, Scope.SCOPE_ADMIN}
    assert me.namespace == ""


def test_watch_tasks_existing_synced_then_created(client: Client, http_target: str) -> None:
    before = unique("watch")
    client.register(before, every=3600, http_url=http_target)
    with client.watch_tasks(next_run_count=1) as events:
        seen: list[recur_pb2.TaskEvent] = []
        for event in events:
            seen.append(event)
            if event.type == TaskEventType.TASK_EVENT_TYPE_SYNCED:
                break
        assert all(e.type == TaskEventType.TASK_EVENT_TYPE_EXISTING for e in seen[:-1])
        existing = {e.task_id: e.task for e in seen[:-1]}
        assert before in existing
        assert len(existing[before].next_run_times) == 1
        assert seen[-1].task_id == "" and not seen[-1].HasField("task")

        created = unique("watch")
        client.register(created, every=3600, http_url=http_target)
        for event in events:
            if event.task_id == created:
                assert event.type == TaskEventType.TASK_EVENT_TYPE_CREATED
                assert event.task.task_id == created
                break
            # changes to other tasks of the shared server may come first
    assert events.cancelled
