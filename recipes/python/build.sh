#!/usr/bin/env bash
# pynbox package "python": CPython compiled to wasm32-wasip1, plus a native
# CPython of the same source as the benchmark baseline.
#
# Called by `pynbox build` (see recipes/lib.sh for the environment). Output:
#   $PYNBOX_OUT/root/python/bin/python.wasm       the interpreter (stripped)
#   $PYNBOX_OUT/root/python/lib/python3.13/       stdlib + unchecked-hash .pyc
#   $PYNBOX_OUT/native/bin/python3                native CPython, same source,
#                                                 built with plain ./configure
#                                                 (-O3, no PGO/LTO, static
#                                                 libpython)
#
# Stages, each cached under $PYNBOX_CACHE/work/ and keyed by its inputs (so
# changing the wasm flags reuses the native build and the C libraries):
#   python-src-KEY       upstream tarball + the patches in patches/series
#   python-native-KEY    native build python, installed into prefix/
#   wasmlib-NAME-KEY     static wasm libraries (zlib, bzip2, xz, sqlite)
#   python-wasm-KEY      the wasm build tree (build/), its install (destdir/)
#
# Relinking the interpreter later (e.g. the lxml recipe, which links extension
# modules statically and registers them with PyImport_AppendInittab from its
# own main): $PYNBOX_CACHE/work/python-$PYNBOX_VERSION is a symlink to the
# current python-wasm-KEY directory, which keeps
#   build/libpython3.13.a, build/Programs/python.o, build/Modules/config.c
#   (the builtin module table), every object file, build/Makefile, and
#   relink.mk: `make -C build -f Makefile -f ../relink.mk pynbox-relink
#   PYNBOX_WASM=... PYNBOX_MAIN_OBJ=... PYNBOX_EXTRA_LINK=...` links with the
#   exact LINKCC/LDFLAGS/LIBS/MODLIBS of this build (the C libraries' -L/-l
#   flags are in MODLIBS); `pynbox-print-PY_CORE_CFLAGS` gives the compile
#   flags. Strip the result with "$WASI_STRIP". This recipe links its own
#   python.wasm that way, so the path stays tested.
# shellcheck source=../lib.sh
source "$PYNBOX_RECIPES/lib.sh"
# shellcheck source=../toolchain.sh
source "$PYNBOX_RECIPES/toolchain.sh"
# shellcheck source=../toolchain-cxx.sh
source "$PYNBOX_RECIPES/toolchain-cxx.sh"

: "${PYNBOX_OUT:?PYNBOX_OUT must name the output directory}"
: "${PYNBOX_VERSION:?PYNBOX_VERSION must be set (from package.json)}"
HERE="$PYNBOX_RECIPES/python"
# Build date stamped into sys.version: the 3.13.5 release day, not the build's.
export SOURCE_DATE_EPOCH=1749600000
PY_VERSION=${PYNBOX_VERSION%-*}
PY_MM=${PY_VERSION%.*}
[[ $PY_VERSION == 3.13.5 ]] ||
    die "recipes/python/build.sh pins the CPython 3.13.5 sources, but package.json asks for $PYNBOX_VERSION"

# Host packages for the native CPython: its optional modules use the host's
# libraries, like any distribution build (only the wasm build is pinned).
ensure_apt_packages zlib1g-dev libbz2-dev liblzma-dev libsqlite3-dev libffi-dev \
    libssl-dev libexpat1-dev

# ---------------------------------------------------------------------------
# Pinned sources. Fetched from Debian's archive (the registry reachable here);
# the upstream URL names the same code for the real world. The Debian orig
# tarballs keep their name across Debian revisions of one upstream version.
#   name     suite   Debian source  file                                    sha256
#   upstream
# ---------------------------------------------------------------------------
declare -A SRC_SUITE SRC_PKG SRC_FILE SRC_SHA256 SRC_UPSTREAM
add_source() {
    SRC_SUITE[$1]=$2 SRC_PKG[$1]=$3 SRC_FILE[$1]=$4 SRC_SHA256[$1]=$5 SRC_UPSTREAM[$1]=$6
}
# Identical to python.org's Python-3.13.5.tar.xz (Debian ships its .asc).
add_source python trixie python3.13 python3.13_3.13.5.orig.tar.xz \
    93e583f243454e6e9e4588ca2c2662206ad961659863277afcdb96801647d640 \
    https://www.python.org/ftp/python/3.13.5/Python-3.13.5.tar.xz
# Debian's repack of zlib 1.3.1 (contrib/ minus prebuilt Windows bits).
add_source zlib trixie zlib zlib_1.3.dfsg+really1.3.1.orig.tar.gz \
    60dd315c07f616887caa029408308a018ace66e3d142726a97db164b3b8f69fb \
    https://zlib.net/zlib-1.3.1.tar.gz
add_source bzip2 trixie bzip2 bzip2_1.0.8.orig.tar.gz \
    ab5a03176ee106d3f0fa90e381da478ddae405918153cca248e682cd0c4a2269 \
    https://sourceware.org/pub/bzip2/bzip2-1.0.8.tar.gz
add_source xz trixie xz-utils xz-utils_5.8.1.orig.tar.xz \
    0b54f79df85912504de0b14aec7971e3f964491af1812d83447005807513cd9e \
    https://github.com/tukaani-project/xz/releases/download/v5.8.1/xz-5.8.1.tar.xz
# The full SQLite source tree (not the amalgamation): sqlite3.c is generated.
add_source sqlite trixie sqlite3 sqlite3_3.46.1.orig.tar.xz \
    d0cdd2ece271b29e7ce18095745d892517ee26d0f270065b3a25c2e9eb11639c \
    https://www.sqlite.org/src/tarball/version-3.46.1/sqlite.tar.gz

source_file() {
    fetch_debian_source "${SRC_SUITE[$1]}" "${SRC_PKG[$1]}" "${SRC_FILE[$1]}" \
        "${SRC_SHA256[$1]}" "${SRC_UPSTREAM[$1]}"
}

step "fetch pinned sources"
for name in "${!SRC_FILE[@]}"; do
    source_file "$name" >/dev/null
done

# Flags shared by every wasm C library: optimised, no debug info.
WASM_LIB_CFLAGS="-O2"
# What the wasm libraries and the interpreter are built with; part of their keys.
TOOLCHAIN_ID=$(basename "$WASI_TOOLCHAIN")

# ---------------------------------------------------------------------------
# CPython source tree: upstream tarball + security patches.
# ---------------------------------------------------------------------------
# patches/ holds the security fixes from Debian's python3.13 3.13.5-2+deb13u5
# (debian/patches: every CVE-*.patch, plus the ssl, dict use-after-free and
# managed-dict GC fixes that came with them), copied verbatim; all apply to
# the pristine 3.13.5 tarball without fuzz. Debian's packaging patches
# (multiarch layout, install schemes, ...) are left out on purpose. Keeping
# copies here means a new Debian revision cannot break the fetch.
mapfile -t PY_PATCHES < <(grep -v '^\s*#' "$HERE/patches/series" | sed '/^\s*$/d')
patch_key_args=()
for p in "${PY_PATCHES[@]}"; do patch_key_args+=("$p" "@$HERE/patches/$p"); done
PY_SRC_KEY=$(cache_key "${SRC_SHA256[python]}" "${patch_key_args[@]}")
PY_SRC="$PYNBOX_CACHE/work/python-src-$PY_SRC_KEY"

take_lock "python-src-$PY_SRC_KEY"
if ! stage_done "$PY_SRC"; then
    step "unpack and patch CPython $PY_VERSION"
    stage_begin "$PY_SRC"
    unpack "$(source_file python)" "$PY_SRC"
    for p in "${PY_PATCHES[@]}"; do
        echo "applying $p"
        patch -d "$PY_SRC" -p1 -N --fuzz=0 --no-backup-if-mismatch <"$HERE/patches/$p" ||
            die "patch $p does not apply to CPython $PY_VERSION"
    done
    stage_finish "$PY_SRC"
fi
release_lock "python-src-$PY_SRC_KEY"

# ---------------------------------------------------------------------------
# Native CPython: the build python of the cross build and the baseline.
# ---------------------------------------------------------------------------
NATIVE_CONFIGURE_FLAGS=(--with-ensurepip=no --disable-test-modules)
build_native_python() {
    local dir=$1 srcrel
    mkdir -p "$dir/build"
    srcrel=$(realpath --relative-to="$dir/build" "$PY_SRC")
    step "configure native CPython $PY_VERSION"
    (cd "$dir/build" && run "$srcrel/configure" --prefix="$dir/prefix" "${NATIVE_CONFIGURE_FLAGS[@]}")
    step "build native CPython $PY_VERSION"
    run make -C "$dir/build" -j"$PYNBOX_JOBS"
    step "install native CPython $PY_VERSION"
    run make -C "$dir/build" install
    "$dir/prefix/bin/python3" -c "import sys; assert sys.version.startswith('$PY_VERSION'), sys.version"
    # The installed prefix is all that later stages use (300 MB saved).
    rm -rf "$dir/build"
}
NATIVE_KEY=$(cache_key "$PY_SRC_KEY" "${NATIVE_CONFIGURE_FLAGS[*]}" "$SOURCE_DATE_EPOCH" \
    "$(declare -f build_native_python)" "$(gcc --version | head -n1)")
NATIVE="$PYNBOX_CACHE/work/python-native-$NATIVE_KEY"
take_lock "python-native-$NATIVE_KEY"
if stage_done "$NATIVE"; then
    step "native CPython $PY_VERSION (cached)"
else
    stage_begin "$NATIVE"
    build_native_python "$NATIVE"
    stage_finish "$NATIVE"
fi
release_lock "python-native-$NATIVE_KEY"
BUILD_PYTHON="$NATIVE/prefix/bin/python$PY_MM"

# ---------------------------------------------------------------------------
# Static wasm C libraries. To add one: add_source it above, write
# build_wasmlib_NAME (called in an unpacked source tree as the current
# directory with the install prefix as $1; must install include/ and lib/),
# append NAME to WASM_LIBS and map it to CPython's configure variables in
# wasm_python_configure_env. A library's key covers its source, the toolchain,
# the shared flags and its build function's text.
# ---------------------------------------------------------------------------
WASM_LIBS=(zlib bzip2 xz sqlite)
declare -A WASMLIB_PREFIX WASMLIB_KEY

build_wasmlib_zlib() {
    # zlib's configure derives ar/ranlib from CHOST: wasm32-wasip1-ar etc.
    # are the toolchain's wrappers on PATH.
    CHOST=wasm32-wasip1 CC="$WASI_CC" CFLAGS="$WASM_LIB_CFLAGS" \
        run ./configure --static --prefix="$1"
    run make -j"$PYNBOX_JOBS" libz.a
    run make install
}

build_wasmlib_bzip2() {
    # Only the library: the Makefile's programs and tests would need a runner.
    run make -j"$PYNBOX_JOBS" libbz2.a CC="$WASI_CC" AR="$WASI_AR" RANLIB="$WASI_RANLIB" \
        CFLAGS="$WASM_LIB_CFLAGS -D_FILE_OFFSET_BITS=64"
    install -D -m644 bzlib.h "$1/include/bzlib.h"
    install -D -m644 libbz2.a "$1/lib/libbz2.a"
}

build_wasmlib_xz() {
    # No threads in wasm32-wasip1; only liblzma is needed.
    run ./configure --host=wasm32-unknown-wasip1 --prefix="$1" \
        --disable-shared --enable-static --disable-threads --disable-nls \
        --disable-xz --disable-xzdec --disable-lzmadec --disable-lzmainfo \
        --disable-lzma-links --disable-scripts --disable-doc \
        CC="$WASI_CC" AR="$WASI_AR" RANLIB="$WASI_RANLIB" CFLAGS="$WASM_LIB_CFLAGS"
    run make -C src/liblzma -j"$PYNBOX_JOBS"
    run make -C src/liblzma install
}

# SQLite options: the locking choice is explained in sqlite3-wasi.c. No
# threads (wasm32-wasip1 has none) and no loadable extensions (no dlopen).
# FTS4/FTS5/R*Tree/math functions: what Python users expect from the
# sqlite3 of a Linux distribution.
SQLITE_WASM_DEFINES=(
    -DSQLITE_THREADSAFE=0 -DSQLITE_OMIT_LOAD_EXTENSION
    -DSQLITE_ENABLE_LOCKING_STYLE=0 '-DSQLITE_DEFAULT_UNIX_VFS="unix"'
    -DSQLITE_EXTRA_INIT=pynbox_sqlite_wasi_init
    -DSQLITE_ENABLE_FTS4 -DSQLITE_ENABLE_FTS5 -DSQLITE_ENABLE_RTREE
    -DSQLITE_ENABLE_MATH_FUNCTIONS -DSQLITE_ENABLE_DBSTAT_VTAB
)
build_wasmlib_sqlite() {
    # sqlite3.c is generated on the host (tclsh), then compiled for wasm.
    mkdir -p amalgamation
    (cd amalgamation && run ../configure --disable-tcl && run make sqlite3.c)
    cp "$HERE/sqlite3-wasi.c" amalgamation/
    run "$WASI_CC" $WASM_LIB_CFLAGS "${SQLITE_WASM_DEFINES[@]}" -Iamalgamation \
        -c amalgamation/sqlite3-wasi.c -o sqlite3.o
    mkdir -p "$1/lib" "$1/include"
    run "$WASI_AR" rcs "$1/lib/libsqlite3.a" sqlite3.o
    cp amalgamation/sqlite3.h amalgamation/sqlite3ext.h "$1/include/"
}

for lib in "${WASM_LIBS[@]}"; do
    fn=build_wasmlib_$lib
    extra_key=()
    [[ $lib == sqlite ]] && extra_key=("${SQLITE_WASM_DEFINES[*]}" "@$HERE/sqlite3-wasi.c")
    key=$(cache_key "${SRC_SHA256[$lib]}" "$TOOLCHAIN_ID" "$WASM_LIB_CFLAGS" \
        "$(declare -f "$fn")" "${extra_key[@]}")
    dir="$PYNBOX_CACHE/work/wasmlib-$lib-$key"
    take_lock "wasmlib-$lib-$key"
    if stage_done "$dir"; then
        step "$lib for wasm32-wasip1 (cached)"
    else
        step "build $lib for wasm32-wasip1"
        stage_begin "$dir"
        unpack "$(source_file "$lib")" "$dir/src"
        (
            cd "$dir/src"
            "$fn" "$dir/prefix"
        )
        [[ -d "$dir/prefix/include" && -d "$dir/prefix/lib" ]] ||
            die "$fn did not install include/ and lib/ into $dir/prefix"
        rm -rf "$dir/src" # only the installed prefix is used later
        stage_finish "$dir"
    fi
    release_lock "wasmlib-$lib-$key"
    WASMLIB_PREFIX[$lib]="$dir/prefix"
    WASMLIB_KEY[$lib]=$key
done

# CPython's configure takes each library from NAME_CFLAGS/NAME_LIBS when set,
# without asking pkg-config (whose host .pc files must not be used).
wasm_python_configure_env() {
    local z=${WASMLIB_PREFIX[zlib]} b=${WASMLIB_PREFIX[bzip2]}
    local x=${WASMLIB_PREFIX[xz]} s=${WASMLIB_PREFIX[sqlite]}
    WASM_CONFIGURE_ENV=(
        PKG_CONFIG_LIBDIR= PKG_CONFIG_PATH=
        ZLIB_CFLAGS="-I$z/include" ZLIB_LIBS="-L$z/lib -lz"
        BZIP2_CFLAGS="-I$b/include" BZIP2_LIBS="-L$b/lib -lbz2"
        LIBLZMA_CFLAGS="-I$x/include" LIBLZMA_LIBS="-L$x/lib -llzma"
        LIBSQLITE3_CFLAGS="-I$s/include" LIBSQLITE3_LIBS="-L$s/lib -lsqlite3 -lm"
    )
}

# ---------------------------------------------------------------------------
# CPython for wasm32-wasip1
# ---------------------------------------------------------------------------
# config.site-wasm32-wasi answers the checks configure cannot run when cross
# compiling and disables what WASI lacks; configure itself adds the WASI
# emulation libraries, an 8 MiB stack placed first and 20 MiB initial memory.
# CPython's default OPT for a release build is -DNDEBUG -g -O3. Thin LTO
# (measured in docs/PERFORMANCE.md: about 5% on compute, +22% size) needs
# the LLVM 19 archiver: configure would otherwise pick the host's llvm-ar.
WASM_CONFIGURE_FLAGS=(
    --host=wasm32-unknown-wasip1 --build="$(gcc -dumpmachine | sed 's/-linux-gnu$/-pc-linux-gnu/')"
    --prefix=/python --with-ensurepip=no --disable-test-modules --with-lto=thin
)
WASM_CFLAGS=""
wasm_python_configure_env

build_wasm_python() {
    local dir=$1 srcrel
    mkdir -p "$dir/build"
    cp "$HERE/relink.mk" "$dir/relink.mk"
    # configure must be called by a relative path: the build records it as
    # srcdir, and the WASI host runner maps srcdir into the guest.
    srcrel=$(realpath --relative-to="$dir/build" "$PY_SRC")
    step "configure CPython for wasm32-wasip1"
    (cd "$dir/build" && run env "${WASM_CONFIGURE_ENV[@]}" \
        CONFIG_SITE="$PY_SRC/Tools/wasm/config.site-wasm32-wasi" \
        CC="$WASI_CC" CPP="$WASI_CC -E" AR="$WASI_AR" LLVM_AR="$WASI_AR" RANLIB="$WASI_RANLIB" \
        CFLAGS="$WASM_CFLAGS" \
        "$srcrel/configure" "${WASM_CONFIGURE_FLAGS[@]}" --with-build-python="$BUILD_PYTHON")
    step "build CPython for wasm32-wasip1"
    run make -C "$dir/build" -j"$PYNBOX_JOBS"
    step "install CPython for wasm32-wasip1"
    run make -C "$dir/build" install DESTDIR="$dir/destdir"
}
# Keyed by the libraries' keys, not their paths: the same inputs give the same
# key (and the same build tree paths recorded in sysconfig) in any cache.
WASM_KEY=$(cache_key "$PY_SRC_KEY" "$NATIVE_KEY" "$TOOLCHAIN_ID" "$SOURCE_DATE_EPOCH" \
    "${WASM_CONFIGURE_FLAGS[*]}" "$WASM_CFLAGS" "$(for l in "${WASM_LIBS[@]}"; do echo "$l=${WASMLIB_KEY[$l]}"; done)" \
    "$(declare -f wasm_python_configure_env)" \
    "$(declare -f build_wasm_python)" @"$HERE/relink.mk")
WASM="$PYNBOX_CACHE/work/python-wasm-$WASM_KEY"
take_lock "python-wasm-$WASM_KEY"
if stage_done "$WASM"; then
    step "CPython for wasm32-wasip1 (cached)"
else
    stage_begin "$WASM"
    build_wasm_python "$WASM"
    stage_finish "$WASM"
fi
ln -sfn "$WASM" "$PYNBOX_CACHE/work/python-$PYNBOX_VERSION"

# ---------------------------------------------------------------------------
# The modules pynbox promises must be compiled into the interpreter.
# ---------------------------------------------------------------------------
REQUIRED_MODULES=(
    zlib _bz2 _lzma _sqlite3 _decimal pyexpat _elementtree
    _md5 _sha1 _sha2 _sha3 _blake2 unicodedata _zoneinfo array _json
    _pickle _datetime math cmath _random _struct select binascii
)
step "check the built-in modules"
makevar() { make -s --no-print-directory -C "$WASM/build" -f Makefile -f "$WASM/relink.mk" "pynbox-print-$1"; }
{
    echo "built: $(makevar MODBUILT_NAMES)"
    echo "disabled: $(makevar MODDISABLED_NAMES)"
    # check_extension_modules.py's summary names the ones configure could not
    # find support for ("missing") as well.
    make -s --no-print-directory -C "$WASM/build" checksharedmods
} | tee "$WASM/modules.txt"
missing=()
for m in "${REQUIRED_MODULES[@]}"; do
    grep -q "{\"$m\", PyInit_$m}" "$WASM/build/Modules/config.c" || missing+=("$m")
done
((${#missing[@]} == 0)) ||
    die "required modules missing from the wasm interpreter: ${missing[*]} (see $WASM/modules.txt and $WASM/build/config.log)"
release_lock "python-wasm-$WASM_KEY"

# ---------------------------------------------------------------------------
# Stage the sandbox root.
# ---------------------------------------------------------------------------
step "link python.wasm as a dynamic main module"
ROOT="$PYNBOX_OUT/root/python"
LIBDIR="$ROOT/lib/python$PY_MM"
mkdir -p "$ROOT/bin"
# Native modules are wasm side modules (clang -fPIC -shared) that pynbox
# loads into the running interpreter (src/native/). For that the
# interpreter: has dlopen/dlsym that ask the host (files/pynbox_dynload.c,
# replacing wasi-libc's failing stubs, so that CPython's own dynload_shlib.c
# and importlib's ExtensionFileLoader work unchanged); exports its function
# table (growable), its stack pointer, the C API (--export-dynamic: CPython
# marks it default-visible and hides the rest) and the whole C library and
# compiler runtime (files/export_list.py), which side modules import by
# name. The C library's long-double printf/scanf (numpy prints float128)
# and Debian's libc++/libc++abi (numpy's C++; they are not
# position-independent, so they cannot live in a side module) are linked
# and exported the same way, with files/pynbox_cxxabi.c for `throw`.
# (iostream's static constructors for the standard streams come along; they
# run at start, before the pre-initialised snapshot is taken.) The
# interpreter itself stays position-dependent: no GOT indirections in
# CPython's own code. Linked through relink.mk (see the header), so that a
# relink of the same tree is this one. What makes a relinked interpreter a
# dynamic main module is kept in the package's build entry (dynlink/: the
# objects, the export list and the other flags, in link-flags).
R="$PYNBOX_OUT/.relink"
D="$PYNBOX_OUT/dynlink"
mkdir -p "$R" "$D"
run "$WASI_CC" -O2 -Wall -Werror -c "$HERE/files/pynbox_dynload.c" -o "$D/pynbox_dynload.o"
run "$WASI_CC" -O2 -Wall -Werror -c "$HERE/files/pynbox_cxxabi.c" -o "$D/pynbox_cxxabi.o"
# The C library's string scanners in wasm SIMD (files/simd-string/README.md:
# 9% on json_loads, 5% on regex_v8), linked ahead of libc.a so that its own
# copies are never pulled in.
SIMD_STRING_OBJS=()
for c in "$HERE"/files/simd-string/*.c; do
    o="$D/simd_$(basename "${c%.c}").o"
    run "$WASI_CC" -O2 -DNDEBUG -msimd128 -D__wasilibc_simd_string -Wall -Werror \
        -include "$HERE/files/simd-string/simd_string.h" -c "$c" -o "$o"
    SIMD_STRING_OBJS+=("$o")
done
(cd "$WASM/build" && "$WASI_NM" --extern-only -P $(makevar LINK_PYTHON_OBJS) Programs/python.o 2>/dev/null) |
    awk 'NF >= 2 && $2 != "U" && $2 != "w" { print $1 }' | sort -u >"$R/cpython-symbols.txt"
[[ -s "$R/cpython-symbols.txt" ]] || die "no symbols read from CPython's objects in $WASM/build"
wasi_lib=$WASI_SYSROOT/lib/wasm32-wasip1
# (The archives beyond those clang adds by itself go on the link line too.)
EXTRA_ARCHIVES=("$wasi_lib/libc-printscan-long-double.a" "$WASI_CXX_LIBDIR/libc++.a" "$WASI_CXX_LIBDIR/libc++abi.a")
"$BUILD_PYTHON" "$HERE/files/export_list.py" "$WASI_NM" "$R/cpython-symbols.txt" "$D/pynbox_cxxabi.o" \
    "${EXTRA_ARCHIVES[0]}" "$wasi_lib/libc.a" "$wasi_lib/libwasi-emulated-signal.a" "$wasi_lib/libwasi-emulated-getpid.a" \
    "$wasi_lib/libwasi-emulated-process-clocks.a" \
    "$WASI_TOOLCHAIN/resource/lib/wasm32-unknown-wasip1/libclang_rt.builtins.a" \
    "${EXTRA_ARCHIVES[1]}" "${EXTRA_ARCHIVES[2]}" >"$D/exports.rsp"
# The C++ library's symbols go into a table in the interpreter's memory
# instead of its export section, which Wasmtime decodes at every start
# (files/cxx_symbols.py says how; the loader reads the table). Their wasm
# signatures come from a throwaway link of the C++ library alone.
grep -- "--export=_Z" "$D/exports.rsp" >"$R/cxx.rsp" || die "export_list.py exported no C++ symbols"
grep -v -- "--export=_Z" "$D/exports.rsp" >"$R/exports-c.rsp"
run "$WASI_CC" -nostartfiles -Wl,--no-entry -Wl,--allow-undefined -Wl,--import-memory @"$R/cxx.rsp" \
    "$D/pynbox_cxxabi.o" "${EXTRA_ARCHIVES[1]}" "${EXTRA_ARCHIVES[2]}" -o "$R/cxx.wasm"
"$BUILD_PYTHON" "$HERE/files/cxx_symbols.py" "$R/cxx.wasm" >"$R/pynbox_cxx_symbols.c"
run "$WASI_CC" -O2 -Wall -Werror -c "$R/pynbox_cxx_symbols.c" -o "$D/pynbox_cxx_symbols.o"
{
    cat "$R/exports-c.rsp"
    echo "-Wl,--export=pynbox_cxx_symbols"
    echo "-Wl,--export=pynbox_cxx_symbol_count"
} >"$D/exports.rsp"
for sym in malloc __cxa_throw; do
    grep -q -- "--export=$sym\$" "$D/exports.rsp" ||
        die "export_list.py did not export $sym: the C library would be missing for side modules (see $D/exports.rsp)"
done
for sym in _Znwm _ZNSt3__212__next_primeEm; do
    grep -q "\"$sym\"" "$R/pynbox_cxx_symbols.c" ||
        die "the C++ symbol table lacks $sym: side modules could not use the C++ library (see $R/pynbox_cxx_symbols.c)"
done
# (The flags without the files, whose directory moves once the build entry
# is complete: a relinker passes DIR/simd_*.o, DIR/pynbox_dynload.o,
# DIR/pynbox_cxxabi.o, DIR/pynbox_cxx_symbols.o, these flags,
# @DIR/exports.rsp and the archives in link-archives.)
echo "-Wl,--export-dynamic -Wl,--export-table -Wl,--growable-table -Wl,--export=__stack_pointer" >"$D/link-flags"
# And how an extension module or library for this interpreter is built (what
# sysconfig's CCSHARED and LDSHARED are elsewhere): position-independent,
# symbols visible (clang's default for wasm is hidden, which would export
# nothing), importing what it does not define (the interpreter and the
# libraries it needs provide it), internal references bound inside,
# constructors exported for the loader. See docs/PACKAGES.md.
echo "${EXTRA_ARCHIVES[*]}" >"$D/link-archives"
echo "-fPIC -fvisibility=default" >"$D/side-cflags"
echo "-shared -fPIC -nostdlib -Wl,--experimental-pic -Wl,-Bsymbolic -Wl,--no-entry -Wl,--unresolved-symbols=import-dynamic -Wl,--export-if-defined=__wasm_call_ctors" >"$D/side-ldflags"
run make -s -C "$WASM/build" -f Makefile -f "$WASM/relink.mk" pynbox-relink \
    PYNBOX_WASM="$R/python.wasm" \
    PYNBOX_EXTRA_LINK="${SIMD_STRING_OBJS[*]} $D/pynbox_dynload.o $D/pynbox_cxxabi.o $D/pynbox_cxx_symbols.o $(cat "$D/link-flags") @$D/exports.rsp ${EXTRA_ARCHIVES[*]}"
# --export-dynamic exported the C++ library too; side modules find it
# through the table (files/drop_exports.py).
"$BUILD_PYTHON" "$HERE/files/drop_exports.py" "$R/python.wasm" _Z
# DWARF is 70% of the file; the name section stays (0.2 MB) so that a trap's
# backtrace names functions.
run "$WASI_STRIP" --strip-debug -o "$ROOT/bin/python.wasm" "$R/python.wasm"
rm -rf "$R"
# Which build tree this package was made from, for the recipes that relink
# against it (lxml, python-tests) to check.
basename "$WASM" >"$PYNBOX_OUT/wasm-build"

step "stage the standard library"
# Left out: tests, GUI and IDE (no display in a sandbox), ensurepip (no
# network, no pip wheels), the build's own __pycache__ (recompiled below) and
# config-3.13-*/ (static libpython, Makefile, Setup: only for linking C, which
# happens outside the sandbox).
mkdir -p "$LIBDIR"
tar -C "$WASM/destdir/python/lib/python$PY_MM" -cf - \
    --exclude=./test --exclude=./idlelib --exclude=./tkinter \
    --exclude=./turtledemo --exclude=./ensurepip --exclude='./lib2to3/tests' \
    --exclude='./config-*' --exclude=__pycache__ . |
    tar -C "$LIBDIR" -xf -
# getpath warns when the dynamic-module directory is absent. Packages hold
# files only, so the directory gets one saying why it stays empty.
mkdir -p "$LIBDIR/lib-dynload"
cat >"$LIBDIR/lib-dynload/README.txt" <<'EOF2'
The standard library's extension modules are linked into the interpreter.
Native packages install theirs (wasm side modules, *.cpython-313-wasm32-wasi.so)
beside their Python code, and pynbox loads them at import.
EOF2
# The build configuration record names this machine's cache paths; a neutral
# prefix keeps the root identical wherever the cache lives.
sed -i "s#$PYNBOX_CACHE/#/pynbox-cache/#g" "$LIBDIR"/_sysconfigdata_*.py

step "add the IANA time zone database (tzdata)"
# The sandbox has no /usr/share/zoneinfo; zoneinfo then reads the tzdata
# package, which is pure data. Upstream: https://pypi.org/project/tzdata/
# (from https://www.iana.org/time-zones).
TZDATA_VERSION=2026.6
TZDATA_SHA256=85d2cd9c09f81f0bb29db27759fc83af4f1e620efb814f8c5bf8b4cc4feece6d
tzsrc=$(fetch_pypi_sdist tzdata "$TZDATA_VERSION" "tzdata-$TZDATA_VERSION.tar.gz" "$TZDATA_SHA256")
mkdir -p "$LIBDIR/site-packages"
run tar -C "$LIBDIR/site-packages" -xzf "$tzsrc" --strip-components=2 "tzdata-$TZDATA_VERSION/src/tzdata"

step "precompile the standard library"
# unchecked-hash .pyc: never compared with the .py's mtime, so the read-only
# root imports without recompiling and the result does not depend on file
# timestamps. Compiled by the native python of the same source (same magic
# number); -d records the in-sandbox path for tracebacks. PYTHONHASHSEED=0
# keeps the output reproducible (set/frozenset constant order).
PYTHONHASHSEED=0 run "$BUILD_PYTHON" -I -m compileall -q -j"$PYNBOX_JOBS" \
    --invalidation-mode unchecked-hash -d "/python/lib/python$PY_MM" "$LIBDIR" ||
    die "compileall failed on the staged standard library"

step "stage the native CPython"
# Without the static libpython copies (136 MB, only for embedding).
mkdir -p "$PYNBOX_OUT/native"
tar -C "$NATIVE/prefix" -cf - --exclude="./lib/python$PY_MM/config-*" \
    --exclude="./lib/libpython$PY_MM.a" --exclude="./lib/python$PY_MM/test" . |
    tar -C "$PYNBOX_OUT/native" -xf -
"$PYNBOX_OUT/native/bin/python3" -c 'import sys, zlib, sqlite3; print(sys.version)'

_step_close
echo "[pynbox] python.wasm: $(stat -c %s "$ROOT/bin/python.wasm") bytes; root: $(du -sh "$PYNBOX_OUT/root" | cut -f1)"
