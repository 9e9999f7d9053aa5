#!/usr/bin/env bash
# The wasm32-wasip1 C toolchain shared by all recipes: Debian's clang/lld 19
# plus trixie's wasi-libc as sysroot, behind wrapper scripts that carry the
# target, sysroot and resource-dir flags.
#
# Two ways to use it:
#   bash recipes/toolchain.sh --print-dir
#       Creates the toolchain if needed and prints its directory, nothing
#       else, on stdout (progress goes to stderr, details to the log named by
#       $PYNBOX_LOG, default $PYNBOX_CACHE/logs/toolchain.log). Then compile
#       with "$DIR/bin/wasm32-wasip1-clang hello.c -o hello.wasm".
#   source "$PYNBOX_RECIPES/toolchain.sh"    (from a recipe, after lib.sh)
#       Same, and exports WASI_TOOLCHAIN, WASI_CC, WASI_AR, WASI_RANLIB,
#       WASI_NM, WASI_STRIP and WASI_SYSROOT, with $WASI_TOOLCHAIN/bin on PATH.
#
# The directory is $PYNBOX_CACHE/toolchain/<key>, the key hashing this file
# and the clang version: editing this script yields a fresh toolchain and
# leaves older ones (still used by older cached builds) alone.

# Compiler packages from bookworm (1:19.1.7-3~deb12u1 when this was written),
# and what recipes need on the host besides: a native C compiler for build
# tools and the native CPython, tcl for sqlite's amalgamation, patch, xz.
WASI_TOOLCHAIN_APT_PACKAGES=(
    clang-19 lld-19 llvm-19 libclang-rt-19-dev-wasm32
    build-essential make patch xz-utils bzip2 pkg-config tcl
)

# wasi-libc: bookworm's 2022 snapshot lacks the pthread stub headers that
# CPython 3.13 needs (Python/thread.c: "Unsupported SIZEOF_PTHREAD_T value"),
# so the sysroot comes from trixie's arch-independent .deb.
# Upstream: https://github.com/WebAssembly/wasi-libc/tree/574b88da481569b65a237cb80daf9a2d5aeaf82d
WASI_LIBC_DEB=wasi-libc_0.0~git20241209.574b88d-2_all.deb
WASI_LIBC_SHA256=b7716260051d289248b7667f81fa2792c125d888ff51da3fa09c6272cc0bd11d

ensure_wasi_toolchain() {
    ensure_apt_packages "${WASI_TOOLCHAIN_APT_PACKAGES[@]}"
    local self clang_version key dir
    self=$(realpath "$PYNBOX_RECIPES/toolchain.sh")
    clang_version=$(clang-19 --version | head -n1)
    key=$(cache_key @"$self" "$clang_version")
    dir="$PYNBOX_CACHE/toolchain/$key"
    if ! stage_done "$dir"; then
        take_lock "toolchain-$key"
        # (if, not ||: errexit is off in functions called from || lists)
        if ! stage_done "$dir"; then
            _make_wasi_toolchain "$dir"
        fi
        release_lock "toolchain-$key"
    fi
    export WASI_TOOLCHAIN=$dir
    export WASI_SYSROOT=$dir/sysroot
    export WASI_CC=$dir/bin/wasm32-wasip1-clang
    export WASI_AR=$dir/bin/wasm32-wasip1-ar
    export WASI_RANLIB=$dir/bin/wasm32-wasip1-ranlib
    export WASI_NM=$dir/bin/wasm32-wasip1-nm
    export WASI_STRIP=$dir/bin/wasm32-wasip1-strip
    case ":$PATH:" in *":$dir/bin:"*) ;; *) export PATH="$dir/bin:$PATH" ;; esac
}

_make_wasi_toolchain() {
    local dir=$1 deb clang_res tmp
    step "prepare the wasm32-wasip1 toolchain"
    deb=$(fetch_debian_source trixie wasi-libc "$WASI_LIBC_DEB" "$WASI_LIBC_SHA256")
    stage_begin "$dir"

    tmp=$(mktemp -d "$dir/.deb.XXXXXX")
    run dpkg-deb -x "$deb" "$tmp"
    mv "$tmp/usr" "$dir/sysroot"
    rm -rf "$tmp" "$dir/sysroot/share"

    # Debian ships the wasm32 builtins as lib/wasi/libclang_rt.builtins-wasm32.a
    # under clang's resource dir, but clang-19 --target=wasm32-wasip1 looks for
    # lib/wasm32-unknown-wasip1/libclang_rt.builtins.a. A private resource dir
    # (headers linked to the real ones) gives it the expected layout without
    # touching /usr.
    clang_res=$(clang-19 -print-resource-dir)
    [[ -f $clang_res/lib/wasi/libclang_rt.builtins-wasm32.a ]] ||
        die "libclang-rt-19-dev-wasm32 did not install $clang_res/lib/wasi/libclang_rt.builtins-wasm32.a"
    mkdir -p "$dir/resource/lib/wasm32-unknown-wasip1"
    ln -s "$clang_res/include" "$dir/resource/include"
    ln -s "$clang_res/lib/wasi/libclang_rt.builtins-wasm32.a" \
        "$dir/resource/lib/wasm32-unknown-wasip1/libclang_rt.builtins.a"

    mkdir -p "$dir/bin"
    # --sysroot must be this extracted tree, never /usr (glibc headers leak).
    cat >"$dir/bin/wasm32-wasip1-clang" <<EOF
#!/bin/sh
exec /usr/bin/clang-19 --target=wasm32-wasip1 --sysroot="$dir/sysroot" -resource-dir="$dir/resource" "\$@"
EOF
    local tool
    for tool in ar ranlib strip nm objdump; do
        printf '#!/bin/sh\nexec /usr/bin/llvm-%s-19 "$@"\n' "$tool" >"$dir/bin/wasm32-wasip1-$tool"
    done
    chmod +x "$dir"/bin/*

    # Smoke test: a C program must compile and link into a wasm module.
    printf '#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n' >"$dir/hello.c"
    run "$dir/bin/wasm32-wasip1-clang" -O2 "$dir/hello.c" -o "$dir/hello.wasm"
    [[ "$(head -c4 "$dir/hello.wasm" | od -An -tx1 | tr -d ' ')" == 0061736d ]] ||
        die "the toolchain's hello world is not a wasm module"
    rm -f "$dir/hello.c" "$dir/hello.wasm"
    stage_finish "$dir"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    # Standalone: stdout is reserved for the answer.
    if [[ ${1:-} != --print-dir ]]; then
        echo "usage: bash ${BASH_SOURCE[0]} --print-dir" >&2
        exit 2
    fi
    exec 4>&1 1>&2
    PYNBOX_RECIPES=${PYNBOX_RECIPES:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
    PYNBOX_CACHE=${PYNBOX_CACHE:-$HOME/.cache/pynbox}
    PYNBOX_LOG=${PYNBOX_LOG:-$PYNBOX_CACHE/logs/toolchain.log}
    mkdir -p "$(dirname "$PYNBOX_LOG")"
    # No driver shows the log here, so show its tail on failure.
    trap 'rc=$?; if ((rc)); then echo "toolchain.sh failed; end of $PYNBOX_LOG:" >&3; tail -n 30 "$PYNBOX_LOG" >&3; fi' EXIT
    # shellcheck source=lib.sh
    source "$PYNBOX_RECIPES/lib.sh"
    ensure_wasi_toolchain
    _step_close
    echo "$WASI_TOOLCHAIN" >&4
else
    ensure_wasi_toolchain
fi
