"""The C and C++ compiler that meson sees for numpy (recipes/numpy/build.sh).

    python side-cc.py SIDE_LDFLAGS_FILE COMPILER ARG...

Compiles as asked. A link with -shared (meson's extension modules) becomes
a wasm side-module link: the python package's side-ldflags are added
(-nostdlib, --experimental-pic, imports resolved at load; see
docs/PACKAGES.md). Every other link, such as meson's checks whether a
function exists, stays an ordinary wasm32-wasip1 program linked against the
C library, so that those checks answer truthfully: a side-module link
accepts any undefined symbol as an import and would report every function
present. And -Wl,--start-group/--end-group, which meson passes and wasm-ld
19 does not know, become the group's archives listed twice, which resolves
what numpy's archives need of each other.
"""
import os
import sys


def main():
    side_ldflags_file, compiler, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    out, group, in_group = [], [], False
    for arg in args:
        if arg == "-Wl,--start-group":
            in_group, group = True, []
        elif arg == "-Wl,--end-group":
            in_group = False
            out += group + [a for a in group if a.endswith(".a")]
        else:
            (group if in_group else out).append(arg)
    if in_group:
        out += group
    if "-shared" in out:
        with open(side_ldflags_file) as f:
            out += f.read().split()
    os.execv(compiler, [compiler] + out)


main()
