"""Peer: APScheduler 3.x, an AsyncIOScheduler with one IntervalTrigger job
(every second, start_date on the task's phase) per task, defaults otherwise
(misfire_grace_time 1 s, coalesce off, max_instances 1). The job stamps its
start; the EVENT_JOB_EXECUTED listener pairs it with the event's
scheduled_run_time (one instance per job at a time, so they pair exactly).
Prints one JSON line (see common.py) after the window."""

import asyncio
import time
from datetime import datetime, timezone

from apscheduler.events import EVENT_JOB_EXECUTED
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from common import Recorder, parse_args, phase_offset


async def main():
    args = parse_args(__doc__)
    recorder = Recorder(args)
    last_start = {}

    async def job(index):
        last_start[index] = time.time()

    def executed(event):
        index = int(event.job_id)
        started = last_start.get(index)
        if started is not None:
            recorder.record(index, event.scheduled_run_time.timestamp(), started)

    scheduler = AsyncIOScheduler()
    scheduler.add_listener(executed, EVENT_JOB_EXECUTED)
    for i in range(args.tasks):
        first = datetime.fromtimestamp(args.base + phase_offset(args.phase, i), tz=timezone.utc)
        scheduler.add_job(job, IntervalTrigger(seconds=1, start_date=first), args=[i], id=str(i))
    scheduler.start()
    await asyncio.sleep(max(0.0, recorder.end + args.settle - time.time()))
    scheduler.shutdown(wait=False)
    recorder.print_summary()


if __name__ == "__main__":
    asyncio.run(main())
