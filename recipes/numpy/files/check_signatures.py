"""Finds C functions that Python will call with another number of arguments
than they take, in a source tree of a native package.

    python check_signatures.py SOURCE_DIR

Natively such a call works by accident; in WebAssembly call_indirect checks
the function's type and traps, which ends the whole sandboxed run. CPython
calls what a method table (PyMethodDef: the METH_ flags say how) or a cast
to a slot type (getter, setter, reprfunc, ...) tells it to, so both are
checked against the parameter count of the function's definition.
Templated names (numpy's .c.src "@name@") and functions defined elsewhere
are not checked; numpy's own tests are the second net. Prints one line per
mismatch and exits 1 if there is any.
"""
import glob
import os
import re
import sys

# Arguments CPython passes to each slot type.
SLOT_ARITY = dict(
    getter=2, setter=3, reprfunc=1, hashfunc=1, richcmpfunc=3, binaryfunc=2, unaryfunc=1,
    ternaryfunc=3, initproc=3, newfunc=3, destructor=1, inquiry=1, lenfunc=1, ssizeargfunc=2,
    objobjargproc=3, objobjproc=2, getiterfunc=1, iternextfunc=1, descrgetfunc=3,
    descrsetfunc=3, traverseproc=3, visitproc=2, allocfunc=2, freefunc=1, getattrofunc=2,
    setattrofunc=3, ssizeobjargproc=3, getbufferproc=3, releasebufferproc=2,
    PyCFunctionWithKeywords=3, _PyCFunctionFast=3, PyCMethod=5, vectorcallfunc=4,
)
METHOD = re.compile(
    r'\{\s*"([^"]+)"\s*,\s*\(\s*PyCFunction(?:WithKeywords)?\s*\)\s*'
    r'(?:\(\s*void\s*\(\*\)\s*\(void\)\s*\)\s*)?([A-Za-z_][A-Za-z_0-9]*)\s*,\s*([A-Z_ |]+)', re.S)
SLOT_CAST = re.compile(r'\(\s*(' + "|".join(SLOT_ARITY) + r')\s*\)\s*&?\s*([A-Za-z_][A-Za-z_0-9]*)\b(?!\s*\()')


def method_arity(flags):
    flags = {f.strip() for f in flags.split("|")}
    if "METH_METHOD" in flags:
        return 5
    if "METH_FASTCALL" in flags:
        return 4 if "METH_KEYWORDS" in flags else 3
    return 3 if "METH_KEYWORDS" in flags else 2


def main():
    root = sys.argv[1]
    files = sorted(p for ext in ("c", "cpp", "c.src", "h", "h.src")
                   for p in glob.glob(f"{root}/**/*.{ext}", recursive=True))
    texts = {p: open(p, encoding="utf-8", errors="replace").read() for p in files}
    everything = "\n".join(texts.values())
    cache = {}

    def params(func):
        if func not in cache:
            m = re.search(r"\b" + re.escape(func) + r"\s*\(((?:[^()]|\([^()]*\))*)\)\s*\{", everything)
            if not m:
                cache[func] = None
            else:
                ps = m.group(1).strip()
                cache[func] = 0 if ps in ("", "void") else len(ps.split(","))
        return cache[func]

    bad = set()
    for path, text in texts.items():
        rel = os.path.relpath(path, root)
        for m in METHOD.finditer(text):
            name, func, flags = m.groups()
            n, want = params(func), method_arity(flags)
            if n is not None and n != want:
                bad.add(f"{rel}: method {name}: {func} takes {n} arguments, is called with {want} ({flags.strip()})")
        for m in SLOT_CAST.finditer(text):
            slot, func = m.groups()
            n, want = params(func), SLOT_ARITY[slot]
            if n is not None and n != want:
                bad.add(f"{rel}: ({slot}){func} takes {n} arguments, is called with {want}")
    for line in sorted(bad):
        print(line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
