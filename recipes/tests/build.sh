#!/usr/bin/env bash
# The `tests` package: test_pynbox.py (run by the installed python), a
# native C test compiled to wasm32-wasip1, and C and C++ extension modules built as
# wasm side modules (/test/native/), which test_pynbox.py imports: all under
# /test. The extension modules are compiled against the python recipe's
# build tree, as any native package's are.
# shellcheck source=../lib.sh
source "$PYNBOX_RECIPES/lib.sh"
# shellcheck source=../toolchain.sh
source "$PYNBOX_RECIPES/toolchain.sh"
# shellcheck source=../toolchain-cxx.sh
source "$PYNBOX_RECIPES/toolchain-cxx.sh"

here=$PYNBOX_RECIPES/tests/files
out=$PYNBOX_OUT/root/test
mkdir -p "$out"

step "compile the native test for wasm32-wasip1"
run "$WASI_CC" -O2 -Wall -Werror -o "$out/test_pynbox_native.wasm" "$here/test_pynbox_native.c"
run "$WASI_STRIP" "$out/test_pynbox_native.wasm"

step "build the test extension modules (wasm side modules)"
PY_VERSION_FULL=$("$PYNBOX_DEP_PYTHON/native/bin/python3" -c \
    'import json, sys; print(json.load(open(sys.argv[1]))["version"])' "$PYNBOX_RECIPES/python/package.json")
PY_WORK=$(realpath -e "$PYNBOX_CACHE/work/python-$PY_VERSION_FULL" 2>/dev/null) ||
    die "no wasm CPython build tree at $PYNBOX_CACHE/work/python-$PY_VERSION_FULL: run pynbox build python"
[[ -f "$PYNBOX_DEP_PYTHON/wasm-build" && $(cat "$PYNBOX_DEP_PYTHON/wasm-build") == "$(basename "$PY_WORK")" ]] ||
    die "$PY_WORK is not the build tree of the python package in $PYNBOX_DEP_PYTHON; rebuild python (pynbox build python)"
# Python.h and pyconfig.h of that build (the -I paths of its own flags).
py_includes=()
for flag in $(make -s --no-print-directory -C "$PY_WORK/build" -f Makefile -f "$PY_WORK/relink.mk" pynbox-print-PY_STDMODULE_CFLAGS); do
    case $flag in
    -I*/Include | -I.) py_includes+=("-I$(realpath "$PY_WORK/build/${flag#-I}")") ;;
    esac
done
ext=$(make -s --no-print-directory -C "$PY_WORK/build" -f Makefile -f "$PY_WORK/relink.mk" pynbox-print-EXT_SUFFIX)
# How a side module is compiled and linked, from the python package (see
# recipes/python/build.sh, dynlink/).
read -ra SIDE_CFLAGS <"$PYNBOX_DEP_PYTHON/dynlink/side-cflags"
read -ra SIDE_LDFLAGS <"$PYNBOX_DEP_PYTHON/dynlink/side-ldflags"
SIDE_CFLAGS+=(-O2 -Wall -Werror)
native=$out/native
mkdir -p "$native" "$PYNBOX_OUT/.native"
obj=$PYNBOX_OUT/.native
run "$WASI_CC" "${SIDE_CFLAGS[@]}" -c "$here/native/pynbox_helper.c" -o "$obj/helper.o"
run "$WASI_CC" "${SIDE_LDFLAGS[@]}" -o "$native/libpynbox_helper.so" "$obj/helper.o"
for m in pynbox_ext pynbox_missing; do
    run "$WASI_CC" "${SIDE_CFLAGS[@]}" "${py_includes[@]}" -c "$here/native/$m.c" -o "$obj/$m.o"
done
# pynbox_ext needs libpynbox_helper.so (recorded in its dylink.0 section).
run "$WASI_CC" "${SIDE_LDFLAGS[@]}" -o "$native/pynbox_ext$ext" "$obj/pynbox_ext.o" "$native/libpynbox_helper.so"
run "$WASI_CC" "${SIDE_LDFLAGS[@]}" -o "$native/pynbox_missing$ext" "$obj/pynbox_missing.o"
# A C++ module, compiled with exceptions as numpy's unique.cpp is.
run "$WASI_CXX" "${SIDE_CFLAGS[@]}" -std=c++17 -fexceptions "${py_includes[@]}" -c "$here/native/pynbox_cxx.cpp" -o "$obj/pynbox_cxx.o"
run "$WASI_CXX" "${SIDE_LDFLAGS[@]}" -o "$native/pynbox_cxx$ext" "$obj/pynbox_cxx.o"
rm -rf "$obj"

step "copy the Python tests"
run install -m 0644 "$here/test_pynbox.py" "$out/test_pynbox.py"
_step_close
