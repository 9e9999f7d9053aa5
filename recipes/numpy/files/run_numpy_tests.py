"""Runs numpy's own test suite inside the sandbox, with pytest.

Usage: python run_numpy_tests.py [--full] [--scratch DIR] [PYTEST_ARG...]

Runs what numpy.test() runs (pytest over the installed numpy package, the
tests marked slow left out unless --full is given) and compares the tests
that fail with known-failures.txt beside this file: a pytest node id or an
fnmatch pattern of node ids per line, then the reason they cannot pass
here; "#" starts a comment. A test file that cannot be collected counts as
one failure, with the file's node id.

Prints pytest's own report, then "numpy tests: N passed, M failed,
S skipped" (M counts every failure and error, known or not) and the share
that passed of those that ran. Exit status 0 only if every failure is a
known one and, when the whole suite ran (no PYTEST_ARG), every entry of the
list still matches a failure: an entry that no longer fails is stale and
fails the run, so that the list never hides a test that broke for another
reason.

pytest and hypothesis come from site/ beside this file, not from
site-packages, so that they never shadow packages a user installs.
"""

import fnmatch
import importlib.util
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if sys.path and os.path.abspath(sys.path[0] or os.curdir) == HERE:
    del sys.path[0]
sys.path.insert(0, os.path.join(HERE, "site"))

# Tests write temporary files, hypothesis its example database into the
# current directory: both go to the scratch directory (test_numpy mounts a
# fresh one at /scratch). TMPDIR must be set before tempfile is imported.
_scratch = "/scratch"
if "--scratch" in sys.argv:
    _i = sys.argv.index("--scratch")
    _scratch = sys.argv[_i + 1]
    del sys.argv[_i : _i + 2]
os.environ["TMPDIR"] = _scratch
os.chdir(_scratch)

import pytest  # noqa: E402


def read_known_failures(path):
    known = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                pattern, _, reason = line.partition(" ")
                known[pattern] = reason.strip()
    return known


class Outcomes:
    """A pytest plugin that records each test's outcome by node id. Ids are
    relative to site-packages ("numpy/_core/tests/test_x.py::T::t[p]"),
    since main() makes that pytest's root directory: the known-failures
    list then matches however the tests were named."""

    def __init__(self):
        self.passed = set()
        self.skipped = set()
        self.failed = {}  # node id -> one line saying why

    def pytest_runtest_logreport(self, report):
        if report.failed:
            self.failed.setdefault(report.nodeid, _first_line(report))
        elif report.skipped:
            self.skipped.add(report.nodeid)
        elif report.passed and report.when == "call":
            self.passed.add(report.nodeid)

    def pytest_collectreport(self, report):
        if report.failed:
            self.failed.setdefault(report.nodeid, _first_line(report))


_SITE = os.path.dirname(os.path.dirname(importlib.util.find_spec("numpy").origin))


class NoDescriptorCapture:
    """Replaces pytest's capfd fixtures, which dup() descriptors: WASI has
    no dup, and a capfd that fails half-way leaves pytest's capturing
    broken for every test after it. The few tests that ask for them are
    skipped, saying why, as numpy skips its other tests that need what
    wasm lacks."""

    @pytest.fixture
    def capfd(self):
        pytest.skip("needs capfd, which dup()s descriptors: WASI has no dup")

    @pytest.fixture
    def capfdbinary(self):
        pytest.skip("needs capfdbinary, which dup()s descriptors: WASI has no dup")


def _matches(test_id, entry):
    # An id as it is (parameters in brackets are not fnmatch classes), or a
    # pattern.
    return test_id == entry or fnmatch.fnmatchcase(test_id, entry)


def _first_line(report):
    text = getattr(report, "longreprtext", "") or ""
    lines = [ln for ln in text.splitlines() if ln.startswith("E ")]
    return (lines[-1] if lines else (text.splitlines() or [""])[-1])[:200]


def main():
    args = sys.argv[1:]
    full = "--full" in args
    args = [a for a in args if a != "--full"]
    known = read_known_failures(os.path.join(HERE, "known-failures.txt"))
    outcomes = Outcomes()
    pytest_args = [
        # Capture at the sys level and no faulthandler plugin: both would
        # dup() descriptors, which WASI cannot. No logging plugin: it opens
        # /dev/null, which the sandbox does not have (no test uses caplog).
        "-q", "-l", "--capture=sys", "-p", "no:cacheprovider", "-p", "no:faulthandler",
        "-p", "no:logging", "--continue-on-collection-errors",
        # An explicit base for tmp_path: pytest's default asks os.getuid(),
        # which WASI lacks (pytest knows this of Emscripten, not of WASI).
        "--basetemp", os.path.join(_scratch, "pytest"),
        "--rootdir", _SITE,
        "-W", "ignore:Not importing directory",
        "-W", "ignore:the matrix subclass is not",
        "-W", "ignore:Importing from numpy.matlib is",
    ]
    if not full:
        pytest_args += ["-m", "not slow"]
    selected = bool(args)
    pytest_args += args if selected else ["--pyargs", "numpy"]
    start = time.monotonic()
    pytest.main(pytest_args, plugins=[outcomes, NoDescriptorCapture()])
    elapsed = time.monotonic() - start

    # A test passed in its call but failed in teardown counts as failed.
    passed = outcomes.passed - set(outcomes.failed)
    failed = outcomes.failed
    unknown = {t: why for t, why in failed.items() if not any(_matches(t, p) for p in known)}
    stale = [] if selected else [p for p in known if not any(_matches(t, p) for t in failed)]
    ran = len(passed) + len(failed)
    print()
    print(f"numpy tests: {len(passed)} passed, {len(failed)} failed "
          f"({len(failed) - len(unknown)} known), {len(outcomes.skipped)} skipped, "
          f"in {elapsed:.0f} s")
    if ran:
        print(f"passed: {100.0 * len(passed) / ran:.2f}% of the {ran} tests that ran")
    for t, why in sorted(unknown.items()):
        print(f"NEW FAILURE {t}: {why}")
    for p in stale:
        print(f"STALE (no longer fails; remove from known-failures.txt) {p}: {known[p]}")
    ok = not unknown and not stale and ran > 0
    print("numpy tests: " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
