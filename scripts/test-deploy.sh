#!/usr/bin/env bash
# The deployment: deploy/kubernetes/ and deploy/Dockerfile.
#
#   scripts/test-deploy.sh [DEST]
#
# 1. Every manifest against Kubernetes' schemas with PyPI's
#    kubernetes-validate (pinned, in a virtualenv under ~/.cache/pynbox),
#    strictly, for two Kubernetes versions; the KEDA ScaledObject (a CRD
#    the core schemas do not know) against a schema of the CRD's fields it
#    uses, and all of them against what they promise to each other
#    (tests/deploy/check_manifests.py says how).
# 2. With DEST (an install with python), the image's file tree
#    (deploy/image-root.sh) run under chroot as the image's user, with
#    nothing but that tree: its API answered (health, readiness, /v1/run,
#    MCP at /mcp). Needs root; skipped, saying so, without it.
# 3. With DEST, when this machine has a Docker daemon and debootstrap: a
#    Debian base image made with debootstrap and `docker import`, the
#    image built from deploy/Dockerfile on it (with the tree of step 2 as
#    deploy/.prebuilt), run read-only with no capabilities on the host's
#    network, and its API hit; the test image and its build stage's image
#    are removed after, the base is kept for the next run. The daemon is
#    whichever `docker` reaches (DOCKER_HOST); the classic builder and
#    BuildKit both do. Otherwise skipped, saying why.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

# What tests/deploy/check_manifests.py imports, pinned; the virtualenv is
# named after the pins, so that changing one makes a new one.
validate_version=1.37.0
pins=("kubernetes-validate==$validate_version" "jsonschema==4.26.0" "PyYAML==6.0.4")
cache=${XDG_CACHE_HOME:-$HOME/.cache}/pynbox
venv=$cache/deploy-venv-$(printf '%s\n' "${pins[@]}" | sha256sum | cut -c1-12)
if ! "$venv/bin/python" -c 'import kubernetes_validate, jsonschema, yaml' 2>/dev/null; then
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "${pins[@]}"
fi

echo "== manifests (kubernetes-validate $validate_version)"
"$venv/bin/python" tests/deploy/check_manifests.py 1.33.0 1.37.0

dest=${1:-}
if [ -z "$dest" ]; then
    echo "== image: skipped (no DEST given: scripts/test-deploy.sh DEST)"
    exit 0
fi
pynbox=${PYNBOX:-${CARGO_TARGET_DIR:-$HOME/.cache/pynbox/cargo-target}/release/pynbox}
work=$(mktemp -d "${TMPDIR:-/tmp}/pynbox-deploy.XXXXXX")
server=
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    if [ -n "${image:-}" ]; then
        docker rm -f pynbox-deploy-test >/dev/null 2>&1 || true
        docker rmi "$image" >/dev/null 2>&1 || true
        # The build stage's image, which the classic builder keeps: the
        # dangling images that were not there before.
        comm -13 <(printf '%s\n' "$dangling" | sort) \
            <(docker images -q --filter dangling=true | sort) | xargs -r docker rmi >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '[[tenant]]\nname = "deploy-test"\ntoken = "%s"\n' "$token" > "$work/tokens.toml"

# Health, readiness, a run, and an MCP tool call at URL. (Called in an
# `if`, where `set -e` does not apply: every step says when it fails.)
hit_api() {
    local url=$1 i body
    for i in $(seq 1 600); do
        curl -fsS --max-time 5 -o /dev/null "$url/readyz" 2>/dev/null && break
        [ "$i" = 600 ] && { echo "not ready after 120 s" >&2; return 1; }
        sleep 0.2
    done
    curl -fsS --max-time 5 -o /dev/null "$url/healthz" || return 1
    body=$(curl -fsS --max-time 60 -H "Authorization: Bearer $token" \
        -d '{"code": "import sys; print(6 * 7, sys.platform)"}' "$url/v1/run") || return 1
    "$venv/bin/python" -c 'import json, sys; r = json.loads(sys.argv[1]); assert r["stdout"] == "42 wasi\n", r' "$body" || return 1
    body=$(curl -fsS --max-time 60 -H "Authorization: Bearer $token" \
        -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
        -d '{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "run_python", "arguments": {"code": "print(7 * 6)"}}}' \
        "$url/mcp") || return 1
    "$venv/bin/python" -c 'import json, sys; r = json.loads(sys.argv[1])["result"]; assert r["structuredContent"]["stdout"] == "42\n", r' "$body" || return 1
    # And without the token, nothing.
    [ "$(curl -s -o /dev/null -w '%{http_code}' -d '{"code": "1"}' "$url/v1/run")" = 401 ] || return 1
    echo "   $url: /healthz, /readyz, /v1/run, /mcp tools/call answered; no token: 401"
}

echo "== image file tree (deploy/image-root.sh), under chroot"
tree=$work/tree
deploy/image-root.sh "$pynbox" "$dest" "$tree"
echo "   $(du -sh "$tree" | cut -f1) in $(find "$tree" -type f | wc -l) files; outside dest/: $(cd "$tree" && find . -path ./dest -prune -o -type f -print | sort | tr '\n' ' ')"
if [ "$(id -u)" != 0 ] || ! command -v chroot >/dev/null; then
    echo "   skipped: running the tree needs root and chroot (this is uid $(id -u))"
else
    # As in the image: everything root's and read-only to the server's
    # user, but /tmp and the session store.
    chown 65532:65532 "$tree/var/lib/pynbox"
    cp "$work/tokens.toml" "$tree/etc/pynbox/tokens/tokens.toml"
    chmod 0444 "$tree/etc/pynbox/tokens/tokens.toml"
    port=$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    env -i TMPDIR=/tmp "$(command -v chroot)" --userspec=65532:65532 "$tree" /usr/local/bin/pynbox serve --dest /dest \
        --listen "127.0.0.1:$port" --tokens /etc/pynbox/tokens/tokens.toml \
        --session-store /var/lib/pynbox/sessions >"$work/chroot.out" 2>"$work/chroot.log" &
    server=$!
    if ! hit_api "http://127.0.0.1:$port"; then
        cat "$work/chroot.log" >&2
        exit 1
    fi
    kill "$server"
    wait "$server" || true
    server=
fi

echo "== container image (deploy/Dockerfile)"
why=
if ! command -v docker >/dev/null; then
    why="no docker command"
elif ! docker info >/dev/null 2>&1; then
    why="docker is installed but no Docker daemon answers ($(docker info 2>&1 | grep -m1 -i 'cannot connect\|error' || true))"
elif ! command -v debootstrap >/dev/null; then
    why="no debootstrap to make a Debian base image from Debian's packages (apt-get install debootstrap)"
elif [ "$(id -u)" != 0 ]; then
    why="debootstrap needs root"
fi
if [ -n "$why" ]; then
    echo "   skipped: $why"
    exit 0
fi
base=pynbox-debian-base:bookworm
if ! docker image inspect "$base" >/dev/null 2>&1; then
    debootstrap --variant=minbase bookworm "$work/rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$work/debootstrap.log"
    tar -C "$work/rootfs" -c . | docker import - "$base" >/dev/null
    rm -rf "$work/rootfs"
fi
ctx=$work/context
mkdir -p "$ctx/deploy"
cp deploy/Dockerfile "$ctx/deploy/Dockerfile"
cp -a "$tree" "$ctx/deploy/.prebuilt"
rm -f "$ctx/deploy/.prebuilt/etc/pynbox/tokens/tokens.toml"
dangling=$(docker images -q --filter dangling=true)
image=pynbox-deploy-test:latest
docker build -q -f "$ctx/deploy/Dockerfile" --build-arg BUILDER="$base" -t "$image" "$ctx" >/dev/null
# The host's network, on a free loopback port: no bridge or port mapping
# needed from the daemon.
port=$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
docker run -d --name pynbox-deploy-test --network host --read-only --tmpfs /tmp \
    --tmpfs /var/lib/pynbox:uid=65532,gid=65532 --cap-drop ALL --security-opt no-new-privileges \
    -v "$work/tokens.toml:/etc/pynbox/tokens/tokens.toml:ro" "$image" \
    --listen "127.0.0.1:$port" --tokens /etc/pynbox/tokens/tokens.toml \
    --session-store /var/lib/pynbox/sessions >/dev/null
url="http://127.0.0.1:$port"
if ! hit_api "$url"; then
    docker logs pynbox-deploy-test >&2
    exit 1
fi
root_user=$(docker image inspect -f '{{.Config.User}}' "$image")
[ "$root_user" = 65532:65532 ] || { echo "the image runs as '$root_user'" >&2; exit 1; }
echo "   image $image: built on $base, ran read-only as 65532 with no capabilities"
