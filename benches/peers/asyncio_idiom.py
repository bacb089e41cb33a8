"""Peer: the classic asyncio idiom. An aiohttp app whose start-up launches
one asyncio task per periodic job; each sleeps until its next target (the
schedule is anchored: target += interval, no drift) and runs a no-op.
Prints one JSON line (see common.py) after the window."""

import asyncio
import time

from aiohttp import web

from common import Recorder, parse_args, phase_offset

INTERVAL = 1.0


async def noop():
    pass


async def periodic(index, first, recorder):
    target = first
    while True:
        delay = target - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        recorder.record(index, target, time.time())
        await noop()
        target += INTERVAL


async def main():
    args = parse_args(__doc__)
    recorder = Recorder(args)
    app = web.Application()
    jobs = []

    async def start_jobs(_app):
        for i in range(args.tasks):
            first = args.base + phase_offset(args.phase, i)
            jobs.append(asyncio.create_task(periodic(i, first, recorder)))

    app.on_startup.append(start_jobs)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    await asyncio.sleep(max(0.0, recorder.end + args.settle - time.time()))
    for job in jobs:
        job.cancel()
    await runner.cleanup()
    recorder.print_summary()


if __name__ == "__main__":
    asyncio.run(main())
