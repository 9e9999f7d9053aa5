"""Runs CPython's regression suite inside a pynbox sandbox and checks the
outcome against recipes/python-tests/expected.txt.

Called by scripts/regrtest.sh (which builds and installs DEST) with the
native CPython of the python recipe; usable by hand:

    python3 scripts/regrtest.py DEST [--update] [--only test_os test_posix]

The check is two-sided: an outcome that the list does not name fails the
run (a new failure, crash or skip), and so does an entry of the list that
did not happen (a test that now passes must leave the list), so the list
only shrinks. Entries whose reason starts with "policy:" are run a second
time with the policy lifted (--allow-symlinks, a writable copy of the
standard library) and must pass there: that shows they are the sandbox's
decisions and not its bugs.

Outcomes, one per line in the list as `KIND ID REASON`:
  skip    a test module skipped as a whole (ID: module), e.g. no sockets
  denied  a module needing a regrtest resource (-u) not enabled
  crash   a module that raised while being imported or set up
  fail    a test case that failed or raised (ID: test.test_mod.Class.test)
  env     a module that changed the execution environment
"""

import argparse
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXPECTED = REPO / "recipes/python-tests/expected.txt"
KINDS = ("skip", "denied", "crash", "fail", "env")
STDLIB = "/python/lib/python3.13"

# "0:01:36 [219/480/4] test_getpath failed (uncaught exception)", with an
# optional "load avg: 1.23 " after the time.
PROGRESS = re.compile(
    r"^\d+:\d\d:\d\d (?:load avg: [\d.]+ )?\[\s*\d+/\d+(?:/\d+)?\] (\S+)(?: (.*))?$"
)
SKIP_REASON = re.compile(r"^(\S+) skipped -- (.*)$")
# unittest's verbose summary: "FAIL: test_x (test.test_mod.Cls.test_x) [sub]"
CASE = re.compile(r"^(FAIL|ERROR): (\S+) \(([\w.]+)\)")


def guest_python(dest, scratch, extra=(), args=()):
    return [
        str(dest / "bin/run"),
        *extra,
        "-m", f"{dest / 'root'}:/:ro",
        "-m", f"{scratch}:/tmp:rw",
        "-E", "TMPDIR=/tmp",
        "--timeout", "3600",
        "python", "-m", "pynbox_regrtest", *args,
    ]


PRINT = threading.Lock()


def run_suite(dest, extra, tests, log):
    """Runs regrtest once; returns its output. A fresh scratch /tmp each
    time, so that one run's leftovers cannot decide the next."""
    with tempfile.TemporaryDirectory(prefix="pynbox-regrtest-") as scratch:
        cmd = guest_python(dest, scratch, extra, tests)
        with PRINT:
            print("+", " ".join(cmd), flush=True)
        started = time.monotonic()
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    errors="replace")
            text = []
            for line in proc.stdout:
                out.write(line)
                text.append(line)
                # Progress for a job of minutes: one line per module.
                if PROGRESS.match(line.rstrip("\n")) and " " in line.split("] ", 1)[-1].strip():
                    with PRINT:
                        sys.stdout.write("  " + line.split("] ", 1)[-1])
                        sys.stdout.flush()
            status = proc.wait()
        with PRINT:
            print(f"  regrtest exited with {status} after {time.monotonic() - started:.0f} s (log: {log})")
        # 0 all passed, 2 failures (the list decides); anything else is the
        # sandbox or regrtest itself going wrong.
        if status not in (0, 2):
            sys.exit(f"regrtest: the suite ended with status {status}, not a test result: see {log}")
        return "".join(text)


def list_tests(dest):
    """The modules a plain run would run, as regrtest itself finds them."""
    with tempfile.TemporaryDirectory(prefix="pynbox-regrtest-") as scratch:
        proc = subprocess.run(guest_python(dest, scratch, (), ["--list-tests"]),
                              capture_output=True, text=True, errors="replace")
    names = [line.strip() for line in proc.stdout.splitlines() if line.strip().startswith(("test_", "test."))]
    if proc.returncode != 0 or not names:
        sys.exit(f"regrtest: --list-tests ended with status {proc.returncode}: {proc.stderr[-2000:]}")
    return names


def run_sharded(dest, extra, tests, log, jobs):
    """Runs the modules in `jobs` sandboxes at once (WASI has no
    subprocesses, so regrtest's own -j cannot), each given every jobs-th
    module of the sorted list so that each shard keeps regrtest's order;
    returns their outputs joined. A module whose outcome depends on which
    ran before it shows up as an unexpected outcome in the comparison."""
    if jobs == 1:
        return run_suite(dest, extra, tests, log)
    names = sorted(tests or list_tests(dest))
    shards = [s for s in (names[i::jobs] for i in range(jobs)) if s]
    with concurrent.futures.ThreadPoolExecutor(len(shards)) as pool:
        runs = [pool.submit(run_suite, dest, extra, shard, log.with_name(f"{log.stem}-{i}{log.suffix}"))
                for i, shard in enumerate(shards)]
        return "".join(run.result() for run in runs)


def module_outcomes(output):
    """{(kind, module): reason} from regrtest's progress lines."""
    reasons = {}
    found = {}
    for line in output.splitlines():
        m = SKIP_REASON.match(line)
        if m:
            reasons[m.group(1)] = m.group(2)
            continue
        m = PROGRESS.match(line)
        if not m or not m.group(2):
            continue
        name, status = m.group(1), m.group(2)
        if status.startswith("skipped (resource denied)"):
            found[("denied", name)] = reasons.get(name, "")
        elif status.startswith("skipped"):
            found[("skip", name)] = reasons.get(name, "")
        elif status == "failed (uncaught exception)":
            found[("crash", name)] = ""
        elif status.startswith("failed (env changed)"):
            found[("env", name)] = ""
        elif status.startswith("failed"):
            found[("failed-module", name)] = status
        elif not (status.startswith("passed") or status.startswith("run no tests")):
            found[("unknown", name)] = status
    return found


def case_outcomes(dest, extra, modules, logdir, tag):
    """The failing test cases of modules that failed, from a verbose
    re-run of just those modules."""
    if not modules:
        return {}
    output = run_suite(dest, extra, ["-v", *sorted(modules)], logdir / f"{tag}-verbose.log")
    found = {}
    for line in output.splitlines():
        m = CASE.match(line)
        if m:
            found[("fail", m.group(3))] = m.group(1)
    return found


def outcomes(dest, extra, tests, logdir, tag, jobs=1):
    found = module_outcomes(run_sharded(dest, extra, tests, logdir / f"{tag}.log", jobs))
    failed = {name for (kind, name) in found if kind == "failed-module"}
    cases = case_outcomes(dest, extra, failed, logdir, tag)
    for name in failed:
        # A module that failed in the full run but whose cases all pass
        # alone depends on what ran before it: report it as is.
        if not any(cid.startswith(f"test.{name}.") or cid.startswith(f"{name}.") for (_, cid) in cases):
            cases[("fail", name)] = "failed in the full run, passed alone"
    found = {k: v for k, v in found.items() if k[0] != "failed-module"}
    found.update(cases)
    return found


def read_expected():
    entries = {}
    for n, line in enumerate(EXPECTED.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        if len(parts) < 3 or parts[0] not in KINDS:
            sys.exit(f"{EXPECTED}:{n}: expected 'KIND ID REASON' with KIND one of {', '.join(KINDS)}")
        key = (parts[0], parts[1])
        if key in entries:
            sys.exit(f"{EXPECTED}:{n}: {parts[0]} {parts[1]} is listed twice")
        entries[key] = parts[2]
    return entries


def compare(found, expected, label):
    new = sorted(set(found) - set(expected))
    gone = sorted(set(expected) - set(found))
    for kind, name in new:
        detail = found[(kind, name)]
        print(f"NEW {kind} {name}" + (f" ({detail})" if detail else ""))
    for kind, name in gone:
        print(f"GONE {kind} {name}: it no longer happens; remove it from {EXPECTED.relative_to(REPO)}")
    print(f"{label}: {len(found)} outcomes listed as expected: {len(set(found) & set(expected))}; "
          f"new: {len(new)}; gone: {len(gone)}")
    return not new and not gone


def write_expected(found, expected):
    """--update: keeps the reasons already written, takes regrtest's skip
    message for new skips and marks other new entries to be explained."""
    lines = [line for line in EXPECTED.read_text().splitlines() if line.startswith("#")] if EXPECTED.exists() else []
    for kind in KINDS:
        for (k, name) in sorted(found):
            if k != kind:
                continue
            reason = expected.get((k, name)) or found[(k, name)] or "TODO: explain"
            lines.append(f"{k:<7} {name:<60} {reason}")
    EXPECTED.write_text("\n".join(lines) + "\n")
    print(f"wrote {EXPECTED}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dest", type=Path, help="a pynbox install with the python and python-tests packages")
    ap.add_argument("--update", action="store_true", help="rewrite the expected list from this run")
    ap.add_argument("--only", nargs="+", default=[], metavar="TEST", help="run only these test modules")
    ap.add_argument("--logs", type=Path, help="directory for the logs (default: a new temporary one)")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), metavar="N",
                    help="sandboxes run at once, each with every N-th module (default: 2, or 1 on one core)")
    args = ap.parse_args()
    dest = args.dest.resolve()
    if not (dest / "bin/run").exists() or not (dest / f"root{STDLIB}/test/regrtest.py").exists():
        sys.exit(f"{dest} is not an install with python-tests: pynbox install DEST python python-tests")
    logdir = args.logs or Path(tempfile.mkdtemp(prefix="pynbox-regrtest-logs-"))
    logdir.mkdir(parents=True, exist_ok=True)
    expected = read_expected() if EXPECTED.exists() else {}
    if args.only:
        mods = set(args.only)
        expected = {k: v for k, v in expected.items()
                    if k[1] in mods or any(k[1].startswith(f"test.{m}.") for m in mods)}

    print("== the suite, as a user's sandbox runs it")
    if args.jobs < 1:
        sys.exit("regrtest: --jobs must be at least 1")
    found = outcomes(dest, [], args.only, logdir, "default", args.jobs)
    if args.update:
        write_expected(found, read_expected() if EXPECTED.exists() else {})
        return
    ok = compare(found, expected, "default run")

    policy = {k: v for k, v in expected.items() if v.startswith("policy:")}
    if policy:
        print("== the policy entries again, with the policy lifted: symlinks allowed, standard library writable")
        mods = sorted({name.split(".")[1] if name.startswith("test.") else name for (_, name) in policy})
        with tempfile.TemporaryDirectory(prefix="pynbox-regrtest-stdlib-") as lib:
            shutil.copytree(dest / f"root{STDLIB}", lib, dirs_exist_ok=True, symlinks=True)
            extra = ["--allow-symlinks", "-m", f"{lib}:{STDLIB}:rw"]
            lifted = outcomes(dest, extra, mods, logdir, "lifted")
        still = sorted(set(policy) & set(lifted))
        for kind, name in still:
            print(f"POLICY {kind} {name} still happens with the policy lifted: it is not the policy's doing")
        others = {k: v for k, v in lifted.items() if k not in expected}
        for kind, name in sorted(others):
            print(f"NEW {kind} {name} with the policy lifted")
        print(f"lifted run: {len(policy)} policy entries, {len(policy) - len(still)} pass with the policy lifted")
        ok = ok and not still and not others

    if not ok:
        sys.exit(f"regrtest: the outcome differs from {EXPECTED.relative_to(REPO)} (logs: {logdir})")
    print(f"regrtest: every outcome is the expected one (logs: {logdir})")


if __name__ == "__main__":
    main()
