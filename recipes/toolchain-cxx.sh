#!/usr/bin/env bash
# C++ for wasm32-wasip1, on top of recipes/toolchain.sh: Debian's libc++ and
# libc++abi for wasm32 (built from LLVM 19, the same release as the
# compiler), behind a clang++ wrapper that carries their header and library
# directories.
#
#   source "$PYNBOX_RECIPES/toolchain-cxx.sh"   (after lib.sh and toolchain.sh)
#       exports WASI_CXX (the wrapper) and WASI_CXX_LIBDIR (libc++.a and
#       libc++abi.a).
#
# A file of its own rather than part of toolchain.sh, whose key covers every
# wasm build: adding C++ must not recompile the C that never uses it.
#
# Debian builds these archives without exception support (libc++abi has no
# __cxa_throw) and not position-independent, so they cannot go into a side
# module: the python interpreter links and exports them, as it does the C
# library, and C++ side modules import them (docs/PACKAGES.md, "C++").
WASI_CXX_APT_PACKAGES=(libc++-19-dev-wasm32 libc++abi-19-dev-wasm32)
WASI_CXX_INCLUDE=/usr/lib/llvm-19/include/wasm32-wasi/c++/v1
WASI_CXX_LIBDIR=/usr/lib/llvm-19/lib/wasm32-wasi

ensure_wasi_cxx() {
    : "${WASI_TOOLCHAIN:?source toolchain.sh and call ensure_wasi_toolchain first}"
    ensure_apt_packages "${WASI_CXX_APT_PACKAGES[@]}"
    local self version key dir
    self=$(realpath "$PYNBOX_RECIPES/toolchain-cxx.sh")
    version=$(dpkg-query -W -f='${Version}' libc++-19-dev-wasm32 libc++abi-19-dev-wasm32)
    key=$(cache_key @"$self" "$(basename "$WASI_TOOLCHAIN")" "$version")
    dir="$PYNBOX_CACHE/toolchain/cxx-$key"
    if ! stage_done "$dir"; then
        take_lock "toolchain-cxx-$key"
        if ! stage_done "$dir"; then
            _make_wasi_cxx "$dir"
        fi
        release_lock "toolchain-cxx-$key"
    fi
    export WASI_CXX=$dir/bin/wasm32-wasip1-clang++
    export WASI_CXX_LIBDIR
}

_make_wasi_cxx() {
    local dir=$1
    step "prepare C++ for wasm32-wasip1 (Debian's libc++)"
    [[ -f $WASI_CXX_INCLUDE/__config_site && -f $WASI_CXX_LIBDIR/libc++.a && -f $WASI_CXX_LIBDIR/libc++abi.a ]] ||
        die "${WASI_CXX_APT_PACKAGES[*]} did not install $WASI_CXX_INCLUDE and $WASI_CXX_LIBDIR/libc++.a, libc++abi.a"
    stage_begin "$dir"
    mkdir -p "$dir/bin"
    # The private sysroot has no C++ headers; -nostdinc++ keeps clang from
    # looking for them there, and the library directory serves links of
    # whole programs (meson's checks; side modules link with -nostdlib),
    # hence no warning that -L goes unused when only compiling.
    cat >"$dir/bin/wasm32-wasip1-clang++" <<EOF
#!/bin/sh
exec /usr/bin/clang++-19 --target=wasm32-wasip1 --sysroot="$WASI_SYSROOT" -resource-dir="$WASI_TOOLCHAIN/resource" -nostdinc++ -isystem "$WASI_CXX_INCLUDE" -L"$WASI_CXX_LIBDIR" -Wno-unused-command-line-argument "\$@"
EOF
    chmod +x "$dir/bin/wasm32-wasip1-clang++"
    # Smoke test: strings, containers and operator new must link.
    printf '#include <string>\n#include <unordered_set>\nint main() { std::unordered_set<std::string> s{"a", "b"}; return s.size() == 2 ? 0 : 1; }\n' >"$dir/hello.cpp"
    run "$dir/bin/wasm32-wasip1-clang++" -O2 -fno-exceptions "$dir/hello.cpp" -o "$dir/hello.wasm"
    rm -f "$dir/hello.cpp" "$dir/hello.wasm"
    stage_finish "$dir"
}

ensure_wasi_cxx
