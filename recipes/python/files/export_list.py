"""Prints the wasm-ld flags that export the C and C++ libraries from python.wasm.

Native modules (wasm side modules, src/native/ in pynbox) import what they
use of the C library, the compiler runtime and the C++ library from the
interpreter, so the interpreter must contain and export all of it, not only
what CPython itself calls. Linking the archives whole is not possible: CPython defines its own
pthread stubs for WASI, which clash with some members. So: every member of
the archives that defines nothing CPython defines, and whose undefined
symbols can all be resolved (a fixpoint), has its symbols exported with
--export=NAME (which also pulls the member into the link). A weak undefined
symbol may stay unresolved (it is then null, by design), so it does not
count against its member. Objects named beside the archives (NAME.o) are
linked whole: their symbols count as defined and are all exported.

    python export_list.py NM CPYTHON_SYMBOLS (ARCHIVE | OBJECT.o)...

CPYTHON_SYMBOLS: a file with the symbols CPython's objects define, one per
line. NM: llvm-nm. When two archives define a symbol, the linker takes
it from the one earlier on its command line (libc-printscan-long-double.a
goes before libc.a there); this list only names the symbol.
"""
import subprocess
import sys

# Symbols the linker makes up, which no archive defines.
LINKER = {
    "__heap_base", "__heap_end", "__data_end", "__stack_pointer", "__stack_low",
    "__stack_high", "__global_base", "__dso_handle", "__wasm_call_ctors",
    "__indirect_function_table", "__memory_base", "__table_base", "__tls_base",
    "__tls_size", "__tls_align", "__wasm_init_tls", "main", "__main_argc_argv",
}
# Entry points of a command module; the interpreter has its own.
ENTRY = {"_start", "_initialize", "__main_void", "main", "__main_argc_argv"}


def main():
    nm, cpython_file, inputs = sys.argv[1], sys.argv[2], sys.argv[3:]
    cpython = set(open(cpython_file).read().split())
    forced = set()
    for obj in (i for i in inputs if i.endswith(".o")):
        out = subprocess.run([nm, "--extern-only", "-P", obj],
                             capture_output=True, text=True, check=True).stdout
        forced |= {p[0] for p in map(str.split, out.splitlines())
                   if len(p) >= 2 and p[1] not in "Uw"}
    cpython |= forced
    defs, undefs = {}, {}
    for archive in (i for i in inputs if not i.endswith(".o")):
        out = subprocess.run([nm, "--extern-only", "-P", "-A", archive],
                             capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) < 3:
                continue
            member, sym, kind = parts[0].rstrip(":"), parts[1], parts[2]
            defs.setdefault(member, set())
            undefs.setdefault(member, set())
            if kind == "w":
                continue
            (undefs if kind == "U" else defs)[member].add(sym)
    members = {m for m in defs if not (defs[m] & cpython or defs[m] & ENTRY)}
    while True:
        have = set(cpython).union(*(defs[m] for m in members))
        bad = {m for m in members
               if any(u not in have and u not in LINKER and not u.startswith("__imported_")
                      for u in undefs[m])}
        if not bad:
            break
        members -= bad
    exported = set().union(forced, *(defs[m] for m in members))
    for sym in sorted(exported):
        print("-Wl,--export=" + sym)


main()
