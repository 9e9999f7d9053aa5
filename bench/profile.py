#!/usr/bin/env python3
"""Where a benchmark's time goes inside the sandbox (issue 15, lever 1).

    bench/profile.py json_loads [spectral_norm ...] [--dest DEST]

Runs pyperformance's benchmark under `perf record` in the sandbox (as
bench/run.py runs it: DEST/bin/run, the pre-initialised python) and
prints the functions that take the most samples, grouped into what they
are: the bytecode interpreter's dispatch, the C library's string and
memory functions, allocation, float and number conversion, the host
(Wasmtime and pynbox), and the rest. Wasmtime's compiled code is an ELF
file with a symbol per wasm function, named from the module's name
section, so perf resolves it without help. Needs `perf` and a DEST made
by bench/run.py or `pynbox install DEST python` (default: /tmp/sdest2).
"""

import argparse
import collections
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from run import pyperformance_benchmarks  # noqa: E402

GROUPS = [
    ("dispatch (_PyEval_EvalFrameDefault)", r"_PyEval_EvalFrameDefault"),
    ("libc string/memory (memcpy, memcmp, memchr, strlen, memset, memmove)",
     r"\b(memcpy|memcmp|memchr|strlen|memset|memmove|strchr|strcmp|__stpcpy|wmem\w*)\b"),
    ("allocation (pymalloc, dlmalloc, free lists)",
     r"(_PyObject_Malloc|_PyObject_Free|pymalloc|PyObject_Malloc|PyObject_Free|PyMem_\w+|\bmalloc\b|\bfree\b|dlmalloc|dlfree|realloc|calloc|_PyObject_GC_(New|Alloc|Link)|gc_alloc|_PyMem_\w+)"),
    ("reference counting and deallocation", r"(_Py_Dealloc|\w+_dealloc|_Py_DecRef|Py_DecRef|subtype_dealloc)"),
    ("float and number conversion", r"(_Py_dg_\w+|PyOS_string_to_double|float_\w+|PyFloat_\w+|long_\w+|_PyLong_\w+|PyLong_\w+|__\w+tf\w*|__fix\w+|__float\w+)"),
    ("dicts and hashing", r"(dict\w*|_Py_dict_lookup\w*|unicodekeys_lookup\w*|lookdict\w*|_Py_HashBytes|siphash\w*|unicode_hash|PyObject_Hash|insertdict)"),
    ("strings (unicode objects)", r"(unicode\w*|PyUnicode\w*|_PyUnicode\w*|ucs\d\w*|asciilib\w*)"),
    ("host: the kernel (page faults), Wasmtime and pynbox", r"^host:"),
]


def classify(sym):
    for name, pat in GROUPS:
        if re.search(pat, sym):
            return name
    return "other"


def profile(bm, dest):
    bm_root = pyperformance_benchmarks()
    with tempfile.TemporaryDirectory() as scratch, tempfile.NamedTemporaryFile(suffix=".data") as data:
        cmd = [str(dest / "bin/run"), "--no-os-sandbox",
               "-m", f"{dest / 'root'}:/:ro", "-m", f"{bm_root / f'bm_{bm}'}:/bm:ro",
               "-m", f"{REPO / 'bench'}:/stub:ro", "-m", f"{scratch}:/tmp:rw",
               "-E", "PYTHONPATH=/stub", "python", "/bm/run_benchmark.py", "--values", "3"]
        if bm == "pickle":
            cmd.append("pickle")
        subprocess.run(["perf", "record", "-q", "-F", "2999", "-o", data.name, *cmd],
                       check=True, stdout=subprocess.DEVNULL)
        report = subprocess.run(["perf", "report", "-i", data.name, "--no-children", "--sort", "sym",
                                 "--stdio", "-q", "--percent-limit", "0.05"],
                                capture_output=True, text=True, check=True).stdout
    rows = []
    for line in report.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+\[[.k]\]\s+(.*)", line)
        if m:
            sym = re.sub(r"^wasm\[0\]::function\[\d+\]::", "", m.group(2).strip())
            sym_full = m.group(2).strip()
            # Host symbols keep a marker: the groups tell them apart.
            rows.append((float(m.group(1)), sym if sym_full.startswith("wasm[") else f"host:{sym_full}"))
    groups = collections.Counter()
    for pct, sym in rows:
        groups[classify(sym)] += pct
    return rows, groups


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("benchmarks", nargs="+")
    ap.add_argument("--dest", type=Path, default=Path("/tmp/sdest2"))
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    for bm in args.benchmarks:
        rows, groups = profile(bm, args.dest)
        print(f"\n== {bm}: by kind (% of samples)")
        for g, pct in groups.most_common():
            print(f"  {pct:5.1f}%  {g}")
        host = [(p, s) for p, s in rows if s.startswith("host:")]
        print(f"== {bm}: top host functions: " + ", ".join(f"{s[5:]} {p:.1f}%" for p, s in host[:5]))
        print(f"== {bm}: top functions")
        for pct, sym in rows[: args.top]:
            print(f"  {pct:5.1f}%  {sym}  [{classify(sym)}]")


if __name__ == "__main__":
    main()
