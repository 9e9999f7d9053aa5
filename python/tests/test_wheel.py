"""The wheel alone, in a fresh virtualenv, on a machine where nothing was
prepared yet: two processes start at once; one prepares the interpreter
(one line on stderr), the other waits for it; both print 42."""

import os
import subprocess
import sys
from pathlib import Path

from conftest import wheel


def test_fresh_venv_two_processes_at_first_use(tmp_path: Path):
    w = wheel()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run(
        [venv / "bin" / "pip", "install", "--quiet", "--no-index", w], check=True, timeout=300
    )
    env = dict(os.environ, PYNBOX_HOME=str(tmp_path / "home"))
    cmd = [venv / "bin" / "python", "-c", "import pynbox; print(pynbox.run('print(6*7)').stdout)"]
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out == "42\n\n"
    lines = [l for _, err in outs for l in err.splitlines()]
    assert lines == ["pynbox: preparing the Python interpreter (once, about a minute)..."], lines
    installs = [p for p in (tmp_path / "home" / "python").iterdir() if p.is_dir()]
    assert len(installs) == 1 and not installs[0].name.startswith("."), installs
    # The next process finds it ready, silently.
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert (out.stdout, out.stderr) == ("42\n\n", "")
