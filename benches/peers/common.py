"""What the Python peers share: their arguments, the slot layout (the same
splitmix64 hash as benches/recur/tasks.rs, so every scheduler gets the same
phases), and the recorder that keeps the lateness of the window's runs and
prints the one JSON line the bench reads."""

import argparse
import json
import math

MASK = (1 << 64) - 1


def phase_offset(phase, index):
    """Seconds after the base at which task `index` first fires."""
    if phase == "herd":
        return 0.0
    z = (index + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    z ^= z >> 31
    return (z % 1000) / 1000.0


def parse_args(description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--peer-tasks", dest="tasks", type=int, required=True)
    parser.add_argument("--phase", choices=["random", "herd"], required=True)
    parser.add_argument("--base", type=float, required=True, help="unix time of the first slot")
    parser.add_argument("--warmup", type=float, required=True)
    parser.add_argument("--window", type=float, required=True)
    parser.add_argument("--settle", type=float, default=1.0)
    return parser.parse_args()


class Recorder:
    """Lateness of every run whose slot lies in [start, end), first run of a
    slot only; a second run of the same slot counts as doubled."""

    def __init__(self, args):
        self.start = args.base + args.warmup
        self.end = self.start + args.window
        self.seen = set()
        self.lateness_us = []
        self.doubled = 0

    def record(self, index, slot, started):
        if not (self.start <= slot < self.end):
            return
        key = (index, round(slot * 1000))
        if key in self.seen:
            self.doubled += 1
            return
        self.seen.add(key)
        self.lateness_us.append(int((started - slot) * 1e6))

    def print_summary(self):
        samples = sorted(self.lateness_us)

        def rank(p):
            i = min(max(math.ceil(p * len(samples)), 1), len(samples)) - 1
            return samples[i] / 1000.0

        lateness = None
        if samples:
            lateness = {
                "count": len(samples),
                "p50_ms": rank(0.50),
                "p99_ms": rank(0.99),
                "p999_ms": rank(0.999),
                "max_ms": samples[-1] / 1000.0,
            }
        print(json.dumps({"lateness": lateness, "fires_done": len(self.seen), "doubled": self.doubled}), flush=True)
