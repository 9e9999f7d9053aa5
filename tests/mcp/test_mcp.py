"""`pynbox serve` as an MCP server, driven by the official Python MCP SDK
(PyPI's `mcp`) through the real binary: over stdio (`--mcp-stdio`, the
process started by the client) and over streamable HTTP (`/mcp` on a
server with tokens). Run by scripts/test-mcp.sh, which pins the SDK and
sets PYNBOX (the binary) and PYNBOX_TEST_DEST (an install with python).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError
from mcp.client.streamable_http import streamable_http_client

PYNBOX = os.environ["PYNBOX"]
DEST = os.environ["PYNBOX_TEST_DEST"]
TOKEN_A = "token-of-tenant-a-0123456789"
TOKEN_B = "token-of-tenant-b-0123456789"
TOOLS = {
    "run_python",
    "session_exec",
    "session_eval",
    "session_list_files",
    "session_read_file",
    "session_end",
}


class HttpServer:
    """`pynbox serve` on an ephemeral loopback port, tenants a and b."""

    def __init__(self, workdir: Path, *extra: str) -> None:
        tokens = workdir / "tokens.toml"
        tokens.write_text(
            f'[[tenant]]\nname = "a"\ntoken = "{TOKEN_A}"\n\n'
            f'[[tenant]]\nname = "b"\ntoken = "{TOKEN_B}"\n'
        )
        self.log = workdir / "server.log"
        # Scratch directories go below workdir/tmp (see the symlink test).
        self.tmp = workdir / "tmp"
        self.tmp.mkdir()
        self.proc = subprocess.Popen(
            [PYNBOX, "serve", "--dest", DEST, "--listen", "127.0.0.1:0",
             "--tokens", str(tokens), "--session-store", str(workdir / "store"), *extra],
            stdout=subprocess.PIPE,
            stderr=self.log.open("w"),
            text=True,
            env={**os.environ, "TMPDIR": str(self.tmp)},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("listening on "), (line, self.log.read_text())
        self.url = line.removeprefix("listening on ").strip()
        started = time.monotonic()
        while True:
            try:
                with urllib.request.urlopen(self.url + "/readyz") as r:
                    if r.status == 200:
                        break
            except urllib.error.HTTPError:
                pass
            assert time.monotonic() - started < 120, self.log.read_text()
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def http_server() -> Iterator[HttpServer]:
    with tempfile.TemporaryDirectory() as d:
        s = HttpServer(Path(d))
        yield s
        s.stop()


@pytest.fixture(scope="module")
def stdio_store() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def http_client(url: str, token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300))
    return streamable_http_client(url + "/mcp", http_client=http)


def stdio_params(store: Path, *extra: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=PYNBOX,
        args=["serve", "--dest", DEST, "--mcp-stdio", "--session-store", str(store), *extra],
    )


@pytest.fixture(params=["stdio", "http"])
def connect(request: pytest.FixtureRequest, stdio_store: Path) -> Any:
    """`connect()`: a connected MCP client of the transport under test
    (tenant a over HTTP)."""
    if request.param == "stdio":
        return lambda: Client(stdio_params(stdio_store))
    server: HttpServer = request.getfixturevalue("http_server")
    return lambda: Client(http_client(server.url, TOKEN_A))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def call(c: Client, tool: str, args: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    r = await c.call_tool(tool, args)
    assert r.structured_content is not None, r
    # The text content carries the same JSON, for clients that read text.
    assert json.loads(r.content[0].text) == r.structured_content  # type: ignore[union-attr]
    return bool(r.is_error), r.structured_content


def test_tools_are_listed_with_their_schemas(connect: Any) -> None:
    async def go() -> None:
        async with connect() as c:
            tools = {t.name: t for t in (await c.list_tools()).tools}
            assert set(tools) == TOOLS
            assert tools["run_python"].input_schema["required"] == ["code"]
            assert tools["session_read_file"].input_schema["additionalProperties"] is False
            assert "session" in tools["session_exec"].input_schema["properties"]
    run(go())


def test_a_run_returns_its_exit_status_and_output(connect: Any) -> None:
    async def go() -> None:
        async with connect() as c:
            err, r = await call(c, "run_python", {"code": "print(6*7)"})
            assert (err, r["exit_code"], r["stdout"], r["limit"]) == (False, 0, "42\n", None)
            err, r = await call(c, "run_python", {
                "code": "import sys; print(sys.stdin.read().upper())", "stdin": "abc"})
            assert r["stdout"] == "ABC\n"
            # Each run is a fresh sandbox: nothing of the last one is left.
            err, r = await call(c, "run_python", {
                "code": "import os; print(os.listdir('/tmp'))"})
            assert r["stdout"] == "[]\n"
            err, r = await call(c, "run_python", {
                "code": "import sys; print('out'); print('bad', file=sys.stderr); sys.exit(3)"})
            assert err and r["exit_code"] == 3
            assert (r["stdout"], r["stderr"]) == ("out\n", "bad\n")
    run(go())


def test_a_session_keeps_state_across_calls_and_has_its_own_files(connect: Any) -> None:
    async def go() -> None:
        async with connect() as c:
            await call(c, "session_end", {"session": "keep"})
            err, r = await call(c, "session_exec", {"session": "keep", "code": (
                "import json\nx = 41\n"
                "open('/tmp/data.json', 'w').write(json.dumps({'x': x}))\n"
                "import os; os.mkdir('/tmp/sub'); open('/tmp/sub/b.bin', 'wb').write(bytes(range(256)))\n"
                "print('stored')")})
            assert (err, r["stdout"]) == (False, "stored\n")
            err, r = await call(c, "session_eval", {"session": "keep", "expr": "x + 1"})
            assert (err, r["value"]) == (False, 42)
            err, r = await call(c, "session_eval", {"session": "keep", "expr": "{'a': [1, None], 'b': b'hi'}"})
            assert r["value"] == {"a": [1, None], "b": {"$bytes": "aGk="}}
            # Another name is another interpreter.
            await call(c, "session_end", {"session": "other"})
            err, r = await call(c, "session_eval", {"session": "other", "expr": "x"})
            assert err and r["error"]["type"] == "NameError"

            err, r = await call(c, "session_list_files", {"session": "keep"})
            assert not err
            assert [(e["name"], e["type"]) for e in r["entries"]] == [("data.json", "file"), ("sub", "dir")]
            err, r = await call(c, "session_list_files", {"session": "keep", "path": "/tmp/sub"})
            assert r["entries"] == [{"name": "b.bin", "type": "file", "size": 256}]
            err, r = await call(c, "session_read_file", {"session": "keep", "path": "/tmp/data.json"})
            assert (err, r["encoding"], json.loads(r["content"])) == (False, "utf-8", {"x": 41})
            err, r = await call(c, "session_read_file", {
                "session": "keep", "path": "sub/b.bin", "offset": 250, "max_bytes": 4})
            assert (r["encoding"], r["content"], r["truncated"], r["size"]) == ("base64", "+vv8/Q==", True, 256)

            err, r = await call(c, "session_end", {"session": "keep"})
            assert r["ended"] is True
            err, r = await call(c, "session_list_files", {"session": "keep"})
            assert err and r["error"]["type"] == "NotFound"
            # Used again, the name starts a new session.
            err, r = await call(c, "session_eval", {"session": "keep", "expr": "'x' in globals()"})
            assert (err, r["value"]) == (False, False)
    run(go())


def test_a_guest_exception_is_a_tool_error_and_the_session_lives_on(connect: Any) -> None:
    async def go() -> None:
        async with connect() as c:
            await call(c, "session_exec", {"session": "exc", "code": "y = 1"})
            err, r = await call(c, "session_exec", {"session": "exc", "code": "print('before')\n1/0"})
            assert err
            assert (r["error"]["kind"], r["error"]["type"], r["alive"]) == ("guest", "ZeroDivisionError", True)
            assert "1/0" in r["error"]["traceback"]
            assert r["stdout"] == "before\n"
            err, r = await call(c, "session_eval", {"session": "exc", "expr": "y"})
            assert (err, r["value"]) == (False, 1)
            err, r = await call(c, "run_python", {"code": "raise ValueError('boom')"})
            assert err and r["exit_code"] == 1 and "ValueError: boom" in r["stderr"]
    run(go())


def test_limits_stop_runs_and_sessions(connect: Any) -> None:
    async def go() -> None:
        async with connect() as c:
            err, r = await call(c, "run_python", {"code": "while True: pass", "timeout": 0.5})
            assert err and (r["limit"], r["exit_code"]) == ("time", 124)
            err, r = await call(c, "run_python", {
                "code": "x = bytearray(200 * 1024 * 1024)", "memory": 64 * 1024 * 1024})
            # Refused memory: the interpreter raises MemoryError, or the
            # run is stopped at the limit.
            assert err and (r["limit"] == "memory" or "MemoryError" in r["stderr"]), r
            err, r = await call(c, "run_python", {"code": "print('x' * 100000)", "max_output": 1000})
            assert err and r["limit"] == "output"
            await call(c, "session_end", {"session": "spin"})
            err, r = await call(c, "session_exec", {"session": "spin", "code": "while True: pass", "timeout": 0.5})
            assert err and (r["error"]["kind"], r["error"]["type"], r["alive"]) == ("limit", "TimeLimit", False)
            err, r = await call(c, "session_eval", {"session": "spin", "expr": "1"})
            assert err and r["error"]["type"] == "SessionDead"
            await call(c, "session_end", {"session": "spin"})
            # A limit that is not a number of seconds is refused.
            err, r = await call(c, "run_python", {"code": "1", "timeout": -1})
            assert err and r["error"]["type"] == "BadRequest"
    run(go())


def test_arguments_outside_a_tools_schema_are_a_protocol_error(connect: Any) -> None:
    async def go() -> None:
        async with connect() as c:
            for tool, args in [
                ("run_python", {"code": "1", "bogus": 1}),
                ("run_python", {"code": "1", "timeout": "soon"}),
                ("run_python", {}),
                ("session_exec", {"session": "a", "code": "1", "memroy": 5}),
                ("no_such_tool", {}),
            ]:
                with pytest.raises(MCPError) as e:
                    await c.call_tool(tool, args)
                assert e.value.error.code == -32602, (tool, args, e.value)
            # The server is unharmed.
            err, r = await call(c, "run_python", {"code": "print(2)"})
            assert r["stdout"] == "2\n"
    run(go())


ESCAPES = [
    "..",
    "../x",
    "/tmp/../etc/passwd",
    "sub/../../x",
    "/etc/passwd",
    "/",
    "/tmpx/a",
    "a\0b",
    "x" * 5000,
]


def test_paths_out_of_the_scratch_space_are_refused(connect: Any) -> None:
    async def go() -> None:
        async with connect() as c:
            await call(c, "session_exec", {"session": "files", "code": "open('/tmp/ok', 'w').write('ok')"})
            for path in ESCAPES:
                for tool in ("session_read_file", "session_list_files"):
                    try:
                        err, r = await call(c, tool, {"session": "files", "path": path})
                    except Exception as e:  # refused by the schema (maxLength) in the SDK
                        assert len(path) > 4096, (path, e)
                        continue
                    assert err, (tool, path, r)
                    assert r["error"]["type"] == "BadRequest", (tool, path, r)
                    assert "content" not in r and "entries" not in r
            # Names that are not session names never reach a path.
            for name in ("../x", "a/b", "", "x" * 65):
                err, r = await call(c, "session_list_files", {"session": name})
                assert err and r["error"]["type"] == "BadRequest", (name, r)
            err, r = await call(c, "session_read_file", {"session": "files", "path": "/tmp/ok"})
            assert (err, r["content"]) == (False, "ok")
    run(go())


def test_a_session_outlives_its_stdio_server(stdio_store: Path) -> None:
    async def go() -> None:
        async with Client(stdio_params(stdio_store)) as c:
            await call(c, "session_end", {"session": "durable"})
            await call(c, "session_exec", {"session": "durable", "code": "kept = 'across processes'"})
        # The client closed stdin: the server saved the session and exited.
        async with Client(stdio_params(stdio_store)) as c:
            err, r = await call(c, "session_eval", {"session": "durable", "expr": "kept"})
            assert (err, r["value"]) == (False, "across processes")
            await call(c, "session_end", {"session": "durable"})
    run(go())


def test_symbolic_links_in_the_scratch_space_are_not_followed(http_server: HttpServer) -> None:
    """Guests cannot make symbolic links; if one were there anyway (made
    on the host), the file tools would not follow it out, nor at all."""
    async def go() -> None:
        async with Client(http_client(http_server.url, TOKEN_A)) as c:
            await call(c, "session_end", {"session": "links"})
            await call(c, "session_exec", {"session": "links", "code": (
                "open('/tmp/marker-for-the-link-test', 'w').write('inside')\n"
                "import os\n"
                "try:\n    os.symlink('/etc', '/tmp/guest-link')\nexcept OSError as e:\n    print('refused', e.errno)")})
            err, r = await call(c, "session_list_files", {"session": "links"})
            assert [e["name"] for e in r["entries"]] == ["marker-for-the-link-test"], r
            (marker,) = http_server.tmp.glob("pynbox-serve-*/sessions/*/*/marker-for-the-link-test")
            scratch = marker.parent
            (scratch / "out").symlink_to("/etc")
            (scratch / "passwd").symlink_to("/etc/passwd")
            (scratch / "inner").symlink_to(marker)
            for tool, path in [
                ("session_read_file", "out/passwd"),
                ("session_read_file", "/tmp/passwd"),
                ("session_read_file", "inner"),
                ("session_list_files", "out"),
            ]:
                err, r = await call(c, tool, {"session": "links", "path": path})
                assert err and r["error"]["type"] == "BadRequest", (tool, path, r)
                assert "root:" not in json.dumps(r)
            err, r = await call(c, "session_list_files", {"session": "links"})
            kinds = {e["name"]: e["type"] for e in r["entries"]}
            assert kinds == {"marker-for-the-link-test": "file", "out": "symlink",
                             "passwd": "symlink", "inner": "symlink"}, kinds
            await call(c, "session_end", {"session": "links"})
    run(go())


def test_stdio_tool_calls_beyond_the_queue_are_refused(tmp_path: Path) -> None:
    """Over stdio the same admission holds: one guest at a time and no
    queue, so a call while another runs is refused, as a tool error."""
    async def go() -> None:
        async with Client(stdio_params(tmp_path, "--max-concurrent", "1", "--queue", "0")) as c:
            for _ in range(20):
                long = asyncio.create_task(call(c, "run_python", {
                    "code": "import time; time.sleep(60)", "timeout": 120}))
                refused = None
                while not long.done():
                    err, r = await call(c, "run_python", {"code": "print(1)"})
                    if err:
                        refused = r["error"]["type"]
                        break
                if refused is None:
                    # The short call came first: the long one was refused.
                    err, r = long.result()
                    assert err and r["error"]["type"] == "TooManyRequests", r
                    continue
                assert refused == "TooManyRequests"
                assert not long.done()
                long.cancel()
                return
            raise AssertionError("the long run was never admitted")
    run(go())


def post(url: str, body: bytes, token: str | None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url + "/mcp", data=body, method="POST")
    req.add_header("Content-Type", "application/json")
    req.add_header("Accept", "application/json, text/event-stream")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


TOOL_CALL = json.dumps({
    "jsonrpc": "2.0", "id": 1, "method": "tools/call",
    "params": {"name": "run_python", "arguments": {"code": "print(1)"}},
}).encode()


def test_http_refuses_calls_without_a_valid_token(http_server: HttpServer) -> None:
    for token in (None, "not-a-token-of-anyone-at-all", TOKEN_A + "x"):
        status, headers, body = post(http_server.url, TOOL_CALL, token)
        assert status == 401, (token, status, body)
        assert headers.get("www-authenticate") == "Bearer"
        assert json.loads(body)["error"]["type"] == "Unauthorized"

    async def go() -> None:
        with pytest.raises(BaseException):
            async with Client(http_client(http_server.url, "wrong-token-0123456789")) as c:
                await c.list_tools()
    run(go())


def test_http_sessions_belong_to_their_tenant(http_server: HttpServer) -> None:
    async def go() -> None:
        async with Client(http_client(http_server.url, TOKEN_A)) as a, \
                Client(http_client(http_server.url, TOKEN_B)) as b:
            await call(a, "session_end", {"session": "mine"})
            await call(b, "session_end", {"session": "mine"})
            await call(a, "session_exec", {"session": "mine", "code": "secret = 1\nopen('/tmp/s', 'w').write('s')"})
            # The same name under tenant b is b's own session.
            err, r = await call(b, "session_eval", {"session": "mine", "expr": "'secret' in globals()"})
            assert (err, r["value"]) == (False, False)
            err, r = await call(b, "session_read_file", {"session": "mine", "path": "s"})
            assert err and r["error"]["type"] == "NotFound"
            await call(a, "session_end", {"session": "mine"})
            await call(b, "session_end", {"session": "mine"})
    run(go())


def test_http_batches_and_oversized_bodies_are_refused(http_server: HttpServer) -> None:
    status, _, body = post(http_server.url, b"[" + TOOL_CALL + b"]", TOKEN_A)
    assert status == 400 and b"batch" in body
    status, _, body = post(http_server.url, b" " * (11 * 1024 * 1024), TOKEN_A)
    assert status == 413


def test_http_tool_calls_beyond_the_queue_are_answered_429() -> None:
    """One guest at a time and no queue: while a run holds the only turn,
    another tool call is refused at once with 429 and Retry-After, and a
    tools/list (no guest) is still answered."""
    long_call = json.dumps({
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "run_python",
                   "arguments": {"code": "import time; time.sleep(60)", "timeout": 120}},
    }).encode()
    with tempfile.TemporaryDirectory() as d:
        server = HttpServer(Path(d), "--max-concurrent", "1", "--queue", "0")
        try:
            for _ in range(20):
                # The long call in a thread of its own, left behind when the
                # server is killed.
                answer: list[tuple[int, dict[str, str], bytes]] = []

                def long_post() -> None:
                    try:
                        answer.append(post(server.url, long_call, TOKEN_A))
                    except OSError:  # the server was killed under it
                        pass
                long = threading.Thread(target=long_post, daemon=True)
                long.start()
                refused = None
                while long.is_alive():
                    status, headers, body = post(server.url, TOOL_CALL, TOKEN_A)
                    assert status in (200, 429), (status, body)
                    if status == 429:
                        refused = (headers.get("retry-after"), json.loads(body)["error"]["type"])
                        break
                if refused is None:
                    # The short call came first and the long one was
                    # refused: try again.
                    long.join()
                    status, headers, body = answer[0]
                    assert status == 429 and headers.get("retry-after") == "1", (status, body)
                    continue
                assert refused == ("1", "TooManyRequests")

                async def listing() -> int:
                    async with Client(http_client(server.url, TOKEN_A)) as c:
                        return len((await c.list_tools()).tools)
                assert run(listing()) == len(TOOLS)
                assert long.is_alive()
                return
            raise AssertionError("the long run was never admitted")
        finally:
            server.proc.kill()
            server.proc.wait()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
