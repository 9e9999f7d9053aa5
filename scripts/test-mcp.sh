#!/usr/bin/env bash
# `pynbox serve` as an MCP server, through the official Python MCP SDK
# (PyPI's `mcp`, pinned) over stdio and streamable HTTP: tests/mcp/.
# The SDK and pytest live in a virtualenv made with the system's python3
# under ~/.cache/pynbox (outside the checkout), named after the pins so
# that a change of version makes a new one.
#
#   scripts/test-mcp.sh DEST [PYTEST ARGS...]
#
# DEST is an install with python (`pynbox install DEST python`); the
# binary is $CARGO_TARGET_DIR/release/pynbox, or $PYNBOX if set.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ] || [ ! -d "$1" ]; then
    echo "usage: scripts/test-mcp.sh DEST [PYTEST ARGS...]  (DEST: an install with python)" >&2
    exit 2
fi
dest=$(cd "$1" && pwd)
shift

mcp_version=2.3.0
pytest_version=9.2.0
cache=${XDG_CACHE_HOME:-$HOME/.cache}/pynbox
venv=$cache/mcp-venv-$mcp_version-pytest-$pytest_version
if [ ! -x "$venv/bin/pytest" ] || ! "$venv/bin/python" -c 'import mcp' 2>/dev/null; then
    rm -rf "$venv"
    # The SDK needs Python 3.10 or later.
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "mcp==$mcp_version" "pytest==$pytest_version"
fi

export PYNBOX=${PYNBOX:-${CARGO_TARGET_DIR:-$HOME/.cache/pynbox/cargo-target}/release/pynbox}
export PYNBOX_TEST_DEST=$dest
cd tests/mcp
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@" test_mcp.py
