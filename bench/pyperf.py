"""A small in-process stand-in for pyperf's Runner.

pyperformance's benchmark bodies call pyperf.Runner().bench_func(...) or
bench_time_func(...). The real pyperf spawns worker processes, which WASI
cannot do; this stand-in runs the same bodies unchanged, in one process:
it calibrates the number of loops so that one value takes at least 0.1 s
(as pyperf does), runs one warm-up value and then --values values, and
prints the seconds per loop as one JSON line starting with PYPERF_STUB.
"""

import argparse
import json
import sys
import time

perf_counter = time.perf_counter
MIN_TIME = 0.1


def python_implementation():
    return sys.implementation.name.lower()


def python_has_jit():
    return False


class Runner:
    def __init__(self, values=None, warmups=None, processes=None, loops=0,
                 min_time=MIN_TIME, metadata=None, show_name=True,
                 program_args=None, add_cmdline_args=None, _argparser=None, **kwargs):
        self.metadata = dict(metadata or {})
        self.argparser = argparse.ArgumentParser()
        self.argparser.add_argument("--values", type=int, default=3)
        self.argparser.add_argument("--min-time", type=float, default=min_time)
        self.args = None

    def parse_args(self, args=None):
        if self.args is None:
            self.args, _ = self.argparser.parse_known_args(args)
        return self.args

    def _run(self, name, timed, inner_loops):
        args = self.parse_args()
        loops = 1
        while True:
            dt = timed(loops)
            if dt >= args.min_time or loops >= 2 ** 24:
                break
            loops *= 2
        timed(loops)  # warm-up value
        values = [timed(loops) / (loops * (inner_loops or 1)) for _ in range(args.values)]
        print("PYPERF_STUB " + json.dumps({"name": name, "loops": loops, "values": values}), flush=True)

    def bench_time_func(self, name, time_func, *args, inner_loops=None, **kwargs):
        self._run(name, lambda loops: time_func(loops, *args), inner_loops)

    def bench_func(self, name, func, *args, inner_loops=None, **kwargs):
        def timed(loops):
            t0 = perf_counter()
            for _ in range(loops):
                func(*args)
            return perf_counter() - t0
        self._run(name, timed, inner_loops)

    def bench_async_func(self, name, func, *args, inner_loops=None, **kwargs):
        import asyncio

        def timed(loops):
            t0 = perf_counter()
            for _ in range(loops):
                asyncio.run(func(*args))
            return perf_counter() - t0
        self._run(name, timed, inner_loops)

    def bench_command(self, name, command):
        raise NotImplementedError("bench_command spawns processes")
