#!/usr/bin/env bash
# Builds the pynbox wheel: target/wheels/pynbox-VERSION-cp39-abi3-PLATFORM.whl.
#
#   scripts/build-wheel.sh
#
# 1. the pynbox CLI (cargo, release) and the python package with it
#    (`pynbox build python`: cached, seconds when nothing changed);
# 2. the package's archive and the CLI go into python/pynbox/data/: the
#    wheel carries the interpreter, installed on first use, and the runner
#    of the installs made with pynbox.install();
# 3. maturin (pip-installed into a virtualenv under ~/.cache/pynbox, made
#    with the system's python3) builds the `_pynbox` extension (PyO3,
#    abi3: one wheel for CPython 3.9 and later) and the wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/pynbox/cargo-target}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/pynbox
say() { printf '\n== %s\n' "$*"; }

say "build pynbox and the python package (cached)"
cargo build --release --locked -p pynbox --bin pynbox
pynbox=$CARGO_TARGET_DIR/release/pynbox
"$pynbox" build python

# The archive `pynbox install` would take: build/packages/index.json's
# python entry (the build writes one archive per package name).
archive=$(python3 - "$root/build/packages" <<'PY'
import json, sys, pathlib
d = pathlib.Path(sys.argv[1])
entries = [e for e in json.loads((d / "index.json").read_text())["packages"] if e["name"] == "python"]
if not entries:
    sys.exit("no python package in build/packages/index.json")
print(d / entries[-1]["file"])
PY
)
data=python/pynbox/data
rm -rf "$data"
mkdir -p "$data"
cp "$archive" "$data/"
cp "$pynbox" "$data/pynbox"
strip "$data/pynbox" 2>/dev/null || true
echo "carried: $(cd "$data" && ls -s --block-size=M | tail -n +2 | tr '\n' ' ')"

say "maturin (in $cache/wheel-venv)"
venv=$cache/wheel-venv
if [ ! -x "$venv/bin/maturin" ]; then
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet 'maturin==1.16.0'
fi
mkdir -p target/wheels
rm -f target/wheels/pynbox-*.whl
"$venv/bin/maturin" build --release --locked --manifest-path python/Cargo.toml --out target/wheels
ls -l target/wheels/pynbox-*.whl
