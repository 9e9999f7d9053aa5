# Types of the native module. Use the functions of `pynbox` itself: they
# give these their keyword arguments and defaults.
from os import PathLike
from typing import Any, Callable, Optional, Sequence, Union, final

__all__ = [
    "Error",
    "GuestError",
    "LimitError",
    "TimeLimit",
    "MemoryLimit",
    "OutputLimit",
    "SessionDead",
    "Result",
    "run",
    "install",
    "prepare",
    "Session",
    "SessionPool",
    "Repr",
    "Output",
]

class Error(Exception):
    """Base class of pynbox's own errors."""

class GuestError(Error):
    """The guest raised an exception."""

    type_name: str
    message: str
    traceback: str
    stdout: str
    stderr: str

class LimitError(Error):
    """A call reached one of its limits."""

    message: str
    stdout: str
    stderr: str

class TimeLimit(LimitError): ...
class MemoryLimit(LimitError): ...
class OutputLimit(LimitError): ...

class SessionDead(Error):
    """The session has ended and can run nothing more."""

    message: str
    stdout: str
    stderr: str

@final
class Result:
    """What a run produced."""

    @property
    def exit_code(self) -> int:
        """The guest's exit status; 124, 137, 153 for a limit, 134 for a crash."""
    @property
    def stdout(self) -> str:
        """Standard output, decoded as UTF-8 (invalid bytes replaced)."""
    @property
    def stdout_bytes(self) -> bytes: ...
    @property
    def stderr(self) -> str:
        """Standard error, decoded as UTF-8 (invalid bytes replaced)."""
    @property
    def stderr_bytes(self) -> bytes: ...
    @property
    def limit(self) -> Optional[str]:
        """None, or the limit the run reached: "time", "memory" or "output"."""
    @property
    def crash(self) -> Optional[str]:
        """None, or why the guest crashed (a WebAssembly trap)."""

@final
class Output:
    """The output of one `Session.exec`."""

    @property
    def stdout(self) -> str: ...
    @property
    def stdout_bytes(self) -> bytes: ...
    @property
    def stderr(self) -> str: ...
    @property
    def stderr_bytes(self) -> bytes: ...

@final
class Repr:
    """A guest value outside the interchange form, as its repr()."""

    def __new__(cls, text: str) -> "Repr": ...
    @property
    def text(self) -> str: ...

@final
class Session:
    def __new__(
        cls,
        mounts: Any,
        env: Optional[dict[str, str]],
        memory: Union[int, str, None],
        timeout: Optional[float],
        max_output: Union[int, str, None],
        dest: Union[str, PathLike[str]],
        restore: Optional[bytes],
    ) -> "Session": ...
    def exec(self, code: str) -> Output: ...
    def eval(self, expr: str) -> Any: ...
    def expose(self, name: str, func: Callable[..., Any]) -> None: ...
    def save(self) -> bytes: ...
    @property
    def alive(self) -> bool: ...
    def close(self) -> None: ...

@final
class SessionPool:
    def __new__(
        cls,
        size: int,
        mounts: Any,
        env: Optional[dict[str, str]],
        memory: Union[int, str, None],
        timeout: Optional[float],
        max_output: Union[int, str, None],
        dest: Union[str, PathLike[str]],
    ) -> "SessionPool": ...
    def take(self) -> Session: ...
    @property
    def ready(self) -> int: ...
    def close(self) -> None: ...

def run(
    code_or_argv: Union[str, Sequence[str]],
    mounts: Any,
    env: Optional[dict[str, str]],
    stdin: Union[bytes, str, None],
    memory: Union[int, str, None],
    timeout: Optional[float],
    max_output: Union[int, str, None],
    dest: Union[str, PathLike[str]],
) -> Result: ...
def install(
    dest: Union[str, PathLike[str]],
    packages: Union[str, Sequence[str]],
    repo: str,
    runner: Optional[str],
) -> list[str]: ...
def prepare(archive: str, home: str, runner: Optional[str]) -> str: ...
