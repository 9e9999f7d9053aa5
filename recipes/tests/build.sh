#!/usr/bin/env bash
# The `tests` package: test_pynbox.py (run by the installed python) and a
# native C test compiled to wasm32-wasip1, both under /test.
# shellcheck source=../lib.sh
source "$PYNBOX_RECIPES/lib.sh"
# shellcheck source=../toolchain.sh
source "$PYNBOX_RECIPES/toolchain.sh"

here=$PYNBOX_RECIPES/tests/files
out=$PYNBOX_OUT/root/test
mkdir -p "$out"

step "compile the native test for wasm32-wasip1"
run "$WASI_CC" -O2 -Wall -Werror -o "$out/test_pynbox_native.wasm" "$here/test_pynbox_native.c"
run "$WASI_STRIP" "$out/test_pynbox_native.wasm"

step "copy the Python tests"
run install -m 0644 "$here/test_pynbox.py" "$out/test_pynbox.py"
_step_close
