import subprocess
from pathlib import Path

import pytest

import pynbox


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("install") / "sandbox"
    log = pynbox.install(dest, ["python"])
    assert any(line.startswith("installed python") for line in log), log
    return dest


def test_install_and_run_in_it(installed: Path):
    r = pynbox.run("import sys; print(sys.version_info[:2])", install=installed)
    assert r.stdout == "(3, 13)\n"


def test_session_in_it(installed: Path):
    with pynbox.Session(install=installed) as s:
        assert s.eval("__import__('sys').version_info[:2]") == [3, 13]


def test_install_has_a_working_runner(installed: Path):
    """The wheel carries the pynbox CLI: bin/run works in an install made
    from Python (inside an extension, the running executable is Python)."""
    out = subprocess.run(
        [installed / "bin" / "run", "python", "-c", "print(6 * 7)"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "42\n"


def test_install_again_skips(installed: Path):
    log = pynbox.install(str(installed), "python")
    assert any("already installed" in line for line in log), log


def test_unknown_package(tmp_path: Path):
    with pytest.raises(pynbox.Error, match="not in the repository"):
        pynbox.install(tmp_path / "d", ["no-such-package"])
    assert not (tmp_path / "d").exists()


def test_missing_repository(tmp_path: Path):
    with pytest.raises(pynbox.Error, match="does not exist"):
        pynbox.install(tmp_path / "d", ["python"], repo=tmp_path / "nope")


def test_bad_arguments(tmp_path: Path):
    with pytest.raises(TypeError, match="packages"):
        pynbox.install(tmp_path / "d", 5)
    with pytest.raises(ValueError, match="at least one"):
        pynbox.install(tmp_path / "d", [])
    with pytest.raises(pynbox.Error, match="name"):
        pynbox.install(tmp_path / "d", ["../evil"])


def test_run_in_a_directory_that_is_not_an_install(tmp_path: Path):
    with pytest.raises(ValueError, match="not a pynbox install"):
        pynbox.run("pass", install=tmp_path)
