import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pynbox


def test_code_output_and_exit_code():
    r = pynbox.run("import sys; print(6 * 7); print('oops', file=sys.stderr); sys.exit(3)")
    assert r.exit_code == 3
    assert r.stdout == "42\n"
    assert r.stdout_bytes == b"42\n"
    assert r.stderr == "oops\n"
    assert r.stderr_bytes == b"oops\n"
    assert r.limit is None
    assert "exit_code=3" in repr(r)


def test_argv_list_and_tuple():
    r = pynbox.run(["-c", "import sys; print(sys.argv[1:])", "a", "b c"])
    assert r.stdout == "['a', 'b c']\n"
    r = pynbox.run(("-c", "print('tuple')"))
    assert r.stdout == "tuple\n"


def test_invalid_utf8_is_replaced():
    r = pynbox.run("import sys; sys.stdout.buffer.write(b'a\\xffb')")
    assert r.stdout_bytes == b"a\xffb"
    assert r.stdout == "a\ufffdb"


def test_uncaught_exception():
    r = pynbox.run("raise ValueError('no')")
    assert r.exit_code == 1
    assert "ValueError: no" in r.stderr


def test_stdin_bytes_and_str():
    assert pynbox.run("import sys; print(sys.stdin.read().upper())", stdin=b"abc").stdout == "ABC\n"
    assert pynbox.run("import sys; print(len(sys.stdin.buffer.read()))", stdin="é").stdout == "2\n"
    assert pynbox.run("import sys; print(repr(sys.stdin.read()))").stdout == "''\n"


def test_env_only_what_is_given():
    os.environ["PYNBOX_TEST_SECRET"] = "host"
    r = pynbox.run("import os; print(sorted(os.environ.items()))", env={"A": "1", "B": "two"})
    assert r.stdout == "[('A', '1'), ('B', 'two')]\n"


def test_root_is_the_install_read_only():
    r = pynbox.run("import os; print(sorted(os.listdir('/')))")
    assert "python" in r.stdout
    r = pynbox.run("open('/x', 'w')")
    assert r.exit_code == 1 and "Read-only file system" in r.stderr


def test_mounts_ro_rw_tuple_and_string(tmp_path: Path):
    ro = tmp_path / "ro"
    rw = tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    (ro / "in.txt").write_text("hello")
    code = (
        "data = open('/in/in.txt').read()\n"
        "open('/out/out.txt', 'w').write(data.upper())\n"
        "try:\n    open('/in/x', 'w')\nexcept OSError as e:\n    print('refused', e.errno)\n"
    )
    r = pynbox.run(code, mounts=[(ro, "/in", "ro"), f"{rw}:/out:rw"])
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith("refused")
    assert (rw / "out.txt").read_text() == "HELLO"
    assert not (ro / "x").exists()


def test_mounting_root_replaces_the_default(tmp_path: Path, dest):
    (tmp_path / "f").write_text("x")
    # Without the install at /, there is no python to run.
    with pytest.raises(ValueError, match="python"):
        pynbox.run("pass", mounts=[(tmp_path, "/", "ro")])
    # The install's root mounted by hand works as the default does.
    r = pynbox.run(
        "import os; print(os.listdir('/data'))",
        mounts=[(os.path.join(dest, "root"), "/", "ro"), (tmp_path, "/data", "ro")],
    )
    assert r.stdout == "['f']\n"


def test_mount_that_does_not_exist(tmp_path: Path):
    with pytest.raises(ValueError, match="does not exist"):
        pynbox.run("pass", mounts=[(tmp_path / "nope", "/data", "ro")])


@pytest.mark.parametrize(
    "mounts, exc, match",
    [
        ("/tmp:/x:ro", TypeError, "not one string"),
        ([("/tmp", "/x")], ValueError, "expected"),
        ([("/tmp", "/x", "rx")], ValueError, "mode"),
        (["/tmp:/x"], ValueError, "mode"),
        ([("/tmp", "relative", "ro")], ValueError, "absolute"),
        ([42], TypeError, "mount"),
        (5, TypeError, "mounts"),
        ([("/tmp", "/x", "ro"), ("/tmp", "/x", "rw")], ValueError, "twice"),
    ],
)
def test_bad_mounts(mounts, exc, match):
    with pytest.raises(exc, match=match):
        pynbox.run("pass", mounts=mounts)


@pytest.mark.parametrize(
    "kw, exc, match",
    [
        ({"memory": -1}, ValueError, "positive"),
        ({"memory": 0}, ValueError, "positive"),
        ({"memory": "0"}, ValueError, "positive"),
        ({"memory": "lots"}, ValueError, "not a size"),
        ({"memory": 1.5}, TypeError, "memory"),
        ({"memory": True}, TypeError, "memory"),
        ({"max_output": -5}, ValueError, "positive"),
        ({"timeout": 0}, ValueError, "greater than 0"),
        ({"timeout": -1.0}, ValueError, "greater than 0"),
        ({"timeout": float("nan")}, ValueError, "greater than 0"),
        ({"timeout": "10"}, TypeError, "timeout"),
        ({"env": {"A=B": "1"}}, ValueError, "variable name"),
        ({"env": {"A": 1}}, TypeError, "env"),
        ({"env": ["A"]}, (TypeError, ValueError), None),
        ({"stdin": 5}, TypeError, "stdin"),
    ],
)
def test_bad_arguments(kw, exc, match):
    with pytest.raises(exc, match=match):
        pynbox.run("pass", **kw)


def test_bad_code_types():
    with pytest.raises(TypeError, match="code_or_argv"):
        pynbox.run(42)
    with pytest.raises(TypeError, match="code_or_argv"):
        pynbox.run(["-c", 1])
    with pytest.raises(ValueError, match="NUL"):
        pynbox.run("print(1)\0")


def test_time_limit():
    t = time.monotonic()
    r = pynbox.run("while True: pass", timeout=0.5)
    assert r.limit == "time"
    assert r.exit_code == 124
    assert time.monotonic() - t < 10


def test_memory_limit():
    r = pynbox.run("x = bytearray(200 * 1024 * 1024)", memory="64M")
    assert r.limit == "memory", (r.exit_code, r.stderr[-300:])
    assert r.exit_code == 137


def test_output_limit():
    r = pynbox.run("print('x' * 10000)", max_output=1000)
    assert r.limit == "output"
    assert r.exit_code == 153
    assert len(r.stdout_bytes) <= 1000


def test_no_limits():
    r = pynbox.run("print('ok')", memory=None, timeout=None, max_output=None)
    assert r.stdout == "ok\n"


def test_sizes_as_ints_and_strings():
    assert pynbox.run("print(1)", memory=256 << 20, max_output="1M").stdout == "1\n"


def test_threads_run_in_parallel():
    """The GIL is released while a guest runs: two runs of 1 s take
    about 1 s together, not 2."""
    import threading

    code = "import time\nt = time.time()\nwhile time.time() - t < 1.0: pass"
    pynbox.run("pass")  # warm
    spans = []

    def go():
        a = time.monotonic()
        pynbox.run(code)
        spans.append((a, time.monotonic()))

    ts = [threading.Thread(target=go) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    (a1, b1), (a2, b2) = spans
    assert max(a1, a2) < min(b1, b2), "the two runs did not overlap"
