import os
import sys
from pathlib import Path

import pytest

import pynbox


@pytest.fixture(scope="session")
def dest() -> str:
    """The carried interpreter's install (prepared on first use)."""
    return pynbox._dest(None)


@pytest.fixture
def py() -> str:
    return sys.executable


def wheel() -> Path:
    w = os.environ.get("PYNBOX_WHEEL")
    if not w:
        pytest.skip("PYNBOX_WHEEL is not set (scripts/test-python.sh sets it)")
    return Path(w)
