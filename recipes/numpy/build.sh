#!/usr/bin/env bash
# pynbox package "numpy": NumPy for the wasm python, as native modules.
#
# As in a wheel: numpy's extension modules are files in site-packages
# (numpy/_core/_multiarray_umath.cpython-313-wasm32-wasi.so, ...), wasm side
# modules that pynbox loads into the one python at import
# (docs/ARCHITECTURE.md, "Native modules"). numpy's own build (meson, with
# numpy's vendored fork of it) cross-compiles them for wasm32-wasip1: no
# threads, no SIMD (numpy's CPU dispatch knows no wasm target), no external
# BLAS/LAPACK (numpy's bundled lapack-lite). Its C++ (sorting, pocketfft,
# unique) uses Debian's libc++, which the interpreter exports
# (recipes/toolchain-cxx.sh).
#
# Called by `pynbox build` (see recipes/lib.sh). Needs PYNBOX_DEP_PYTHON, the
# python recipe's build entry, and the wasm CPython build tree it names (its
# installed headers and build configuration).
# Output:
#   $PYNBOX_OUT/root/python/lib/python3.13/site-packages/numpy/
#       numpy as its wheel would install it, tests included, with
#       unchecked-hash .pyc
#   $PYNBOX_OUT/root/python/lib/numpy-tests/
#       run_numpy_tests.py, known-failures.txt and site/: pytest and
#       hypothesis (pinned pure-Python wheels), kept out of site-packages so
#       that they never shadow what a user installs
#
# Stages cached under $PYNBOX_CACHE/work/, keyed by their inputs:
#   numpy-tools-KEY   a virtual environment of the native python with Cython
#   numpy-build-KEY   numpy, patched with patches/series, built and
#                     installed (destdir/)
# shellcheck source=../lib.sh
source "$PYNBOX_RECIPES/lib.sh"
# shellcheck source=../toolchain.sh
source "$PYNBOX_RECIPES/toolchain.sh"
# shellcheck source=../toolchain-cxx.sh
source "$PYNBOX_RECIPES/toolchain-cxx.sh"

: "${PYNBOX_OUT:?PYNBOX_OUT must name the output directory}"
: "${PYNBOX_VERSION:?PYNBOX_VERSION must be set (from package.json)}"
: "${PYNBOX_DEP_PYTHON:?PYNBOX_DEP_PYTHON must name the python build (build_depends in package.json)}"
HERE="$PYNBOX_RECIPES/numpy"
NUMPY_VERSION=${PYNBOX_VERSION%-*}
[[ $NUMPY_VERSION == 2.5.5 ]] ||
    die "recipes/numpy/build.sh pins the numpy 2.5.5 sources, but package.json asks for $PYNBOX_VERSION"
# meson's backend (ninja) from Debian; Cython comes from PyPI below.
ensure_apt_packages ninja-build

# ---------------------------------------------------------------------------
# Pinned sources
# ---------------------------------------------------------------------------
# numpy 2.5.5, the newest release (it supports CPython 3.12 to 3.15). Its
# sdist carries numpy's vendored meson and its submodules (pocketfft,
# highway, ...), not generated C for the .pyx files, hence Cython: the
# pure-Python wheel, so that the build works on any host.
# Upstream: https://files.pythonhosted.org/packages/source/n/numpy/numpy-2.5.5.tar.gz
NUMPY_FILE=numpy-$NUMPY_VERSION.tar.gz
NUMPY_SHA256=5cddc243c75114ba845f01b1f87aca1572dbf7b6c2d88636ed3e1d2bccd7f1bf
CYTHON_FILE=cython-3.3.1-py3-none-any.whl
CYTHON_SHA256=61abc7feedd20dac6c4ff7ab3a30e17136a067b242ab9253e2b4a6d9a72c2b61
# What numpy's tests import (numpy/conftest.py imports hypothesis), all pure
# Python: name, wheel file, sha256.
TEST_WHEELS=(
    pytest pytest-9.2.0-py3-none-any.whl 07acdcf88ec174f907dc01af70bf52d49b014bbab03faeeade31c96b18c2e588
    pluggy pluggy-1.7.0-py3-none-any.whl 7dd7b0d8832ba3cb632c306926ded123429211b83641b35dc5c41ad2d34f9bec
    iniconfig iniconfig-2.3.1-py3-none-any.whl 9121e2c1fdb355232495be3194c8dfe87ccc2d5dee45947b78e68f499790d7a7
    packaging packaging-26.4-py3-none-any.whl 81383611a09c1bc0b08b76e0fd5829d7c6824c65b27a6aee339da133f4233ea2
    pygments pygments-2.21.0-py3-none-any.whl 2363c69b61c4a97c838da3b130dcd6468f4848992b21a82f2a63ec34377137d9
    hypothesis hypothesis-6.155.7-py3-none-any.whl 9f634bdb1f9e9b8ab6ba09431cf2deedb750c96978125a6fb3c5a0f6c6db4131
    sortedcontainers sortedcontainers-2.4.0-py2.py3-none-any.whl a163dcaede0f1c021485e957a39245190e74249897e2ae4b2aa38595db237ee0
)

step "fetch pinned sources"
NUMPY_TARBALL=$(fetch_pypi_sdist numpy "$NUMPY_VERSION" "$NUMPY_FILE" "$NUMPY_SHA256")
CYTHON_WHEEL=$(fetch_pypi_sdist cython 3.3.1 "$CYTHON_FILE" "$CYTHON_SHA256")
TEST_WHEEL_FILES=()
for ((i = 0; i < ${#TEST_WHEELS[@]}; i += 3)); do
    version=${TEST_WHEELS[i + 1]#*-}
    TEST_WHEEL_FILES+=("$(fetch_pypi_sdist "${TEST_WHEELS[i]}" "${version%%-*}" "${TEST_WHEELS[i + 1]}" "${TEST_WHEELS[i + 2]}")")
done

# ---------------------------------------------------------------------------
# The wasm CPython build this package compiles against
# ---------------------------------------------------------------------------
NATIVE_PYTHON="$PYNBOX_DEP_PYTHON/native/bin/python3"
PY_VERSION_FULL=$("$NATIVE_PYTHON" -c \
    'import json, sys; print(json.load(open(sys.argv[1]))["version"])' "$PYNBOX_RECIPES/python/package.json")
PY_MM=$("$NATIVE_PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
PY_WORK=$(realpath -e "$PYNBOX_CACHE/work/python-$PY_VERSION_FULL" 2>/dev/null) ||
    die "no wasm CPython build tree at $PYNBOX_CACHE/work/python-$PY_VERSION_FULL (cleaned from the cache?): rebuild python, e.g. remove $PYNBOX_DEP_PYTHON and run pynbox build python"
step "check the python build tree against the python package"
[[ -f "$PYNBOX_DEP_PYTHON/wasm-build" && $(cat "$PYNBOX_DEP_PYTHON/wasm-build") == "$(basename "$PY_WORK")" ]] ||
    die "$PY_WORK is not the build tree of the python package in $PYNBOX_DEP_PYTHON; rebuild python (pynbox build python) so that its build tree and package agree"
PY_PREFIX="$PY_WORK/destdir/python"
SYSCONFIGDATA=$(cd "$PY_PREFIX/lib/python$PY_MM" && echo _sysconfigdata__wasi_*.py)
[[ -f "$PY_PREFIX/include/python$PY_MM/Python.h" && -f "$PY_PREFIX/lib/python$PY_MM/$SYSCONFIGDATA" ]] ||
    die "$PY_PREFIX has no installed headers or build configuration (_sysconfigdata__wasi_*.py)"

# ---------------------------------------------------------------------------
# Build tools: the native python of the same source, with Cython
# ---------------------------------------------------------------------------
TOOLS_KEY=$(cache_key "$PY_VERSION_FULL" "$(basename "$PYNBOX_DEP_PYTHON")" "$CYTHON_SHA256")
TOOLS="$PYNBOX_CACHE/work/numpy-tools-$TOOLS_KEY"
take_lock "numpy-tools-$TOOLS_KEY"
if stage_done "$TOOLS"; then
    step "build tools (cached)"
else
    step "prepare the build tools (Cython $CYTHON_FILE)"
    stage_begin "$TOOLS"
    run "$NATIVE_PYTHON" -m venv --without-pip "$TOOLS/venv"
    # The wheel is unpacked, not pip-installed: the native python has no
    # pip, and a pure wheel is a zip of the site-packages tree.
    run "$NATIVE_PYTHON" -m zipfile -e "$CYTHON_WHEEL" "$TOOLS/venv/lib/python$PY_MM/site-packages"
    cat >"$TOOLS/venv/bin/cython" <<EOF
#!/bin/sh
exec "$TOOLS/venv/bin/python" -m cython "\$@"
EOF
    chmod +x "$TOOLS/venv/bin/cython"
    run "$TOOLS/venv/bin/cython" --version
    stage_finish "$TOOLS"
fi
release_lock "numpy-tools-$TOOLS_KEY"

# ---------------------------------------------------------------------------
# numpy, cross-compiled with meson
# ---------------------------------------------------------------------------
# numpy's options: no BLAS/LAPACK (lapack-lite), no threads, none of the CPU
# dispatch (x86/ARM/Power/s390 SIMD, SVML, highway, x86-simd-sort); the
# bytecode is compiled below like the standard library's.
MESON_OPTIONS=(
    -Dbuildtype=release -Db_ndebug=if-release -Dpython.bytecompile=-1
    -Dallow-noblas=true -Dblas=none -Dlapack=none -Ddisable-threading=true
    -Ddisable-optimization=true -Ddisable-svml=true -Ddisable-highway=true
    -Ddisable-intel-sort=true -Dcpu-baseline=none -Dcpu-dispatch=none
)

# write_cross_env DIR: the compilers, python and pkg-config that meson is
# told about in DIR/cross.ini.
write_cross_env() {
    local dir=$1 inc="$PY_PREFIX/include/python$PY_MM" name
    mkdir -p "$dir/bin" "$dir/pyhost" "$dir/pkgconfig"
    # How a side module is linked, from the python package (side-ldflags).
    cp "$PYNBOX_DEP_PYTHON/dynlink/side-ldflags" "$dir/side-ldflags"
    cp "$HERE/files/side-cc.py" "$dir/side-cc.py"
    printf '#!/bin/sh\nexec "%s" "%s" "%s" "%s" "$@"\n' "$NATIVE_PYTHON" "$dir/side-cc.py" "$dir/side-ldflags" "$WASI_CC" >"$dir/bin/cc"
    printf '#!/bin/sh\nexec "%s" "%s" "%s" "%s" "$@"\n' "$NATIVE_PYTHON" "$dir/side-cc.py" "$dir/side-ldflags" "$WASI_CXX" >"$dir/bin/c++"
    # The python meson introspects and numpy's code generators run: the
    # native one, describing the wasm one (files/sitecustomize.py).
    cp "$PY_PREFIX/lib/python$PY_MM/$SYSCONFIGDATA" "$HERE/files/sitecustomize.py" "$dir/pyhost/"
    cat >"$dir/bin/python" <<EOF
#!/bin/sh
export _PYTHON_SYSCONFIGDATA_NAME=${SYSCONFIGDATA%.py} _PYTHON_HOST_PLATFORM=wasi-wasm32
export PYNBOX_WASM_PYTHON_PREFIX="$PY_PREFIX" PYTHONPATH="$dir/pyhost\${PYTHONPATH:+:\$PYTHONPATH}"
exec "$TOOLS/venv/bin/python" "\$@"
EOF
    chmod +x "$dir/bin/"*
    # Extension modules link against no libpython: they import the C API
    # from the interpreter at load. meson's Cython check asks pkg-config.
    for name in python3 "python-$PY_MM" python3-embed "python-$PY_MM-embed"; do
        cat >"$dir/pkgconfig/$name.pc" <<EOF
Name: Python
Description: CPython $PY_MM for wasm32-wasip1 (the python package's headers)
Version: $PY_MM
Libs:
Cflags: -I$inc
EOF
    done
    # wasm32's long double is IEEE binary128, which numpy's configure
    # cannot find out by running a program when cross-compiling.
    cat >"$dir/cross.ini" <<EOF
[binaries]
c = '$dir/bin/cc'
cpp = '$dir/bin/c++'
ar = '$WASI_AR'
strip = '$WASI_STRIP'
python = '$dir/bin/python'
cython = '$TOOLS/venv/bin/cython'
pkg-config = '$(command -v pkg-config)'

[host_machine]
system = 'wasi'
cpu_family = 'wasm32'
cpu = 'wasm32'
endian = 'little'

[properties]
needs_exe_wrapper = true
longdouble_format = 'IEEE_QUAD_LE'
pkg_config_libdir = '$dir/pkgconfig'
EOF
}

# patches/series: what wasm and WASI need of numpy: function types that
# wasm checks, tests that import ctypes, files read and written without dup
# (each patch says why).
mapfile -t PATCHES < <(grep -v '^\s*#' "$HERE/patches/series" | sed '/^\s*$/d')
PATCH_KEY=()
for p in "${PATCHES[@]}"; do PATCH_KEY+=("$p" "@$HERE/patches/$p"); done

build_numpy() {
    local dir=$1 p
    unpack "$NUMPY_TARBALL" "$dir/src"
    for p in "${PATCHES[@]}"; do
        echo "applying $p"
        patch -d "$dir/src" -p1 -N --fuzz=0 --no-backup-if-mismatch <"$HERE/patches/$p" ||
            die "patches/$p does not apply to the numpy sources"
    done
    "$NATIVE_PYTHON" "$HERE/files/check_signatures.py" "$dir/src/numpy" ||
        die "numpy's C has functions that CPython calls with another number of arguments than they take (listed above); they would trap in wasm: fix them in patches/"
    write_cross_env "$dir/cross"
    # meson looks for cython on PATH (a build-machine tool).
    export PATH="$TOOLS/venv/bin:$PATH"
    # (From the source tree: numpy's meson.build runs its own scripts by
    # relative paths.)
    (cd "$dir/src" && run "$TOOLS/venv/bin/python" vendored-meson/meson/meson.py setup \
        --cross-file "$dir/cross/cross.ini" "${MESON_OPTIONS[@]}" --prefix=/python "$dir/build")
    step "compile numpy for wasm32-wasip1"
    run ninja -C "$dir/build" -j"$PYNBOX_JOBS"
    (cd "$dir/src" && run "$TOOLS/venv/bin/python" vendored-meson/meson/meson.py install \
        -C "$dir/build" --destdir "$dir/destdir" --no-rebuild)
    # The core metadata, for the .dist-info a wheel would install.
    cp "$dir/src/PKG-INFO" "$dir/PKG-INFO"
    rm -rf "$dir/src" "$dir/build"
}
BUILD_KEY=$(cache_key "$NUMPY_SHA256" "${PATCH_KEY[@]}" "$(basename "$PY_WORK")" "$(basename "$WASI_TOOLCHAIN")" "$WASI_CXX" \
    @"$PYNBOX_DEP_PYTHON/dynlink/side-ldflags" "$TOOLS_KEY" @"$HERE/files/side-cc.py" @"$HERE/files/sitecustomize.py" @"$HERE/files/check_signatures.py" \
    "${MESON_OPTIONS[*]}" "$(declare -f write_cross_env build_numpy)")
BUILD="$PYNBOX_CACHE/work/numpy-build-$BUILD_KEY"
take_lock "numpy-build-$BUILD_KEY"
if stage_done "$BUILD"; then
    step "numpy for wasm32-wasip1 (cached)"
else
    step "configure numpy $NUMPY_VERSION for wasm32-wasip1 (meson)"
    stage_begin "$BUILD"
    build_numpy "$BUILD"
    stage_finish "$BUILD"
fi
release_lock "numpy-build-$BUILD_KEY"

# ---------------------------------------------------------------------------
# Stage the sandbox root
# ---------------------------------------------------------------------------
step "stage numpy"
ROOT="$PYNBOX_OUT/root/python"
SITE="$ROOT/lib/python$PY_MM/site-packages"
BUILT_SITE=$(find "$BUILD/destdir" -type d -name site-packages -path "*/python$PY_MM/*" | head -n1)
[[ -n $BUILT_SITE && -f "$BUILT_SITE/numpy/__init__.py" ]] || die "meson installed no numpy package under $BUILD/destdir"
mkdir -p "$SITE"
cp -r "$BUILT_SITE/numpy" "$SITE/numpy"
# The console script numpy-config would need a launcher; nothing runs it here.
EXT=$("$BUILD/cross/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
nso=$(find "$SITE/numpy" -name "*$EXT" | wc -l)
((nso > 10)) || die "only $nso extension modules ($EXT) were installed: the numpy build is incomplete"
# No DWARF (the name section stays, for trap backtraces).
find "$SITE/numpy" -name '*.so' -exec "$WASI_STRIP" --strip-debug {} \;

step "write numpy's .dist-info"
# What a wheel installs beside the package, so that importlib.metadata
# knows numpy (version, entry points such as array_api) and DEST/bin/pip
# counts it as installed: pandas' requirement on numpy is met by this
# package instead of a download that cannot build here. Entry points as in
# numpy's pyproject.toml.
DIST_INFO="$SITE/numpy-$NUMPY_VERSION.dist-info"
mkdir -p "$DIST_INFO"
cp "$BUILD/PKG-INFO" "$DIST_INFO/METADATA"
grep -qx "Version: $NUMPY_VERSION" "$DIST_INFO/METADATA" || die "numpy's PKG-INFO is not for version $NUMPY_VERSION"
echo pynbox >"$DIST_INFO/INSTALLER"
cat >"$DIST_INFO/entry_points.txt" <<'EOF2'
[array_api]
numpy = numpy

[console_scripts]
f2py = numpy.f2py.f2py2e:main
numpy-config = numpy._configtool:main

[pkg_config]
numpy = numpy._core.lib.pkgconfig

[pyinstaller40]
hook-dirs = numpy:_pyinstaller_hooks_dir
EOF2
# RECORD: every file with its sha256 (urlsafe base64, unpadded) and size.
"$NATIVE_PYTHON" - "$SITE" "numpy-$NUMPY_VERSION.dist-info" <<'EOF2' || die "could not write numpy's RECORD"
import base64, hashlib, os, sys
site, info = sys.argv[1], sys.argv[2]
rows = []
for top in ("numpy", info):
    for base, dirs, files in os.walk(os.path.join(site, top)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(base, name)
            data = open(path, "rb").read()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            rows.append(f"{os.path.relpath(path, site)},sha256={digest},{len(data)}")
rows.append(f"{info}/RECORD,,")
open(os.path.join(site, info, "RECORD"), "w").write("\n".join(rows) + "\n")
EOF2

step "stage the test runner and its pure-Python requirements"
TESTS="$ROOT/lib/numpy-tests"
mkdir -p "$TESTS/site"
for wheel in "${TEST_WHEEL_FILES[@]}"; do
    run "$NATIVE_PYTHON" -m zipfile -e "$wheel" "$TESTS/site"
done
install -m 0644 "$HERE/files/run_numpy_tests.py" "$TESTS/run_numpy_tests.py"
install -m 0644 "$HERE/known-failures.txt" "$TESTS/known-failures.txt"

step "precompile numpy and the test runner's modules"
# As for the standard library: unchecked-hash .pyc by the native python of
# the same source, in-sandbox paths for tracebacks, reproducible output.
PYTHONHASHSEED=0 run "$NATIVE_PYTHON" -I -m compileall -q -j"$PYNBOX_JOBS" \
    --invalidation-mode unchecked-hash -d "/python/lib/python$PY_MM/site-packages/numpy" "$SITE/numpy" ||
    die "compileall failed on numpy's Python modules"
PYTHONHASHSEED=0 run "$NATIVE_PYTHON" -I -m compileall -q -j"$PYNBOX_JOBS" \
    --invalidation-mode unchecked-hash -d "/python/lib/numpy-tests/site" "$TESTS/site" ||
    die "compileall failed on the test runner's modules"

_step_close
echo "[pynbox] native modules: $nso, $(find "$SITE/numpy" -name "*$EXT" -print0 | du -cb --files0-from=- | tail -n1 | cut -f1) bytes"
