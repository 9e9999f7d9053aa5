# shellcheck shell=bash
# Shared helpers for pynbox recipes. Sourced by recipes/<pkg>/build.sh and
# recipes/toolchain.sh.
#
# Contract with the driver (`pynbox build`): the script's stdout carries only
# progress lines (one per step, written by `step`); everything else goes to
# $PYNBOX_LOG, whose tail the driver shows when the script exits non-zero.
exec 3>&1 1>>"${PYNBOX_LOG:?PYNBOX_LOG must name the log file}" 2>&1
set -euo pipefail
shopt -s inherit_errexit 2>/dev/null || true

: "${PYNBOX_RECIPES:?PYNBOX_RECIPES must be the absolute path of recipes/}"
: "${PYNBOX_CACHE:=$HOME/.cache/pynbox}"
: "${PYNBOX_JOBS:=$(nproc 2>/dev/null || echo 2)}"
export PYNBOX_RECIPES PYNBOX_CACHE PYNBOX_JOBS PYNBOX_LOG
mkdir -p "$PYNBOX_CACHE/sources" "$PYNBOX_CACHE/work" "$PYNBOX_CACHE/toolchain"

# The same locale and time zone for every tool, whoever runs the recipe.
export LC_ALL=C TZ=UTC

_step_name=""
_step_start=$SECONDS
# The log gets each step's duration, which is how build times are measured.
_step_close() {
    if [[ -n "$_step_name" ]]; then
        echo "[pynbox] done: $_step_name ($((SECONDS - _step_start)) s)"
    fi
}
step() {
    _step_close
    _step_name="$*"
    _step_start=$SECONDS
    echo "[pynbox] step: $* ($(date -u +%H:%M:%S))"
    echo "$*" >&3
}

# Messages for the log go to stderr so that functions whose stdout is captured
# with $(...) stay clean.
die() {
    echo "[pynbox] ERROR: $*" >&2
    exit 1
}

# Echo a command into the log before running it, so that the log's tail shows
# what failed.
run() {
    echo "+ $*" >&2
    "$@"
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# have_verified FILE SHA256: prints FILE and succeeds when it exists with
# that hash (a fetch checks before and again after taking its lock).
have_verified() { [[ -f $1 && "$(sha256_of "$1")" == "$2" ]] && echo "$1"; }

# Short stable hash of its arguments (strings, or files given as @path), used
# to key cache directories by everything that determines their content.
cache_key() {
    local a
    for a in "$@"; do
        if [[ $a == @* ]]; then
            printf 'file:%s\n' "$(sha256_of "${a#@}")"
        else
            printf 'str:%s\n' "$a"
        fi
    done | sha256sum | cut -c1-16
}

# Serialise concurrent recipe runs on one cache (e.g. parallel Rust tests all
# asking for the toolchain). Held until release_lock or the shell's exit;
# taking a lock this shell already holds is a no-op.
declare -A _pynbox_locks=()
take_lock() {
    local name=$1 fd
    [[ -z ${_pynbox_locks[$name]:-} ]] || return 0
    mkdir -p "$PYNBOX_CACHE/locks"
    exec {fd}>"$PYNBOX_CACHE/locks/$name.lock"
    if ! flock -n "$fd"; then
        echo "[pynbox] waiting for lock $name" >&2
        flock "$fd"
    fi
    _pynbox_locks[$name]=$fd
}
release_lock() {
    local name=$1 fd=${_pynbox_locks[$1]:-}
    [[ -n $fd ]] || return 0
    exec {fd}>&-
    unset "_pynbox_locks[$name]"
}

# ---------------------------------------------------------------------------
# Debian packages on the host
# ---------------------------------------------------------------------------
_apt_updated=0
ensure_apt_packages() {
    local p missing=()
    for p in "$@"; do
        if [[ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" != installed ]]; then
            missing+=("$p")
        fi
    done
    ((${#missing[@]})) || return 0
    if [[ $(id -u) -ne 0 ]]; then
        die "missing Debian packages; install them with:
    sudo apt-get install -y --no-install-recommends ${missing[*]}"
    fi
    echo "[pynbox] installing Debian packages: ${missing[*]}"
    if ((!_apt_updated)); then
        run apt-get update
        _apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive run apt-get install -y --no-install-recommends "${missing[@]}"
}

# ---------------------------------------------------------------------------
# Sources from Debian's archive, through a private apt configuration
# ---------------------------------------------------------------------------
# The system's apt sources are never touched: these options point apt at
# lists and caches under $PYNBOX_CACHE/apt/ that know bookworm and trixie
# (binary and source indexes). Only the index files we use are fetched.
PYNBOX_APT_DIR="$PYNBOX_CACHE/apt"
PYNBOX_DEBIAN_MIRROR="${PYNBOX_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
_apt_private_opts() {
    local d=$PYNBOX_APT_DIR
    APT_PRIVATE=(
        -o "Dir::Etc::SourceList=/dev/null"
        -o "Dir::Etc::SourceParts=$d/sources.list.d"
        -o "Dir::State::Lists=$d/lists"
        -o "Dir::Cache=$d/cache"
        -o "Acquire::Languages=none"
        -o "APT::Get::List-Cleanup=true"
    )
    # apt drops privileges to _apt for downloads, which cannot write into a
    # root-owned cache under $HOME; as root, download as root instead.
    if [[ $(id -u) -eq 0 ]]; then
        APT_PRIVATE+=(-o "APT::Sandbox::User=root")
    fi
}
_apt_private_setup() {
    _apt_private_opts
    mkdir -p "$PYNBOX_APT_DIR"/{sources.list.d,lists/partial,cache/archives/partial}
    cat >"$PYNBOX_APT_DIR/sources.list.d/pynbox.sources" <<EOF
# Written by recipes/lib.sh: a private index used only to fetch pinned files.
Types: deb
URIs: $PYNBOX_DEBIAN_MIRROR
Suites: bookworm trixie
Components: main
Targets: Packages
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: $PYNBOX_DEBIAN_MIRROR
Suites: bookworm trixie
Components: main
Targets: Sources
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
}
_apt_private_update() {
    echo "[pynbox] updating the private apt index in $PYNBOX_APT_DIR"
    run apt-get "${APT_PRIVATE[@]}" update
    touch "$PYNBOX_APT_DIR/lists/.pynbox-updated"
}

# _debian_uri SUITE PKG FILENAME: the archive URI of FILENAME as listed by the
# current index (a .deb is looked up as binary package PKG, anything else as
# a file of source package PKG). Prints nothing if the index does not list it.
_debian_uri() {
    local suite=$1 pkg=$2 file=$3
    local sub=(source)
    [[ $file == *.deb ]] && sub=(download)
    # --print-uris lists every file with its URI without downloading the
    # others; `apt-get source --download-only` would also fetch the .dsc,
    # which has been seen to 404 on the mirror while the tarball is fine.
    (cd "$PYNBOX_APT_DIR" && apt-get "${APT_PRIVATE[@]}" "${sub[@]}" --print-uris "$pkg/$suite" 2>/dev/null) |
        awk -v f="$file" '$2 == f { gsub("\047", "", $1); print $1 }' | head -n1 || true
}

# fetch_debian_source SUITE PKG FILENAME SHA256 [UPSTREAM_URL]
# Puts the verified file at $PYNBOX_CACHE/sources/FILENAME and prints that
# path. PKG is a source package (for orig tarballs and patches) or, when
# FILENAME ends in .deb, a binary package. UPSTREAM_URL only documents where
# the same file comes from outside Debian; it is logged, never fetched.
fetch_debian_source() {
    local suite=$1 pkg=$2 file=$3 want=$4 upstream=${5:-}
    local dest="$PYNBOX_CACHE/sources/$file" got uri sub=(source)
    [[ $file == *.deb ]] && sub=(download)
    have_verified "$dest" "$want" && return 0
    take_lock apt
    if have_verified "$dest" "$want"; then
        release_lock apt
        return 0
    fi
    _apt_private_setup
    if [[ ! -f "$PYNBOX_APT_DIR/lists/.pynbox-updated" ]]; then
        _apt_private_update >&2
    fi
    uri=$(_debian_uri "$suite" "$pkg" "$file")
    if [[ -z $uri ]]; then
        # The index may be stale (Debian revisions move on): refresh once.
        _apt_private_update >&2
        uri=$(_debian_uri "$suite" "$pkg" "$file")
    fi
    [[ -n $uri ]] || die "Debian $suite no longer lists $file in package $pkg.
    What it lists now: $(cd "$PYNBOX_APT_DIR" && apt-get "${APT_PRIVATE[@]}" "${sub[@]}" --print-uris "$pkg/$suite" 2>&1 | awk '/^\047/ {print $2}' | tr '\n' ' ')
    Update the pinned file name and sha256 in the recipe${upstream:+ (upstream: $upstream)}."
    echo "[pynbox] fetching $uri${upstream:+ (upstream: $upstream)}" >&2
    download_verified "$uri" "$dest" "$want" "Debian $suite"
    release_lock apt
    echo "$dest"
}

# download_verified URI DEST SHA256 WHERE
# Downloads URI (any scheme apt knows, file:// included) next to DEST and
# moves it to DEST only if its sha256 is SHA256; otherwise removes it and
# dies naming both hashes. WHERE says where it came from, for the message.
download_verified() {
    local uri=$1 dest=$2 want=$3 where=$4 got
    rm -f "$dest.part"
    run /usr/lib/apt/apt-helper ${APT_PRIVATE[@]+"${APT_PRIVATE[@]}"} download-file "$uri" "$dest.part" >&2
    got=$(sha256_of "$dest.part")
    if [[ $got != "$want" ]]; then
        rm -f "$dest.part"
        die "sha256 mismatch for ${dest##*/} from $where ($uri):
    expected $want
    actual   $got"
    fi
    mv "$dest.part" "$dest"
}

# fetch_pypi_sdist NAME VERSION FILENAME SHA256
# A source distribution from PyPI, verified the same way. Prints the path of
# the verified file.
#
# `pip download` cannot fetch an sdist without preparing its metadata, which
# runs the package's build backend (setup.py) on this host before the file
# can be checked: that needs the package's build dependencies (lxml's
# setup.py exits without xml2-config and xslt-config) and runs unverified
# code. So the file is looked up by name in the simple repository index that
# pip is configured to use (pip's index-url, cert and proxy settings: `pip
# config list`, PIP_* variables; PEP 691 JSON or PEP 503 HTML) and
# downloaded as it is, without any build step. Only if that fails (e.g. an
# index that needs pip's keyring authentication) does pip download it, with
# build isolation; that works for sdists whose metadata can be prepared here.
_pypi_fetch_py='
import ast, html.parser, json, re, ssl, subprocess, sys, urllib.parse, urllib.request
name, filename, dest = sys.argv[1:4]
try:
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                         capture_output=True, text=True, check=True).stdout
except (OSError, subprocess.CalledProcessError):
    out = ""
conf = {}
for line in out.splitlines():
    key, sep, value = line.partition("=")
    if sep:
        try:
            conf[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            conf[key] = value
def setting(key, default=None):
    # Environment over the [download] section over [global], as pip does.
    for section in (":env:", "download", "global"):
        if section + "." + key in conf:
            return conf[section + "." + key]
    return default
index = setting("index-url", "https://pypi.org/simple")
context = ssl.create_default_context(cafile=setting("cert"))
handlers = [urllib.request.HTTPSHandler(context=context)]
if setting("proxy"):
    handlers.append(urllib.request.ProxyHandler({"http": setting("proxy"), "https": setting("proxy")}))
opener = urllib.request.build_opener(*handlers)
timeout = float(setting("timeout", setting("default-timeout", "60")))
project = re.sub(r"[-_.]+", "-", name).lower()
page = index.rstrip("/") + "/" + project + "/"
print("[pynbox] looking up %s in %s" % (filename, page), file=sys.stderr)
req = urllib.request.Request(page, headers={
    "Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"})
with opener.open(req, timeout=timeout) as r:
    base, ctype, body = r.geturl(), r.headers.get("Content-Type", ""), r.read()
links = {}
if ctype.startswith("application/vnd.pypi.simple.v1+json"):
    for f in json.loads(body)["files"]:
        links[f["filename"]] = f["url"]
else:
    class Anchors(html.parser.HTMLParser):
        def handle_starttag(self, tag, attrs):
            href = dict(attrs).get("href") if tag == "a" else None
            if href:
                path = urllib.parse.urlsplit(href).path
                links[urllib.parse.unquote(path.rsplit("/", 1)[-1])] = href
    Anchors().feed(body.decode("utf-8", "replace"))
if filename not in links:
    sys.exit("%s does not list %s" % (page, filename))
url = urllib.parse.urljoin(base, links[filename]).split("#", 1)[0]
print("[pynbox] fetching " + url, file=sys.stderr)
with opener.open(url, timeout=timeout) as r, open(dest, "wb") as f:
    while chunk := r.read(1 << 20):
        f.write(chunk)
'
fetch_pypi_sdist() {
    local name=$1 version=$2 file=$3 want=$4
    local dest="$PYNBOX_CACHE/sources/$file" got tmp
    have_verified "$dest" "$want" && return 0
    take_lock pypi
    if have_verified "$dest" "$want"; then
        release_lock pypi
        return 0
    fi
    tmp=$(mktemp -d "$PYNBOX_CACHE/sources/.pip.XXXXXX")
    echo "[pynbox] fetching $file ($name==$version) from PyPI" >&2
    if ! python3 -c "$_pypi_fetch_py" "$name" "$file" "$tmp/$file" >&2; then
        echo "[pynbox] the index lookup failed; trying pip download (runs $name's build backend)" >&2
        rm -f "$tmp/$file"
        # --no-binary for this package only: the backend and its
        # requirements come as wheels (with :all: pip would build them from
        # their sdists, minutes for Cython).
        if ! run python3 -m pip download --quiet --no-deps --no-binary "$name" \
            -d "$tmp" "$name==$version" >&2; then
            rm -rf "$tmp"
            die "could not download $file ($name==$version) from PyPI, neither by name from the index nor with pip download"
        fi
    fi
    [[ -f "$tmp/$file" ]] || { ls "$tmp" >&2; rm -rf "$tmp"; die "pip downloaded no $file for $name==$version"; }
    got=$(sha256_of "$tmp/$file")
    if [[ $got != "$want" ]]; then
        rm -rf "$tmp"
        die "sha256 mismatch for $file from PyPI:
    expected $want
    actual   $got"
    fi
    mv "$tmp/$file" "$dest"
    rm -rf "$tmp"
    release_lock pypi
    echo "$dest"
}

# unpack ARCHIVE DIR: DIR gets the archive's single top-level directory's
# content (tarballs differ in how they name it).
unpack() {
    local archive=$1 dir=$2
    rm -rf "$dir"
    mkdir -p "$dir"
    tar -xf "$archive" -C "$dir" --strip-components=1 --no-same-owner
}

# ---------------------------------------------------------------------------
# Cached stages
# ---------------------------------------------------------------------------
# A stage's directory is complete only when its stamp exists; anything else
# found there is a leftover of an interrupted run and is discarded.
stage_done() { [[ -f "$1/.pynbox-done" ]]; }
stage_begin() {
    rm -rf "$1"
    mkdir -p "$1"
}
stage_finish() { date -u >"$1/.pynbox-done"; }
