"""numpy workloads for bench/run.py, timed in process.

    python numpy_bench.py [--values N] NAME

Runs workload NAME once to warm up, then N times (default 3), and prints
"PYPERF_STUB {"values": [seconds, ...]}" as bench/pyperf.py does, so that
bench/run.py reads both the same way. The same file runs natively (numpy
built from the same sdist, bench/run.py's native_numpy()) and in the
sandbox.
"""
import json
import sys
import time

import numpy as np

N = 1_000_000


def creation():
    for _ in range(10):
        a = np.arange(N, dtype=np.float64)
        b = np.zeros(N)
        c = np.ones((1000, 1000))
        d = np.linspace(0.0, 1.0, N)
        e = np.full(N, 7, dtype=np.int32)
    return a, b, c, d, e


def ufuncs():
    rng = np.random.default_rng(0)
    a, b, c = rng.random(N), rng.random(N), rng.random(N)
    for _ in range(10):
        r = a * b + c
        r = np.sqrt(r) - np.sin(a) * np.exp(-b)
        r = np.where(r > 0.5, r, 0.0)
    return r


def reductions():
    rng = np.random.default_rng(1)
    a = rng.random(N)
    m = a.reshape(1000, 1000)
    for _ in range(10):
        a.sum(), a.mean(), a.std(), a.min(), a.max(), np.argmax(a)
        m.sum(axis=0), m.sum(axis=1), np.cumsum(a)
    return a


def sorting():
    rng = np.random.default_rng(2)
    a = rng.random(N)
    ints = rng.integers(0, 1 << 30, N)
    for _ in range(3):
        np.sort(a), np.argsort(a), np.sort(ints), np.unique(ints)


def matmul():
    rng = np.random.default_rng(3)
    a, b = rng.random((200, 200)), rng.random((200, 200))
    for _ in range(10):
        c = a @ b
    return c


def fft():
    rng = np.random.default_rng(4)
    x = rng.random(1 << 20)
    for _ in range(5):
        y = np.fft.rfft(x)
        np.fft.irfft(y)
        np.fft.fft(x[: 1 << 16].astype(np.complex128))


WORKLOADS = {f.__name__: f for f in (creation, ufuncs, reductions, sorting, matmul, fft)}


def main():
    args = sys.argv[1:]
    n = 3
    if "--values" in args:
        i = args.index("--values")
        n = int(args[i + 1])
        del args[i : i + 2]
    name = args[0]
    work = WORKLOADS[name]
    work()
    values = []
    for _ in range(n):
        t = time.perf_counter()
        work()
        values.append(time.perf_counter() - t)
    print("PYPERF_STUB " + json.dumps({"values": values}))


if __name__ == "__main__":
    main()
