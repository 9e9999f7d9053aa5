"""Runs lxml's own test suite inside the sandbox.

Usage: python run_lxml_tests.py [-v] [--scratch DIR] [MODULE_SUBSTRING...]

Collects the test modules the way lxml's test.py does (lxml/tests/test*.py
and lxml/html/tests/test*.py, each through its test_suite() function, which
also adds the doctest files), runs them with unittest and compares the
failures with known-failures.txt beside this file: one test id per line
followed by the reason it cannot pass here; "#" starts a comment. A module
that cannot be imported counts as one failure with the module's name as id.

Prints the counts per module and "lxml tests: N passed, M failed" (M counts
every failure and error, known or not; skipped tests are reported apart).
Exit status 0 only if every failure is a known one and, when the whole
suite ran, every known failure still fails: an entry that now passes or no
longer runs is stale and fails the run too, so that the list never hides a
test that broke for another reason.
"""

import os
import sys

# Run as a script, this file puts its own directory, the lxml package, first
# on sys.path, where lxml/html/ would shadow the standard library's html.
HERE = os.path.dirname(os.path.abspath(__file__))
if sys.path and os.path.abspath(sys.path[0] or os.curdir) == HERE:
    del sys.path[0]

# The tests write temporary files and some write into the current directory:
# both go to the scratch directory (the test_lxml command mounts a fresh one
# at /scratch). TMPDIR must be set before tempfile is first imported, since
# tempfile caches its choice.
_scratch = "/scratch"
if "--scratch" in sys.argv:
    _i = sys.argv.index("--scratch")
    _scratch = sys.argv[_i + 1]
    del sys.argv[_i : _i + 2]
os.environ["TMPDIR"] = _scratch
os.chdir(_scratch)

import importlib  # noqa: E402
import io  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import unittest  # noqa: E402

TEST_PACKAGES = ["lxml.tests", "lxml.html.tests"]


def read_known_failures(path):
    known = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                test_id, _, reason = line.partition(" ")
                known[test_id] = reason.strip()
    return known


def prepare_source_tree():
    """lxml's tests assume its source tree as the current directory: the
    doctests that several test modules add come from common_imports.DOC_DIR
    (the tree's doc/), and some tests open doc/test.xml or samples/*.xml by
    relative paths. The package carries those files in tests/source-tree/;
    a copy in the (writable) working directory serves both."""
    shutil.copytree(os.path.join(HERE, "tests", "source-tree"), os.getcwd(), dirs_exist_ok=True)
    from lxml.tests import common_imports

    common_imports.DOC_DIR = os.path.join(os.getcwd(), "doc")


def test_modules(selected):
    names = []
    for package in TEST_PACKAGES:
        directory = os.path.join(HERE, *package.split(".")[1:])
        for filename in sorted(os.listdir(directory)):
            if filename.startswith("test") and filename.endswith(".py"):
                name = package + "." + filename[:-3]
                if not selected or any(s in name for s in selected):
                    names.append(name)
    return names


class Result(unittest.TextTestResult):
    """Records passing tests too, for the per-module counts."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.passed = []

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed.append(test)


def main():
    verbose = "-v" in sys.argv[1:]
    selected = [a for a in sys.argv[1:] if a != "-v"]
    known = read_known_failures(os.path.join(HERE, "known-failures.txt"))
    prepare_source_tree()

    failed = {}  # test id -> the last line of its traceback
    passed_ids = set()
    total_passed = total_skipped = 0
    start = time.monotonic()
    for name in test_modules(selected):
        try:
            module = importlib.import_module(name)
            if hasattr(module, "test_suite"):
                suite = module.test_suite()
            else:
                suite = unittest.defaultTestLoader.loadTestsFromModule(module)
        except Exception:
            failed[name] = traceback.format_exc().strip().splitlines()[-1]
            print(f"{name}: cannot import: {failed[name]}", flush=True)
            if verbose:
                traceback.print_exc()
            continue
        module_start = time.monotonic()
        # Verbose, the runner prints each test and the failures' tracebacks.
        # (No /dev/null in the sandbox: the quiet runner writes to memory.)
        runner = unittest.TextTestRunner(
            stream=sys.stderr if verbose else io.StringIO(),
            verbosity=2 if verbose else 0,
            resultclass=Result,
        )
        result = runner.run(suite)
        problems = result.failures + result.errors + [
            (t, "unexpected success") for t in result.unexpectedSuccesses
        ]
        for test, text in problems:
            failed[test.id()] = (text.strip().splitlines() or [""])[-1]
        passed_ids.update(t.id() for t in result.passed)
        total_passed += len(result.passed)
        total_skipped += len(result.skipped)
        print(
            f"{name}: {len(result.passed)} passed, {len(problems)} failed, "
            f"{len(result.skipped)} skipped ({time.monotonic() - module_start:.1f} s)",
            flush=True,
        )

    unknown = sorted(t for t in failed if t not in known)
    known_failed = sorted(t for t in failed if t in known)
    fixed = sorted(t for t in known if t in passed_ids)
    # Only a run of the whole suite can tell that an entry no longer runs.
    gone = [] if selected else sorted(t for t in known if t not in failed and t not in passed_ids)
    for test_id in known_failed:
        print(f"known failure: {test_id}: {known[test_id]}")
    for test_id in fixed:
        print(f"STALE: known failure now passes (remove it from known-failures.txt): {test_id}")
    for test_id in gone:
        print(f"STALE: known failure did not run (remove it from known-failures.txt): {test_id}")
    for test_id in unknown:
        print(f"FAILED: {test_id}: {failed[test_id]}")
    print(
        f"lxml tests: {total_passed} passed, {len(failed)} failed "
        f"({len(known_failed)} known, {len(unknown)} new), {total_skipped} skipped, "
        f"{len(fixed) + len(gone)} stale in {time.monotonic() - start:.0f} s"
    )
    return 1 if unknown or fixed or gone else 0


if __name__ == "__main__":
    sys.exit(main())
