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

async def _in_thread(fn: Any, arg: Any) -> Any:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, fn, arg)
