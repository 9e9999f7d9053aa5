"""The Python package's numbers (issue 14), side by side in one run:
pynbox.run("pass") against subprocess.run([sys.executable, "-c", "pass"]),
the round trip of a session's eval("1+1") from Python, and save/restore of
a session that imported json and holds a list of 10 MiB. Prints one JSON
object. Run with a Python that has the pynbox wheel installed (bench/run.py
does: it builds the wheel and a virtualenv for it).
"""

import json
import statistics
import subprocess
import sys
import time

import pynbox


def median_ms(n, f):
    xs = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        xs.append((time.perf_counter() - t) * 1e3)
    return statistics.median(xs)


def main():
    pynbox.run("pass")  # the first use prepares the interpreter
    results = {}
    for _ in range(2):  # alternating, the second round counts
        results["run_pass_ms"] = median_ms(30, lambda: pynbox.run("pass"))
        results["subprocess_pass_ms"] = median_ms(
            30, lambda: subprocess.run([sys.executable, "-c", "pass"], check=True))
    results["run_vs_subprocess"] = results["run_pass_ms"] / results["subprocess_pass_ms"]
    with pynbox.Session() as s:
        results["session_eval_us"] = 1e3 * median_ms(2000, lambda: s.eval("1+1"))
        s.expose("f", lambda: None)
        s.exec("import pynbox_host")
        results["session_host_call_us"] = 1e3 * median_ms(2000, lambda: s.exec("pynbox_host.f()"))
    with pynbox.Session() as s:
        s.exec("import json\ndata = list(range(262_144))")
        saved = []
        results["save_10mib_list_ms"] = median_ms(10, lambda: saved.append(s.save()))
        results["saved_10mib_list_bytes"] = len(saved[-1])
        results["restore_10mib_list_ms"] = median_ms(
            10, lambda: pynbox.Session.restore(saved[-1]).close())
    print(json.dumps(results))


if __name__ == "__main__":
    main()
