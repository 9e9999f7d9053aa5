#!/usr/bin/env bash
# pynbox package "python-tests": CPython's regression suite (Lib/test) from
# the python recipe's patched source tree, so that the suite runs inside the
# sandbox against the interpreter it tests (scripts/regrtest.sh; by hand:
# DEST/bin/regrtest, or DEST/bin/run python -m test).
#
# The python recipe configures with --disable-test-modules, so its install
# has no test/ directory: the files come from the source tree that build
# used (the wasm build's Makefile names it as srcdir), which carries the
# same security patches as the interpreter.
#
# Called by `pynbox build` (see recipes/lib.sh). Needs PYNBOX_DEP_PYTHON
# (package.json's build_depends) and the build tree the python recipe leaves
# in $PYNBOX_CACHE/work/python-<its version>. Output:
#   $PYNBOX_OUT/root/python/lib/python3.13/test/   with unchecked-hash .pyc
#   $PYNBOX_OUT/root/python/lib/python3.13/lib-dynload/  CPython's test
#       support modules, as extension module files
#
# The test support modules are those of Modules/Setup.stdlib.in after
# "# Test modules": the ones CPython's own WASI build links statically
# (_testcapi, _testinternalcapi, _testbuffer, ...) and the ones after
# "*shared*" that test loading extension modules from files
# (_testmultiphase, _testsinglephase, _testimportmultiple, xxlimited,
# xxlimited_35), which that build cannot load. Here all are wasm side
# modules in lib-dynload/, loaded by the one python at import like any
# native package's (_testexternalinspection reads other processes' memory
# and is left out). Compiled like CPython compiles its extension modules
# (PY_STDMODULE_CFLAGS, without LTO: each is linked on its own), linked
# with the python package's side-module flags (its dynlink/).
# shellcheck source=../lib.sh
source "$PYNBOX_RECIPES/lib.sh"
# shellcheck source=../toolchain.sh
source "$PYNBOX_RECIPES/toolchain.sh"

: "${PYNBOX_OUT:?PYNBOX_OUT must name the output directory}"
: "${PYNBOX_VERSION:?PYNBOX_VERSION must be set (from package.json)}"
: "${PYNBOX_DEP_PYTHON:?PYNBOX_DEP_PYTHON must name the python build (build_depends in package.json)}"
NATIVE_PY="$PYNBOX_DEP_PYTHON/native/bin/python3"
PY_VERSION_FULL=$("$NATIVE_PY" -c \
    'import json, sys; print(json.load(open(sys.argv[1]))["version"])' "$PYNBOX_RECIPES/python/package.json")
[[ $PY_VERSION_FULL == "$PYNBOX_VERSION" ]] ||
    die "python-tests $PYNBOX_VERSION must match the python package ($PY_VERSION_FULL): change recipes/python-tests/package.json with it"
PY_MM=$("$NATIVE_PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
PY_WORK=$(realpath -e "$PYNBOX_CACHE/work/python-$PY_VERSION_FULL" 2>/dev/null) ||
    die "no wasm CPython build tree at $PYNBOX_CACHE/work/python-$PY_VERSION_FULL (cleaned from the cache?): rebuild python, e.g. remove $PYNBOX_DEP_PYTHON and run pynbox build python"

step "find the python build's source tree"
srcdir=$(make -s --no-print-directory -C "$PY_WORK/build" -f Makefile -f "$PY_WORK/relink.mk" pynbox-print-srcdir)
SRC=$(realpath -e "$PY_WORK/build/$srcdir") ||
    die "the python build tree names source directory $srcdir, which is gone: rebuild python"
[[ -f $SRC/Lib/test/regrtest.py && -f $SRC/Lib/test/libregrtest/main.py ]] ||
    die "$SRC has no Lib/test/regrtest.py: not a CPython source tree"
# The suite must be the one of the packaged interpreter's sources: the
# version in its patchlevel.h must be the python package's.
grep -Eq "^#define PY_VERSION[[:space:]]+\"${PY_VERSION_FULL%-*}\"" "$SRC/Include/patchlevel.h" ||
    die "$SRC is not CPython ${PY_VERSION_FULL%-*}"

HERE="$PYNBOX_RECIPES/python-tests"
PY_BUILD="$PY_WORK/build"
step "check the python build tree against the python package"
[[ -f "$PYNBOX_DEP_PYTHON/wasm-build" && $(cat "$PYNBOX_DEP_PYTHON/wasm-build") == "$(basename "$PY_WORK")" ]] ||
    die "$PY_WORK is not the build tree of the python package in $PYNBOX_DEP_PYTHON; rebuild python (pynbox build python) so that its build tree and package agree"
pyvar() { make -s --no-print-directory -C "$PY_BUILD" -f Makefile -f "$PY_WORK/relink.mk" "pynbox-print-$1"; }

# "NAME file.c ..." lines of the test modules, static and shared, less the
# one that inspects other processes.
mapfile -t TEST_MODULES < <(awk '/^# Test modules/ {on = 1; next}
    on && /^@MODULE_/ {sub(/^@[A-Z0-9_]+@/, ""); print}' "$SRC/Modules/Setup.stdlib.in" |
    grep -v '^_testexternalinspection ')
((${#TEST_MODULES[@]} >= 10)) ||
    die "found ${#TEST_MODULES[@]} test modules in $SRC/Modules/Setup.stdlib.in: its layout changed"

step "build the test support modules (wasm side modules)"
[[ -f "$PYNBOX_DEP_PYTHON/dynlink/side-ldflags" ]] ||
    die "$PYNBOX_DEP_PYTHON has no dynlink/side-ldflags: rebuild python (pynbox build python)"
read -ra SIDE_LDFLAGS <"$PYNBOX_DEP_PYTHON/dynlink/side-ldflags"
SIDE_CFLAGS=$(cat "$PYNBOX_DEP_PYTHON/dynlink/side-cflags")
# Without LTO: a side module is linked on its own, not with libpython.
MODULE_CFLAGS=$(pyvar PY_STDMODULE_CFLAGS | sed 's/-flto=thin//g')
DYNLOAD="$PYNBOX_OUT/root/python/lib/python$PY_MM/lib-dynload"
EXT=$(pyvar EXT_SUFFIX)
mkdir -p "$DYNLOAD" "$PYNBOX_OUT/.obj"
for line in "${TEST_MODULES[@]}"; do
    read -r name files <<<"$line"
    objs=()
    for f in $files; do
        o="$PYNBOX_OUT/.obj/$name-$(basename "${f%.c}").o"
        # The relative include dirs in PY_STDMODULE_CFLAGS are relative to
        # the CPython build tree, hence the cd.
        # shellcheck disable=SC2086  # make variables' word lists
        (cd "$PY_BUILD" && run "$WASI_CC" $MODULE_CFLAGS $SIDE_CFLAGS -c "$SRC/Modules/$f" -o "$o")
        objs+=("$o")
    done
    run "$WASI_CC" "${SIDE_LDFLAGS[@]}" -o "$DYNLOAD/$name$EXT" "${objs[@]}"
    # No DWARF, but the name section for trap backtraces.
    run "$WASI_STRIP" --strip-debug "$DYNLOAD/$name$EXT"
done
rm -rf "$PYNBOX_OUT/.obj"
echo "test modules: $(cd "$DYNLOAD" && echo *)"

step "stage Lib/test"
DEST_TEST="$PYNBOX_OUT/root/python/lib/python$PY_MM/test"
mkdir -p "$DEST_TEST"
tar -C "$SRC/Lib/test" -cf - --exclude=__pycache__ . | tar -C "$DEST_TEST" -xf -

# The launcher: `python -m pynbox_regrtest` is `python -m test` for this
# interpreter (see the file for why it is needed).
install -D -m 0644 "$HERE/files/pynbox_regrtest.py" "$PYNBOX_OUT/root/python/lib/python$PY_MM/site-packages/pynbox_regrtest.py"

step "precompile the suite"
# As the standard library: unchecked-hash .pyc by the native python of the
# same source, in-sandbox paths for tracebacks, reproducible output. The
# files the suite keeps broken on purpose are left out, as CPython's own
# install does (Makefile: compileall -x 'bad_coding|badsyntax').
PYTHONHASHSEED=0 run "$NATIVE_PY" -I -m compileall -q -j"$PYNBOX_JOBS" \
    --invalidation-mode unchecked-hash -x 'bad_coding|badsyntax' \
    -d "/python/lib/python$PY_MM/test" "$DEST_TEST" ||
    die "compileall failed on the test suite"
PYTHONHASHSEED=0 run "$NATIVE_PY" -I -m compileall -q --invalidation-mode unchecked-hash \
    -d "/python/lib/python$PY_MM/site-packages" "$PYNBOX_OUT/root/python/lib/python$PY_MM/site-packages" ||
    die "compileall failed on pynbox_regrtest.py"
_step_close
echo "[pynbox] python-tests: $(find "$DEST_TEST" -name 'test_*.py' | wc -l) test files, $(du -sh "$DEST_TEST" | cut -f1)"
