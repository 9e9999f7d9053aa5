#!/usr/bin/env bash
# pynbox package "lxml": lxml with libxml2 and libxslt, for the wasm python.
#
# As in a wheel: lxml's C extension modules are files in site-packages
# (lxml/etree.cpython-313-wasm32-wasi.so, ...), and the libraries they need
# are shared libraries beside them (lxml.libs/libxml2.so, libxslt.so,
# libexslt.so). All are wasm side modules, which pynbox loads into the one
# python at import (docs/ARCHITECTURE.md, "Native modules").
#
# Called by `pynbox build` (see recipes/lib.sh). Needs PYNBOX_DEP_PYTHON, the
# python recipe's build entry (package.json's build_depends), and the wasm
# CPython build tree that the python recipe leaves in
# $PYNBOX_CACHE/work/python-<its version> (see recipes/python/build.sh).
# Output:
#   $PYNBOX_OUT/root/python/lib/python3.13/site-packages/lxml/
#       the extension modules, the Python modules, data files and tests,
#       unchecked-hash .pyc, run_lxml_tests.py and known-failures.txt
#   $PYNBOX_OUT/root/python/lib/python3.13/site-packages/lxml.libs/
#       libxml2.so, libxslt.so, libexslt.so
#
# Stages cached under $PYNBOX_CACHE/work/, keyed by their inputs:
#   wasmlib-libxml2-KEY   libxml2 for wasm32-wasip1 (prefix/), static and
#                         position-independent, with patches/libxml2/series
#   wasmlib-libxslt-KEY   libxslt + libexslt (prefix/), likewise, with the
#                         patches in patches/libxslt/series
#   lxml-modules-KEY      lxml's compiled modules, as objects
# shellcheck source=../lib.sh
source "$PYNBOX_RECIPES/lib.sh"
# shellcheck source=../toolchain.sh
source "$PYNBOX_RECIPES/toolchain.sh"

: "${PYNBOX_OUT:?PYNBOX_OUT must name the output directory}"
: "${PYNBOX_VERSION:?PYNBOX_VERSION must be set (from package.json)}"
: "${PYNBOX_DEP_PYTHON:?PYNBOX_DEP_PYTHON must name the python build (build_depends in package.json)}"
HERE="$PYNBOX_RECIPES/lxml"
LXML_VERSION=${PYNBOX_VERSION%-*}
[[ $LXML_VERSION == 6.1.3 ]] ||
    die "recipes/lxml/build.sh pins the lxml 6.1.3 sources, but package.json asks for $PYNBOX_VERSION"

# ---------------------------------------------------------------------------
# Pinned sources
# ---------------------------------------------------------------------------
# libxml2 and libxslt come from Debian's source packages (the registry
# reachable here): bookworm's versions, the newest Debian has (trixie ships
# the same 2.9.14 and 1.1.35); lxml 6.1 accepts libxml2 >= 2.7 and libxslt
# >= 1.1.23. The orig tarballs are upstream's releases (libxml2's "+dfsg"
# repack only drops the test suite's test/ and result/ directories).
# Debian's security fixes are applied on top: patches/libxml2/ and
# patches/libxslt/ hold bookworm's (2.9.14+dfsg-1.3~deb12u6 and
# 1.1.35-1+deb12u4), copied verbatim and applied in the order of their
# series files, as recipes/python/patches are; each series says which
# Debian patches were left out and why. Copies here mean a new Debian
# revision cannot break the build; taking in a newer one means copying its
# patches and updating the series.
LIBXML2_FILE=libxml2_2.9.14+dfsg.orig.tar.xz
LIBXML2_SHA256=4fe913dec8b1ab89d13b489b419a8203176ea39e931eaa0d25b17eafb9c279e9
LIBXML2_UPSTREAM=https://download.gnome.org/sources/libxml2/2.9/libxml2-2.9.14.tar.xz
LIBXSLT_FILE=libxslt_1.1.35.orig.tar.xz
LIBXSLT_SHA256=8247f33e9a872c6ac859aa45018bc4c4d00b97e2feac9eebc10c93ce1f34dd79
LIBXSLT_UPSTREAM=https://download.gnome.org/sources/libxslt/1.1/libxslt-1.1.35.tar.xz
# Only for build-aux/config.sub and config.guess: the ones in the 2022
# libxml2/libxslt tarballs (2018) do not know the wasm32-wasip1 triplet.
XZ_FILE=xz-utils_5.8.1.orig.tar.xz
XZ_SHA256=0b54f79df85912504de0b14aec7971e3f964491af1812d83447005807513cd9e
XZ_UPSTREAM=https://github.com/tukaani-project/xz/releases/download/v5.8.1/xz-5.8.1.tar.xz
# lxml's sdist carries the C that Cython generated from the .pyx/.py sources
# (Cython 3.2.9), so no Cython is needed here.
# Upstream: https://files.pythonhosted.org/packages/source/l/lxml/lxml-6.1.3.tar.gz
LXML_FILE=lxml-$LXML_VERSION.tar.gz
LXML_SHA256=45222d94ddd511536f3b2f7d9deae3b2339b4ce0f075f1ca25703b07cad9dd21

step "fetch pinned sources"
LIBXML2_TARBALL=$(fetch_debian_source bookworm libxml2 "$LIBXML2_FILE" "$LIBXML2_SHA256" "$LIBXML2_UPSTREAM")
LIBXSLT_TARBALL=$(fetch_debian_source bookworm libxslt "$LIBXSLT_FILE" "$LIBXSLT_SHA256" "$LIBXSLT_UPSTREAM")
XZ_TARBALL=$(fetch_debian_source trixie xz-utils "$XZ_FILE" "$XZ_SHA256" "$XZ_UPSTREAM")
LXML_TARBALL=$(fetch_pypi_sdist lxml "$LXML_VERSION" "$LXML_FILE" "$LXML_SHA256")

TOOLCHAIN_ID=$(basename "$WASI_TOOLCHAIN")
# How a side module is compiled and linked, from the python package (see
# recipes/python/build.sh, dynlink/, and docs/PACKAGES.md).
SIDE_CFLAGS=$(cat "$PYNBOX_DEP_PYTHON/dynlink/side-cflags")
read -ra SIDE_LDFLAGS <"$PYNBOX_DEP_PYTHON/dynlink/side-ldflags"
# Like the python recipe's C libraries (optimised, no debug info), but
# position-independent with visible symbols: they become side modules.
WASM_LIB_CFLAGS="-O2 $SIDE_CFLAGS"
# The triplet autoconf needs for cross compiling (same as the python recipe).
BUILD_TRIPLET=$(gcc -dumpmachine | sed 's/-linux-gnu$/-pc-linux-gnu/')

# ---------------------------------------------------------------------------
# The wasm CPython build this package links against
# ---------------------------------------------------------------------------
PY_VERSION_FULL=$("$PYNBOX_DEP_PYTHON/native/bin/python3" -c \
    'import json, sys; print(json.load(open(sys.argv[1]))["version"])' "$PYNBOX_RECIPES/python/package.json")
PY_MM=$("$PYNBOX_DEP_PYTHON/native/bin/python3" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
PY_WORK=$(realpath -e "$PYNBOX_CACHE/work/python-$PY_VERSION_FULL" 2>/dev/null) ||
    die "no wasm CPython build tree at $PYNBOX_CACHE/work/python-$PY_VERSION_FULL (cleaned from the cache?): rebuild python, e.g. remove $PYNBOX_DEP_PYTHON and run pynbox build python"
PY_BUILD="$PY_WORK/build"
[[ -f "$PY_BUILD/Makefile" && -f "$PY_WORK/relink.mk" ]] ||
    die "$PY_WORK is not a python recipe build tree (no build/Makefile or relink.mk)"
# The symlink follows the python recipe's latest run, which need not be the
# build that PYNBOX_DEP_PYTHON packaged (a hand run with other flags). Linking
# lxml against a different libpython than the installed stdlib was made for
# would break subtly, so insist that the package names this very tree.
step "check the python build tree against the python package"
[[ -f "$PYNBOX_DEP_PYTHON/wasm-build" && $(cat "$PYNBOX_DEP_PYTHON/wasm-build") == "$(basename "$PY_WORK")" ]] ||
    die "$PY_WORK is not the build tree of the python package in $PYNBOX_DEP_PYTHON; rebuild python (pynbox build python) so that its build tree and package agree"
PY_BUILD_ID=$(basename "$PY_WORK")
pyvar() { make -s --no-print-directory -C "$PY_BUILD" -f Makefile -f "$PY_WORK/relink.mk" "pynbox-print-$1"; }

# ---------------------------------------------------------------------------
# libxml2 and libxslt as static wasm32-wasip1 libraries
# ---------------------------------------------------------------------------
# The tarballs' config.sub/config.guess predate wasip1.
refresh_config_scripts() {
    local f
    for f in config.sub config.guess; do
        tar -xJOf "$XZ_TARBALL" "xz-5.8.1/build-aux/$f" >"$f"
        chmod +x "$f"
    done
}
# If a timestamp makes make think configure.ac or Makefile.am changed, it
# would rerun autotools (absent, and pointless: the generated files ship).
NO_AUTOTOOLS=(ACLOCAL=true AUTOMAKE=true AUTOCONF=true AUTOHEADER=true)

# Features that cannot work in WASI (threads, sockets for HTTP/FTP, dlopen
# for modules) are left out; zlib/lzma would only add transparent
# decompression of input files, not worth the link. iconv comes from
# wasi-libc (musl's), so non-UTF-8 encodings keep working.
build_wasmlib_libxml2() {
    refresh_config_scripts
    run ./configure --host=wasm32-unknown-wasip1 --build="$BUILD_TRIPLET" --prefix="$1" \
        --disable-shared --enable-static \
        --without-threads --without-http --without-ftp --without-modules \
        --without-zlib --without-lzma --without-python --without-icu \
        CC="$WASI_CC" AR="$WASI_AR" RANLIB="$WASI_RANLIB" CFLAGS="$WASM_LIB_CFLAGS" \
        PKG_CONFIG_LIBDIR= PKG_CONFIG_PATH=
    # Only the library, its headers and xml2-config (which libxslt's
    # configure asks): xmllint and the test programs are not needed.
    run make -j"$PYNBOX_JOBS" "${NO_AUTOTOOLS[@]}" libxml2.la
    run make "${NO_AUTOTOOLS[@]}" install-libLTLIBRARIES install-binSCRIPTS install-pkgconfigDATA
    run make -C include "${NO_AUTOTOOLS[@]}" install
}

# The profiler stays (lxml's etree calls xsltGetProfileInformation); crypto
# would need libgcrypt; plugins need dlopen.
build_wasmlib_libxslt() {
    refresh_config_scripts
    run ./configure --host=wasm32-unknown-wasip1 --build="$BUILD_TRIPLET" --prefix="$1" \
        --disable-shared --enable-static \
        --with-libxml-prefix="$LIBXML2_PREFIX" \
        --without-python --without-crypto --without-plugins \
        CC="$WASI_CC" AR="$WASI_AR" RANLIB="$WASI_RANLIB" CFLAGS="$WASM_LIB_CFLAGS" \
        PKG_CONFIG_LIBDIR= PKG_CONFIG_PATH=
    # Only the two libraries and their headers (xsltproc and the tests are
    # programs this package has no use for).
    run make -C libxslt -j"$PYNBOX_JOBS" "${NO_AUTOTOOLS[@]}" libxslt.la
    run make -C libexslt -j"$PYNBOX_JOBS" "${NO_AUTOTOOLS[@]}" libexslt.la
    run make -C libxslt "${NO_AUTOTOOLS[@]}" install-libLTLIBRARIES install-xsltincHEADERS install-nodist_xsltincHEADERS
    run make -C libexslt "${NO_AUTOTOOLS[@]}" install-libLTLIBRARIES install-exsltincHEADERS install-nodist_exsltincHEADERS
}

# patch_series NAME: sets PATCHES to the entries of patches/NAME/series (in
# order; comment and blank lines skipped) and PATCH_KEY to cache_key
# arguments for them (each name and its content).
patch_series() {
    local p
    mapfile -t PATCHES < <(grep -v '^\s*#' "$HERE/patches/$1/series" | sed '/^\s*$/d')
    PATCH_KEY=()
    for p in "${PATCHES[@]}"; do PATCH_KEY+=("$p" "@$HERE/patches/$1/$p"); done
}
# apply_patches NAME DIR: applies PATCHES from patches/NAME/ to the tree in
# DIR the way the python recipe does: -p1, no fuzz, refusing reversed ones.
# A patch that touches a Makefile.am leaves it newer than Makefile.in; with
# NO_AUTOTOOLS, make's regeneration rule then runs `true` and goes on.
apply_patches() {
    local lib=$1 dir=$2 p
    for p in "${PATCHES[@]}"; do
        echo "applying $p"
        patch -d "$dir" -p1 -N --fuzz=0 --no-backup-if-mismatch <"$HERE/patches/$lib/$p" ||
            die "patches/$lib/$p does not apply to the $lib sources"
    done
}

# build_wasmlib NAME TARBALL EXTRA_KEY...: runs build_wasmlib_NAME in the
# unpacked tarball, patched with patches/NAME/series (install prefix as $1),
# unless a stage with the same key exists; sets WASMLIB_PREFIX and
# WASMLIB_KEY.
build_wasmlib() {
    local lib=$1 tarball=$2 key dir
    shift 2
    patch_series "$lib"
    key=$(cache_key @"$tarball" "${PATCH_KEY[@]}" "$TOOLCHAIN_ID" "$WASM_LIB_CFLAGS" @"$XZ_TARBALL" \
        "$(declare -f apply_patches refresh_config_scripts "build_wasmlib_$lib")" "${NO_AUTOTOOLS[*]}" "$@")
    dir="$PYNBOX_CACHE/work/wasmlib-$lib-$key"
    take_lock "wasmlib-$lib-$key"
    if stage_done "$dir"; then
        step "$lib for wasm32-wasip1 (cached)"
    else
        step "patch and build $lib for wasm32-wasip1 (${#PATCHES[@]} patches)"
        stage_begin "$dir"
        unpack "$tarball" "$dir/src"
        apply_patches "$lib" "$dir/src"
        (cd "$dir/src" && "build_wasmlib_$lib" "$dir/prefix")
        [[ -d "$dir/prefix/include" && -d "$dir/prefix/lib" ]] ||
            die "build_wasmlib_$lib did not install include/ and lib/ into $dir/prefix"
        rm -rf "$dir/src"
        stage_finish "$dir"
    fi
    release_lock "wasmlib-$lib-$key"
    WASMLIB_PREFIX=$dir/prefix
    WASMLIB_KEY=$key
}

build_wasmlib libxml2 "$LIBXML2_TARBALL"
LIBXML2_PREFIX=$WASMLIB_PREFIX
LIBXML2_KEY=$WASMLIB_KEY
build_wasmlib libxslt "$LIBXSLT_TARBALL" "libxml2=$LIBXML2_KEY"
LIBXSLT_PREFIX=$WASMLIB_PREFIX
LIBXSLT_KEY=$WASMLIB_KEY

# ---------------------------------------------------------------------------
# lxml's compiled modules
# ---------------------------------------------------------------------------
# Every module that lxml's setup.py compiles (EXT_MODULES + COMPILED_MODULES
# in setupinfo.py): name, then the C file under src/. The last four also exist
# as .py files that would work uncompiled, but compiled they are faster and
# they are what lxml's tests expect (e.g. lxml.html.diff's compiled difflib).
LXML_MODULES=(
    lxml.etree lxml/etree.c
    lxml.objectify lxml/objectify.c
    lxml._elementpath lxml/_elementpath.c
    lxml.builder lxml/builder.c
    lxml.sax lxml/sax.c
    lxml.html.diff lxml/html/diff.c
    lxml.html._difflib lxml/html/_difflib.c
)
# Compiled the way CPython compiles its own extension modules
# (PY_STDMODULE_CFLAGS: the interpreter's optimisation and warning flags and
# include dirs, without Py_BUILD_CORE, which third-party code must not see).
# No C line numbers in Python tracebacks and the static-library defines, as
# in lxml's own static builds (setupinfo.py's define_macros).
LXML_DEFINES=(-DCYTHON_CLINE_IN_TRACEBACK=0 -DLIBXML_STATIC -DLIBXSLT_STATIC -DLIBEXSLT_STATIC)

build_lxml_modules() {
    local dir=$1 src=$1/src cflags i name cfile obj
    unpack "$LXML_TARBALL" "$src"
    [[ -f "$src/src/lxml/etree.c" ]] || die "the lxml sdist has no generated src/lxml/etree.c"
    cflags="$(pyvar PY_STDMODULE_CFLAGS) ${LXML_DEFINES[*]} -I$src/src -I$src/src/lxml/includes"
    cflags+=" -I$LIBXML2_PREFIX/include/libxml2 -I$LIBXSLT_PREFIX/include"
    mkdir -p "$dir/obj"
    # The relative include dirs in PY_STDMODULE_CFLAGS are relative to the
    # CPython build tree, hence the cd.
    for ((i = 0; i < ${#LXML_MODULES[@]}; i += 2)); do
        name=${LXML_MODULES[i]} cfile=$src/src/${LXML_MODULES[i + 1]}
        obj=$dir/obj/$name.o
        step "compile $name for wasm32-wasip1"
        # shellcheck disable=SC2086  # cflags is a make variable's word list
        (cd "$PY_BUILD" && run "$WASI_CC" $cflags $SIDE_CFLAGS -c "$cfile" -o "$obj")
    done
    # Only the objects, the sdist's package directory and the files of its
    # doc/ and samples/ that the tests read (see the staging) are used later.
    mv "$src/src/lxml" "$dir/lxml"
    mv "$src/doc" "$src/samples" "$dir/"
    rm -rf "$src"
}
MODULES_KEY=$(cache_key "$LXML_SHA256" "$PY_BUILD_ID" "$TOOLCHAIN_ID" "$LIBXML2_KEY" "$LIBXSLT_KEY" \
    "${LXML_MODULES[*]}" "${LXML_DEFINES[*]}" "$(declare -f build_lxml_modules)")
MODULES="$PYNBOX_CACHE/work/lxml-modules-$MODULES_KEY"
take_lock "lxml-modules-$MODULES_KEY"
if stage_done "$MODULES"; then
    step "lxml's compiled modules (cached)"
else
    stage_begin "$MODULES"
    build_lxml_modules "$MODULES"
    stage_finish "$MODULES"
fi
release_lock "lxml-modules-$MODULES_KEY"

# ---------------------------------------------------------------------------
# Stage the sandbox root
# ---------------------------------------------------------------------------
step "link the shared libraries and extension modules (wasm side modules)"
ROOT="$PYNBOX_OUT/root/python"
SITE="$ROOT/lib/python$PY_MM/site-packages"
LIBS="$SITE/lxml.libs"
EXT=$(pyvar EXT_SUFFIX)
mkdir -p "$LIBS"
# Each library whole, needing the ones it calls (recorded by file name in
# its dylink.0 section and found among the installed .so files at load).
run "$WASI_CC" "${SIDE_LDFLAGS[@]}" -o "$LIBS/libxml2.so" \
    -Wl,--whole-archive "$LIBXML2_PREFIX/lib/libxml2.a" -Wl,--no-whole-archive
run "$WASI_CC" "${SIDE_LDFLAGS[@]}" -o "$LIBS/libxslt.so" \
    -Wl,--whole-archive "$LIBXSLT_PREFIX/lib/libxslt.a" -Wl,--no-whole-archive "$LIBS/libxml2.so"
run "$WASI_CC" "${SIDE_LDFLAGS[@]}" -o "$LIBS/libexslt.so" \
    -Wl,--whole-archive "$LIBXSLT_PREFIX/lib/libexslt.a" -Wl,--no-whole-archive \
    "$LIBS/libxslt.so" "$LIBS/libxml2.so"
for ((i = 0; i < ${#LXML_MODULES[@]}; i += 2)); do
    name=${LXML_MODULES[i]}
    out="$SITE/$(echo "$name" | tr . /)$EXT"
    mkdir -p "$(dirname "$out")"
    run "$WASI_CC" "${SIDE_LDFLAGS[@]}" -o "$out" "$MODULES/obj/$name.o" \
        "$LIBS/libexslt.so" "$LIBS/libxslt.so" "$LIBS/libxml2.so"
done
# As for python.wasm: no DWARF (three quarters of etree's 8 MB), but the
# name section for trap backtraces. llvm-strip keeps dylink.0 first.
find "$SITE" -name '*.so' -exec "$WASI_STRIP" --strip-debug {} \;

step "stage lxml's Python modules and tests"
# The package directory minus what only a C build uses (Cython sources, C,
# headers, the .pxd includes/) and minus the .py sources of the modules
# compiled above, which their extension modules shadow for good.
twins=()
for ((i = 1; i < ${#LXML_MODULES[@]}; i += 2)); do
    py=${LXML_MODULES[i]%.c}.py
    if [[ -f "$MODULES/$py" ]]; then
        twins+=("--exclude=./${py#lxml/}")
    fi
done
mkdir -p "$SITE/lxml"
tar -C "$MODULES/lxml" -cf - --exclude='*.c' --exclude='*.h' --exclude='*.pyx' \
    --exclude='*.pxd' --exclude='*.pxi' --exclude=./includes --exclude=__pycache__ "${twins[@]}" . |
    tar -C "$SITE/lxml" -xf -
# The tests also read files at the root of lxml's source tree: the doctests
# in doc/ that several modules add (make_doctest() in
# tests/common_imports.py), doc/test.xml and samples/*.xml, both opened
# relative to the current directory. They go to tests/source-tree/, which
# the runner copies into its working directory.
mapfile -t doctest_files < <(grep -oh "make_doctest('[^']*')" "$SITE"/lxml/tests/*.py "$SITE"/lxml/html/tests/*.py |
    sed "s/make_doctest('\\(.*\\)')/\\1/" | sort -u)
mkdir -p "$SITE/lxml/tests/source-tree/doc"
for f in "${doctest_files[@]}" test.xml; do
    install -m 0644 "$MODULES/doc/$f" "$SITE/lxml/tests/source-tree/doc/$f"
done
cp -r "$MODULES/samples" "$SITE/lxml/tests/source-tree/samples"
install -m 0644 "$HERE/files/run_lxml_tests.py" "$SITE/lxml/run_lxml_tests.py"
install -m 0644 "$HERE/known-failures.txt" "$SITE/lxml/known-failures.txt"

step "precompile lxml's Python modules"
# Same as the standard library: unchecked-hash .pyc by the native python of
# the same source, in-sandbox paths for tracebacks, reproducible output.
PYTHONHASHSEED=0 run "$PYNBOX_DEP_PYTHON/native/bin/python3" -I -m compileall -q -j"$PYNBOX_JOBS" \
    --invalidation-mode unchecked-hash -d "/python/lib/python$PY_MM/site-packages/lxml" "$SITE/lxml" ||
    die "compileall failed on lxml's Python modules"

_step_close
echo "[pynbox] native modules: $(du -cb "$SITE"/lxml.libs/*.so $(find "$SITE/lxml" -name "*$EXT") | tail -n1 | cut -f1) bytes"
