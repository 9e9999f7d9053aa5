#!/usr/bin/env bash
# `pynbox serve` with its session store in S3: starts moto's S3-compatible
# server on loopback (from a pinned virtualenv under ~/.cache/pynbox,
# outside the checkout) and runs tests/serve.rs's S3 test against it. The
# test is skipped, saying why, when PYNBOX_TEST_S3_ENDPOINT is not set,
# as in the plain `cargo test`; this script sets it.
# Needs PYNBOX_TEST_DEST (an install with python), as scripts/test.sh gives.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PYNBOX_TEST_DEST:?set PYNBOX_TEST_DEST to an install with python}"

cache=${XDG_CACHE_HOME:-$HOME/.cache}/pynbox
moto_version=5.2.5
venv=$cache/moto-venv-$moto_version
if [ ! -x "$venv/bin/moto_server" ]; then
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "moto[server]==$moto_version"
fi

# A free loopback port, then moto on it; stopped however this script ends.
port=$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp "${TMPDIR:-/tmp}/moto.XXXXXX")
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
moto=$!
trap 'kill "$moto" 2>/dev/null; wait "$moto" 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 100); do
    if curl -fs -o /dev/null "http://127.0.0.1:$port/"; then
        break
    fi
    if ! kill -0 "$moto" 2>/dev/null; then
        echo "moto did not start:" >&2
        cat "$log" >&2
        exit 1
    fi
    sleep 0.2
done

export PYNBOX_TEST_S3_ENDPOINT=http://127.0.0.1:$port
cargo test --release --locked --test serve -- --test-threads=2 --nocapture idle_sessions_in_s3
