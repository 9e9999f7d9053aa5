#!/usr/bin/env bash
# CPython's own regression suite inside the sandbox, checked against
# recipes/python-tests/expected.txt (scripts/regrtest.py says how). Builds
# (cached) and installs python + python-tests into a fresh DEST first.
#   scripts/regrtest.sh                       the whole suite, as CI runs it
#   scripts/regrtest.sh --only test_os        some modules
#   scripts/regrtest.sh --update              rewrite the list from a run
# Runs two sandboxes at once on two cores (--jobs): about 3 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/pynbox/cargo-target}
pynbox=$CARGO_TARGET_DIR/release/pynbox
[ -x "$pynbox" ] || cargo build --release --locked
"$pynbox" build python python-tests
work=$(mktemp -d "${TMPDIR:-/tmp}/pynbox-regrtest.XXXXXX")
# The logs stay when the check fails: they hold each failure's traceback.
trap 'if [ $? = 0 ]; then rm -rf "$work"; else rm -rf "$work/sandbox"; echo "logs kept in $work/logs" >&2; fi' EXIT
"$pynbox" install "$work/sandbox" python python-tests
# The host side runs on the native CPython of the same source (the python
# recipe's baseline build): no other Python is needed on the machine.
build/native-python/bin/python3 -I scripts/regrtest.py "$work/sandbox" --logs "$work/logs" "$@"
