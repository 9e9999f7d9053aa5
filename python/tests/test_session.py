import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import pynbox


@pytest.fixture
def s():
    with pynbox.Session() as session:
        yield session


def test_exec_eval_keep_state(s):
    out = s.exec("x = 6 * 7\nprint('set')")
    assert out.stdout == "set\n" and out.stderr == ""
    assert s.eval("x") == 42
    s.exec("import json")
    assert s.eval("json.dumps({'a': x})") == '{"a": 42}'


def test_values_both_ways(s):
    assert s.eval("None") is None
    assert s.eval("True") is True
    assert s.eval("2**62") == 2**62
    assert s.eval("1.5") == 1.5
    assert s.eval("'é'") == "é"
    assert s.eval("b'\\x00\\xff'") == b"\x00\xff"
    assert s.eval("[1, (2, 3), {'k': [None]}]") == [1, [2, 3], {"k": [None]}]
    r = s.eval("object")
    assert isinstance(r, pynbox.Repr) and repr(r) == "<class 'object'>" and r.text == repr(r)


def test_guest_exception(s):
    s.exec("def f():\n    raise KeyError('nope')")
    with pytest.raises(pynbox.GuestError) as e:
        s.exec("print('before'); f()")
    err = e.value
    assert err.type_name == "KeyError"
    assert "nope" in err.message
    assert "Traceback" in err.traceback and "in f" in err.traceback
    assert err.stdout == "before\n"
    assert isinstance(err, pynbox.Error)
    # The session lives on.
    assert s.alive and s.eval("1 + 1") == 2
    with pytest.raises(pynbox.GuestError) as e:
        s.eval("1/0")
    assert e.value.type_name == "ZeroDivisionError"
    with pytest.raises(pynbox.GuestError) as e:
        s.exec("def (:")
    assert e.value.type_name == "SyntaxError"


def test_callbacks(s):
    calls = []

    def add(a, b):
        calls.append((a, b))
        return a + b

    s.expose("add", add)
    assert s.eval("__import__('pynbox_host').call('add', 2, 3)") == 5
    assert s.eval("__import__('pynbox_host').call('add', [1], [2])") == [1, 2]
    assert calls == [(2, 3), ([1], [2])]

    def fail(*args):
        raise RuntimeError("quota exceeded")

    s.expose("fail", fail)
    s.exec(
        "import pynbox_host\n"
        "try:\n    pynbox_host.call('fail')\nexcept Exception as e:\n    caught = f'{type(e).__name__}: {e}'"
    )
    assert "RuntimeError: quota exceeded" in s.eval("caught")
    # Uncaught in the guest: the host sees a GuestError.
    with pytest.raises(pynbox.GuestError, match="quota exceeded"):
        s.exec("pynbox_host.call('fail')")
    # A value the guest cannot receive.
    s.expose("bad", lambda: object())
    with pytest.raises(pynbox.GuestError, match="object"):
        s.exec("pynbox_host.call('bad')")
    # No such function.
    with pytest.raises(pynbox.GuestError):
        s.exec("pynbox_host.call('nope')")
    with pytest.raises(TypeError, match="callable"):
        s.expose("x", 5)


def test_callback_into_its_own_session_is_refused(s):
    def reenter():
        return s.eval("1")

    s.expose("reenter", reenter)
    with pytest.raises(pynbox.GuestError, match="cannot call into the session"):
        s.exec("import pynbox_host; pynbox_host.call('reenter')")


def test_time_limit_per_call():
    with pynbox.Session(timeout=0.5) as s:
        s.exec("x = 1")
        t = time.monotonic()
        with pytest.raises(pynbox.TimeLimit) as e:
            s.exec("while True: pass")
        assert time.monotonic() - t < 10
        assert isinstance(e.value, pynbox.LimitError)
        assert not s.alive
        with pytest.raises(pynbox.SessionDead):
            s.eval("x")


def test_output_limit():
    with pynbox.Session(max_output=1000) as s:
        with pytest.raises(pynbox.OutputLimit):
            s.exec("print('x' * 5000)")


def test_close_and_context_manager():
    with pynbox.Session() as s:
        s.exec("a = 1")
    assert not s.alive
    with pytest.raises(pynbox.SessionDead):
        s.eval("a")
    s.close()  # twice is fine


def test_mounts_and_env(tmp_path: Path):
    (tmp_path / "f.txt").write_text("data")
    with pynbox.Session(mounts=[(tmp_path, "/w", "rw")], env={"K": "v"}) as s:
        assert s.eval("open('/w/f.txt').read()") == "data"
        s.exec("open('/w/g.txt', 'w').write('out')")
        assert s.eval("__import__('os').environ['K']") == "v"
    assert (tmp_path / "g.txt").read_text() == "out"
    with pytest.raises(ValueError, match="does not exist"):
        pynbox.Session(mounts=[(tmp_path / "nope", "/w", "ro")])
    with pytest.raises(ValueError, match="positive"):
        pynbox.Session(memory=-1)


def test_save_and_restore_in_this_process(s):
    s.exec("import json\nstate = {'n': 41}\ndef bump():\n    state['n'] += 1\n    return state['n']")
    data = s.save()
    assert isinstance(data, bytes)
    with pynbox.Session.restore(data) as r:
        assert r.eval("bump()") == 42
        assert r.eval("json.dumps(state)") == '{"n": 42}'
    # The original is untouched by the copy.
    assert s.eval("state['n']") == 41


def test_save_here_restore_in_another_process(s, tmp_path: Path):
    s.exec("secret = [i * i for i in range(10)]")
    f = tmp_path / "saved"
    f.write_bytes(s.save())
    code = (
        "import pynbox, sys\n"
        "with pynbox.Session.restore(open(sys.argv[1], 'rb').read()) as s:\n"
        "    print(s.eval('sum(secret)'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(f)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "285\n"


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage", b"\x00" * 1000, bytes(range(256)) * 50],
)
def test_restore_of_corrupt_bytes(data):
    with pytest.raises((pynbox.Error, ValueError)):
        pynbox.Session.restore(data)


def test_restore_of_foreign_bytes(tmp_path: Path):
    """Another format altogether: the interpreter archive the wheel carries,
    and a saved session's header on another program's bytes."""
    archive = next((Path(pynbox.__file__).parent / "data").glob("python.*.tar.zst"))
    with pytest.raises((pynbox.Error, ValueError)):
        pynbox.Session.restore(archive.read_bytes()[:200000])
    with pynbox.Session() as s:
        data = s.save()
    with pytest.raises((pynbox.Error, ValueError)):
        pynbox.Session.restore(data[:64] + archive.read_bytes()[: len(data) - 64])


def test_restore_of_truncated_and_flipped_bytes(s):
    s.exec("x = 1")
    data = s.save()
    for bad in (data[: len(data) // 2], data[:-1], data[:10] + bytes([data[10] ^ 0xFF]) + data[11:]):
        with pytest.raises((pynbox.Error, ValueError)):
            pynbox.Session.restore(bad)
    with pytest.raises(TypeError):
        pynbox.Session.restore("not bytes")


def test_many_sessions_in_threads_overlap():
    """100 sessions across 8 threads; the GIL is released while a guest
    runs, so the threads' guest work overlaps in time."""
    spans = []
    errors = []
    lock = threading.Lock()

    def worker(k):
        try:
            for i in range(100 // 8 + (1 if k < 100 % 8 else 0)):
                with pynbox.Session() as s:
                    a = time.monotonic()
                    s.exec("import time\nt = time.time()\nwhile time.time() - t < 0.05: pass")
                    b = time.monotonic()
                    assert s.eval(f"{k} * 1000 + {i}") == k * 1000 + i
                    with lock:
                        spans.append((a, b))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert len(spans) == 100
    overlapping = sum(
        1
        for i, (a, b) in enumerate(spans)
        if any(j != i and a2 < b and a < b2 for j, (a2, b2) in enumerate(spans))
    )
    assert overlapping >= 50, f"only {overlapping} of 100 guest calls overlapped another"


def test_async_variants(s):
    async def main():
        s.exec("n = 0")
        await s.exec_async("n += 1")
        return await s.eval_async("n + 1")

    assert asyncio.run(main()) == 2


def test_async_runs_while_the_loop_turns():
    async def main():
        with pynbox.Session() as a:
            ticks = 0

            async def ticker():
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            t = asyncio.ensure_future(ticker())
            await a.exec_async("import time\nt = time.time()\nwhile time.time() - t < 0.5: pass")
            t.cancel()
            return ticks

    assert asyncio.run(main()) >= 10


def test_the_readme_example(tmp_path: Path):
    (tmp_path / "d").mkdir()
    r = pynbox.run("import sys; print(sys.stdin.read().upper())", stdin=b"hi",
                   mounts=[(tmp_path / "d", "/data", "ro")], env={"LANG": "C.UTF-8"},
                   memory="256M", timeout=10, max_output="1M")
    assert (r.exit_code, r.stdout, r.stderr, r.limit) == (0, "HI\n", "", None)
    with pynbox.Session(timeout=5) as s:
        s.exec("import json; total = 0")
        s.expose("price", lambda item: {"apple": 3}[item])
        s.exec("import pynbox_host; total += pynbox_host.call('price', 'apple')")
        assert s.eval("total") == 3
        saved = s.save()
    with pynbox.Session.restore(saved) as s:
        assert s.eval("json.dumps(total)") == "3"
    with pynbox.SessionPool(2, timeout=5) as pool:
        with pool.take() as s:
            assert s.exec("print('fresh')").stdout == "fresh\n"


def test_memory_limit_message():
    with pynbox.Session(memory="96M") as s:
        with pytest.raises(pynbox.MemoryLimit, match="memory limit"):
            s.exec("x = bytearray(500 * 1024 * 1024)")


def _wait_ready(pool, n):
    until = time.monotonic() + 60
    while pool.ready < n:
        assert time.monotonic() < until, f"the pool never had {n} ready"
        time.sleep(0.005)


def test_session_pool_hands_out_fresh_sessions(tmp_path: Path):
    (tmp_path / "f.txt").write_text("mounted")
    with pynbox.SessionPool(2, mounts=[(tmp_path, "/w", "ro")], timeout=0.5) as pool:
        _wait_ready(pool, 2)
        with pool.take() as a, pool.take() as b:
            a.exec("left = 'by a'")
            assert b.eval("'left' in globals()") is False
            assert a.eval("hash('pynbox')") != b.eval("hash('pynbox')")
            assert b.eval("open('/w/f.txt').read()") == "mounted"
            with pytest.raises(pynbox.TimeLimit):
                b.exec("while True: pass")
        # More than the pool holds: the rest are started on the spot.
        taken = [pool.take() for _ in range(4)]
        assert all(s.eval("'left' in globals()") is False for s in taken)
        _wait_ready(pool, 2)
    assert pool.ready == 0
    with pytest.raises(RuntimeError, match="closed"):
        pool.take()
    # A session taken outlives its pool.
    assert taken[0].eval("6 * 7") == 42
    for s in taken:
        s.close()


def test_session_pool_refuses_bad_sizes_and_options():
    for size in (0, 65):
        with pytest.raises(ValueError, match="1 to 64"):
            pynbox.SessionPool(size)
    with pytest.raises(TypeError):
        pynbox.SessionPool("2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="memory"):
        pynbox.SessionPool(1, memory="1M")
