"""pynbox: run untrusted Python in a WebAssembly sandbox.

The guest is CPython 3.13 compiled to WebAssembly, run by Wasmtime inside
this process: it sees only the directories you mount, under memory, time
and output limits.

    >>> import pynbox
    >>> pynbox.run("print(6 * 7)").stdout
    '42\\n'

The wheel carries the interpreter; the first use in a new version installs
it into a per-user cache (``$PYNBOX_HOME``, else ``~/.cache/pynbox``), once.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Union

from . import _pynbox
from ._pynbox import (
    Error,
    GuestError,
    LimitError,
    MemoryLimit,
    Output,
    OutputLimit,
    Repr,
    Result,
    SessionDead,
    TimeLimit,
)

__all__ = [
    "run",
    "install",
    "Session",
    "SessionPool",
    "Result",
    "Output",
    "Repr",
    "Error",
    "GuestError",
    "LimitError",
    "TimeLimit",
    "MemoryLimit",
    "OutputLimit",
    "SessionDead",
    "home",
]

_DATA = Path(__file__).resolve().parent / "data"

# The defaults of `pynbox run` / DEST/bin/run.
_MEMORY = "1G"
_TIMEOUT = 3600.0
_MAX_OUTPUT = "1G"

_prepared: Optional[str] = None
_prepare_lock = threading.Lock()


def home() -> Path:
    """Where pynbox keeps the interpreter it prepares on first use:
    ``$PYNBOX_HOME``, else ``$XDG_CACHE_HOME/pynbox``, else
    ``~/.cache/pynbox``."""
    if os.environ.get("PYNBOX_HOME"):
        return Path(os.environ["PYNBOX_HOME"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "pynbox"
    return Path.home() / ".cache" / "pynbox"


def _archive() -> Path:
    found = sorted(_DATA.glob("python.*.tar.zst"))
    if not found:
        raise Error(
            f"this pynbox package carries no Python interpreter ({_DATA} holds no "
            "python.*.tar.zst): build the wheel with scripts/build-wheel.sh"
        )
    return found[-1]


def _runner() -> Optional[str]:
    cli = _DATA / "pynbox"
    return str(cli) if cli.is_file() else None


def _dest(install: Union[str, "os.PathLike[str]", None]) -> str:
    """The install to run: the one given, else the carried interpreter's."""
    global _prepared
    if install is not None:
        return os.fspath(install)
    with _prepare_lock:
        if _prepared is None:
            _prepared = os.fspath(_pynbox.prepare(str(_archive()), str(home()), _runner()))
        return _prepared


Mount = Union[str, Sequence[Union[str, "os.PathLike[str]"]]]


def run(
    code_or_argv: Union[str, Sequence[str]],
    *,
    mounts: Iterable[Mount] = (),
    env: Optional[Mapping[str, str]] = None,
    stdin: Union[bytes, str] = b"",
    memory: Union[int, str, None] = _MEMORY,
    timeout: Optional[float] = _TIMEOUT,
    max_output: Union[int, str, None] = _MAX_OUTPUT,
    install: Union[str, "os.PathLike[str]", None] = None,
) -> Result:
    """Runs Python in a fresh sandbox and returns its exit code and output.

    ``code_or_argv`` is code (``python -c CODE``) or python's arguments
    (``["-m", "json.tool"]``). The install's root is mounted read-only at
    ``/`` unless ``mounts`` mounts ``/``. A limit reached is reported in
    ``Result.limit`` ("time", "memory" or "output"), not raised.
    """
    if isinstance(code_or_argv, tuple):
        code_or_argv = list(code_or_argv)
    if env is not None and not isinstance(env, dict):
        env = dict(env)
    return _pynbox.run(
        code_or_argv,
        _mounts(mounts),
        env,
        stdin,
        memory,
        timeout,
        max_output,
        _dest(install),
    )


def _mounts(mounts: Any) -> Any:
    if mounts is None or isinstance(mounts, (str, bytes)):
        return mounts
    try:
        items = list(mounts)
    except TypeError:
        return mounts
    return [tuple(m) if isinstance(m, list) else m for m in items]


def install(
    dest: Union[str, "os.PathLike[str]"],
    packages: Union[str, Sequence[str]],
    *,
    repo: Union[str, "os.PathLike[str]", None] = None,
) -> List[str]:
    """Installs packages (``"python"``, ``"lxml"``, ``"NAME=VERSION"``) and
    what they depend on into ``dest``, from ``repo`` (a directory or an
    http(s) URL of a pynbox package repository; by default the packages
    this wheel carries). Returns the install's log lines. Run in it with
    ``run(..., install=dest)`` or ``Session(install=dest)``."""
    repo = os.fspath(repo) if repo is not None else str(_DATA)
    return _pynbox.install(os.fspath(dest), packages, repo, _runner())


class Session:
    """A live interpreter whose globals last from one call to the next.

    ``timeout`` applies to each call; ``memory`` and ``max_output`` to
    the whole session. A call that reaches a limit raises
    :class:`TimeLimit`, :class:`MemoryLimit` or :class:`OutputLimit`;
    check :attr:`alive` to know whether the session survived it.
    """

    def __init__(
        self,
        *,
        mounts: Iterable[Mount] = (),
        env: Optional[Mapping[str, str]] = None,
        memory: Union[int, str, None] = _MEMORY,
        timeout: Optional[float] = _TIMEOUT,
        max_output: Union[int, str, None] = _MAX_OUTPUT,
        install: Union[str, "os.PathLike[str]", None] = None,
        _restore: Optional[bytes] = None,
    ) -> None:
        if env is not None and not isinstance(env, dict):
            env = dict(env)
        self._s = _pynbox.Session(
            _mounts(mounts),
            env,
            memory,
            timeout,
            max_output,
            _dest(install),
            _restore,
        )

    @classmethod
    def restore(
        cls,
        data: bytes,
        *,
        mounts: Iterable[Mount] = (),
        env: Optional[Mapping[str, str]] = None,
        memory: Union[int, str, None] = _MEMORY,
        timeout: Optional[float] = _TIMEOUT,
        max_output: Union[int, str, None] = _MAX_OUTPUT,
        install: Union[str, "os.PathLike[str]", None] = None,
    ) -> "Session":
        """A session saved by :meth:`save`, alive again. Mounts,
        environment and limits are the host's: give them again."""
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(
                f"Session.restore: bytes from Session.save(), not {type(data).__name__}"
            )
        return cls(
            mounts=mounts,
            env=env,
            memory=memory,
            timeout=timeout,
            max_output=max_output,
            install=install,
            _restore=bytes(data),
        )

    def exec(self, code: str) -> Output:
        """Runs statements; returns their output."""
        return self._s.exec(code)

    def eval(self, expr: str) -> Any:
        """Evaluates an expression and returns its value: None, bool,
        int, float, str, bytes, list or dict, else a :class:`Repr`."""
        return self._s.eval(expr)

    async def exec_async(self, code: str) -> Output:
        """:meth:`exec` in a worker thread, as an awaitable."""
        out: Output = await _in_thread(self._s.exec, code)
        return out

    async def eval_async(self, expr: str) -> Any:
        """:meth:`eval` in a worker thread, as an awaitable."""
        return await _in_thread(self._s.eval, expr)

    def expose(self, name: str, fn: Any) -> None:
        """Lets guest code call ``fn`` as
        ``import pynbox_host; pynbox_host.call(name, *args)``."""
        self._s.expose(name, fn)

    def save(self) -> bytes:
        """The session as bytes, to :meth:`restore` here or elsewhere."""
        return self._s.save()

    @property
    def alive(self) -> bool:
        """Whether the session can still run calls."""
        return self._s.alive

    def close(self) -> None:
        """Ends the session and frees its memory."""
        self._s.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @classmethod
    def _wrap(cls, s: Any) -> "Session":
        self = cls.__new__(cls)
        self._s = s
        return self


class SessionPool:
    """Fresh sessions started ahead of time by a background thread, for a
    new sandbox per job in microseconds instead of milliseconds.

    Every session :meth:`take` returns is new, with the pool's options,
    and is never handed to anyone else; when none is ready (takes faster
    than the thread starts them), :meth:`take` starts one itself. Each
    waiting session holds its memory (about 4 MiB), so keep ``size``
    small (1 to 64).

        with pynbox.SessionPool(size=2, timeout=5) as pool:
            with pool.take() as s:
                s.exec(untrusted_code)
    """

    def __init__(
        self,
        size: int = 2,
        *,
        mounts: Iterable[Mount] = (),
        env: Optional[Mapping[str, str]] = None,
        memory: Union[int, str, None] = _MEMORY,
        timeout: Optional[float] = _TIMEOUT,
        max_output: Union[int, str, None] = _MAX_OUTPUT,
        install: Union[str, "os.PathLike[str]", None] = None,
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"SessionPool: size must be an int, not {type(size).__name__}")
        if not 1 <= size <= 64:
            raise ValueError(f"SessionPool: size must be 1 to 64, not {size}")
        if env is not None and not isinstance(env, dict):
            env = dict(env)
        self._p = _pynbox.SessionPool(
            size,
            _mounts(mounts),
            env,
            memory,
            timeout,
            max_output,
            _dest(install),
        )

    def take(self) -> Session:
        """A fresh session, yours alone: close it when done."""
        return Session._wrap(self._p.take())

    @property
    def ready(self) -> int:
        """How many sessions are started and waiting."""
        return self._p.ready

    def close(self) -> None:
        """Stops the thread and ends the sessions nobody took (sessions
        already taken live on)."""
        self._p.close()

    def __enter__(self) -> "SessionPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

async def _in_thread(fn: Any, arg: Any) -> Any:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, fn, arg)
