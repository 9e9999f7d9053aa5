#!/usr/bin/env python3
"""pynbox's benchmark suite: the sandbox against native CPython, side by side.

    bench/run.py [--dest DEST] [--reps N] [--only NAME,...]

Builds what it needs (pynbox, the python and tests packages, an install in
DEST), then for each benchmark runs the native CPython of the same version
and source (build/native-python, built by the python recipe without PGO or
LTO), the sandbox (DEST/bin/run python) and the machine's python3,
alternating them, --reps times. Prints a table of medians (with min and
max) and the ratios sandbox/native, writes bench/results.json and draws the
ratios in bench/ratios.svg.

Compute benchmarks are pyperformance's own bodies, unchanged, from its sdist
on PyPI (pinned by sha256), run in-process by bench/pyperf.py, a stand-in
for pyperf.Runner (pyperf spawns processes, which WASI cannot do).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("PYNBOX_CACHE", Path.home() / ".cache/pynbox"))
PYPERFORMANCE = ("pyperformance", "1.14.0", "91f74393997b604375ad5b79bf569a24076d70181c076a53abad5383a238a8aa")

STARTUP = {
    "start: -c pass": "pass",
    "start + imports": "import json, re, datetime, decimal, sqlite3",
    # A native package's modules: in the sandbox, side modules loaded at
    # import (etree and libxml2, libxslt, libexslt); natively, lxml's wheel.
    "start + import lxml.etree": "import lxml.etree",
    # numpy's 21 side modules, C and C++; natively, numpy built from the
    # same sdist (native_numpy()).
    "start + import numpy": "import numpy",
}
COMPUTE = [
    "richards", "nbody", "float", "chaos", "deltablue", "go", "hexiom", "json_dumps", "json_loads",
    "regex_v8", "pidigits", "spectral_norm", "unpack_sequence", "sqlite_synth", "xml_etree",
    "nqueens", "fannkuch", "raytrace", "pickle", "deepcopy",
]
# pyperformance's xml_etree "parse" benchmark with lxml.etree as the module.
# The native baseline uses lxml's own wheel from PyPI (its libxml2 is newer
# than the sandbox's 2.9.14); the machine's python3 is left out.
LXML = ("lxml_parse", "xml_etree", ["--etree-module", "lxml.etree", "parse"])
LXML_WHEEL = ("lxml", "6.1.3")


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def cargo_target():
    return Path(os.environ.get("CARGO_TARGET_DIR", CACHE / "cargo-target"))


def prepare(dest):
    env = dict(os.environ, CARGO_TARGET_DIR=str(cargo_target()))
    print("== building pynbox, the packages and the bench example", file=sys.stderr)
    sh("cargo", "build", "--release", "--quiet", "--bin", "pynbox", "--example", "bench_api", "--example", "bench_sessions", cwd=REPO, env=env)
    pynbox = cargo_target() / "release/pynbox"
    sh(str(pynbox), "build", "python", "tests", cwd=REPO)
    sh(str(pynbox), "build", "lxml", "numpy", cwd=REPO)
    if not (dest / "bin/run").exists() or not (dest / "packages/numpy.installed").exists():
        sh(str(pynbox), "install", str(dest), "python", "tests", "lxml", "numpy", cwd=REPO)
    return pynbox


def python_api():
    """The Python package's numbers (bench/python_api.py), from the wheel
    built by scripts/build-wheel.sh in a virtualenv of the system's python3."""
    sh(str(REPO / "scripts/build-wheel.sh"), stdout=subprocess.DEVNULL)
    venv = CACHE / "bench-venv"
    if not (venv / "bin/python").exists():
        sh("/usr/bin/python3", "-m", "venv", str(venv))
    wheel = sorted((REPO / "target/wheels").glob("pynbox-*.whl"))[-1]
    sh(str(venv / "bin/pip"), "install", "--quiet", "--force-reinstall", "--no-deps", str(wheel))
    out = subprocess.run([str(venv / "bin/python"), str(REPO / "bench/python_api.py")],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def native_lxml():
    """lxml's wheel for CPython 3.13, unpacked for the native baseline."""
    name, version = LXML_WHEEL
    site = CACHE / "bench" / f"{name}-{version}-cp313"
    if not (site / "lxml").exists():
        dl = CACHE / "bench" / "downloads"
        sh(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
           "--platform", "manylinux_2_17_x86_64", "--python-version", "3.13", "--implementation", "cp",
           "--abi", "cp313", f"{name}=={version}", "-d", str(dl))
        import zipfile
        wheel = next(dl.glob(f"{name}-{version}-cp313-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            z.extractall(site)
    return site


NUMPY = ("numpy", "2.5.5", "5cddc243c75114ba845f01b1f87aca1572dbf7b6c2d88636ed3e1d2bccd7f1bf")
NUMPY_WORKLOADS = ["creation", "ufuncs", "reductions", "sorting", "matmul", "fft"]


def native_numpy(native):
    """numpy built natively from the same sdist as the sandbox's (fetched by
    `pynbox build numpy`), for the same native CPython, with numpy's
    default CPU dispatch and, as in the sandbox, no BLAS/LAPACK (lapack-lite)
    and no threads. Built once (minutes), cached by the sdist's sha256."""
    name, version, sha = NUMPY
    site = CACHE / "bench" / f"numpy-{version}-native" / "site"
    if (site / "numpy").exists():
        return site
    import hashlib
    import zipfile
    sdist = CACHE / "sources" / f"numpy-{version}.tar.gz"
    if not sdist.exists() or hashlib.sha256(sdist.read_bytes()).hexdigest() != sha:
        sys.exit(f"{sdist} is missing or not the pinned numpy: `pynbox build numpy` fetches it")
    cython = next((CACHE / "sources").glob("cython-*-py3-none-any.whl"), None)
    if cython is None:
        sys.exit("the Cython wheel is missing from ~/.cache/pynbox/sources: `pynbox build numpy` fetches it")
    print("== building numpy natively for the baseline (once)", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="numpy-native-", dir=CACHE / "bench"))
    try:
        with tarfile.open(sdist) as t:
            t.extractall(work, filter="data")
        src = work / f"numpy-{version}"
        tools = work / "tools"
        with zipfile.ZipFile(cython) as z:
            z.extractall(tools)
        (tools / "bin").mkdir()
        (tools / "bin/cython").write_text(f"#!/bin/sh\nPYTHONPATH={tools} exec {native} -m cython \"$@\"\n")
        (tools / "bin/cython").chmod(0o755)
        env = dict(os.environ, PATH=f"{tools / 'bin'}:{os.environ['PATH']}")
        sh(str(native), "vendored-meson/meson/meson.py", "setup", str(work / "build"), "-Dbuildtype=release",
           "-Db_ndebug=if-release", "-Dpython.bytecompile=-1", "-Dallow-noblas=true", "-Dblas=none", "-Dlapack=none",
           "-Ddisable-threading=true", f"--prefix={work / 'prefix'}", cwd=src, env=env, stdout=subprocess.DEVNULL)
        sh("ninja", "-C", str(work / "build"), env=env, stdout=subprocess.DEVNULL)
        sh(str(native), "vendored-meson/meson/meson.py", "install", "-C", str(work / "build"), "--destdir",
           str(work / "destdir"), "--no-rebuild", cwd=src, env=env, stdout=subprocess.DEVNULL)
        built = next((work / "destdir").rglob("site-packages/numpy")).parent
        site.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(built), str(site))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return site


def pyperformance_benchmarks():
    name, version, sha = PYPERFORMANCE
    base = CACHE / "bench" / f"{name}-{version}"
    if not base.exists():
        dl = CACHE / "bench" / "downloads"
        dl.mkdir(parents=True, exist_ok=True)
        archive = dl / f"{name}-{version}.tar.gz"
        if not archive.exists():
            sh(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
               f"{name}=={version}", "-d", str(dl))
        import hashlib
        got = hashlib.sha256(archive.read_bytes()).hexdigest()
        if got != sha:
            sys.exit(f"{archive}: sha256 {got} does not match the pinned {sha}")
        with tarfile.open(archive) as t:
            t.extractall(CACHE / "bench", filter="data")
    return base / "pyperformance/data-files/benchmarks"


def launcher():
    """bench/launch.c, built once: it measures each process from outside
    without the parent's memory counted in (see its comment)."""
    exe = CACHE / "bench" / "launch"
    src = REPO / "bench" / "launch.c"
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
        exe.parent.mkdir(parents=True, exist_ok=True)
        sh("cc", "-O2", "-o", str(exe), str(src))
    return exe


def timed(cmd, env=None):
    """Wall time (s) and peak RSS (KiB) of one process, and its stdout."""
    with tempfile.NamedTemporaryFile() as report:
        p = subprocess.run([str(launcher()), report.name, *cmd], capture_output=True, env=env)
        if p.returncode != 0:
            raise RuntimeError(f"{cmd} failed ({p.returncode}): {p.stderr.decode(errors='replace')[-2000:]}")
        ns, rss = Path(report.name).read_text().split()
    return int(ns) / 1e9, int(rss), p.stdout


def stats(xs):
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dest", type=Path, help="an install to use (default: a fresh one in a temporary directory)")
    ap.add_argument("--reps", type=int, default=5, help="repetitions of each benchmark, alternating (default 5)")
    ap.add_argument("--only", help="comma-separated benchmark names")
    ap.add_argument("--out", type=Path, default=REPO / "bench", help="where results.json and ratios.svg go")
    args = ap.parse_args()

    tmp = None
    dest = args.dest
    if dest is None:
        tmp = tempfile.mkdtemp(prefix="pynbox-bench-")
        dest = Path(tmp) / "sandbox"
    try:
        pynbox = prepare(dest)
        run(args, dest, pynbox)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def run(args, dest, pynbox):
    native = REPO / "build/native-python/bin/python3"
    if not native.exists():
        sys.exit(f"{native} is missing: `pynbox build python` makes it")
    # The machine's python3, resolved past wrappers such as pyenv's shim.
    system = subprocess.run(["python3", "-c", "import sys; print(sys.executable)"],
                            capture_output=True, text=True, check=True).stdout.strip()
    sandbox = [str(dest / "bin/run")]
    only = set(args.only.split(",")) if args.only else None
    results = {"baseline": "CPython 3.13.5, same source as the sandbox, built natively without PGO/LTO (build/native-python)",
               "system_python": subprocess.run([system, "-VV"], capture_output=True, text=True).stdout.strip(),
               "benchmarks": {}}
    clean_env = {"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "random"}

    # Whole-process start, with and without imports.
    for name, code in STARTUP.items():
        if only and name not in only:
            continue
        cmds = {
            "native": [str(native), "-c", code],
            "sandbox": sandbox + ["python", "-c", code],
            "system": [system, "-c", code],
        }
        envs = {k: clean_env for k in cmds}
        if "lxml" in code:
            del cmds["system"]
            envs["native"] = dict(clean_env, PYTHONPATH=str(native_lxml()))
        if "numpy" in code:
            del cmds["system"]
            envs["native"] = dict(clean_env, PYTHONPATH=str(native_numpy(native)))
        rows = {k: [] for k in cmds}
        rss = {k: [] for k in cmds}
        for _ in range(3):  # warm the page cache
            for k, c in cmds.items():
                timed(c, envs[k])
        for _ in range(max(args.reps, 11)):
            for k, c in cmds.items():
                dt, r, _ = timed(c, envs[k])
                rows[k].append(dt)
                rss[k].append(r)
        results["benchmarks"][name] = {k: stats(v) for k, v in rows.items()}
        results["benchmarks"][name]["peak_rss_kib"] = {k: max(v) for k, v in rss.items()}
        report(name, results["benchmarks"][name])

    # pyperformance bodies, in process.
    bm_root = pyperformance_benchmarks()
    stub = REPO / "bench"
    # Some benchmarks write temporary files: the sandbox gets a /tmp.
    scratch = tempfile.mkdtemp(prefix="pynbox-bench-tmp-")
    # Benchmarks that hold several take the name of the one to run.
    args_for = {"pickle": ["pickle"]}
    jobs = [(name, name, args_for.get(name, [])) for name in COMPUTE] + [LXML]
    # numpy workloads (bench/numpy_bench.py), named numpy_*.
    jobs += [(f"numpy_{w}", None, [w]) for w in NUMPY_WORKLOADS]
    for name, bm_name, extra in jobs:
        if only and name not in only:
            continue
        bm = bm_root / f"bm_{bm_name}" if bm_name else stub
        script = "run_benchmark.py" if bm_name else "numpy_bench.py"
        native_path = str(stub)
        if name == LXML[0]:
            native_path += os.pathsep + str(native_lxml())
        if name.startswith("numpy_"):
            native_path += os.pathsep + str(native_numpy(native))
        cmds = {
            "native": ([str(native), str(bm / script), "--values", "3", *extra], dict(clean_env, PYTHONPATH=native_path)),
            "sandbox": (sandbox + ["-m", f"{dest / 'root'}:/:ro", "-m", f"{bm}:/bm:ro", "-m", f"{stub}:/stub:ro",
                                   "-m", f"{scratch}:/tmp:rw", "-E", "PYTHONPATH=/stub", "python", f"/bm/{script}", "--values", "3", *extra], clean_env),
        }
        if name != LXML[0] and bm_name:
            cmds["system"] = ([system, str(bm / script), "--values", "3", *extra], dict(clean_env, PYTHONPATH=str(stub)))
        rows = {k: [] for k in cmds}
        try:
            for _ in range(max(1, args.reps // 2)):
                for k, (c, env) in cmds.items():
                    _, _, out = timed(c, env)
                    line = [l for l in out.decode().splitlines() if l.startswith("PYPERF_STUB ")][-1]
                    rows[k].extend(json.loads(line[len("PYPERF_STUB "):])["values"])
        except RuntimeError as e:
            print(f"{name}: skipped: {e}", file=sys.stderr)
            continue
        results["benchmarks"][name] = {k: stats(v) for k, v in rows.items()}
        report(name, results["benchmarks"][name])

    api = subprocess.run([str(cargo_target() / "release/examples/bench_api"), str(dest)],
                         capture_output=True, text=True, check=True)
    results["api"] = json.loads(api.stdout.strip().splitlines()[-1])
    sessions = subprocess.run([str(cargo_target() / "release/examples/bench_sessions"), str(dest)],
                              capture_output=True, text=True, check=True)
    results["sessions"] = json.loads(sessions.stdout.strip().splitlines()[-1])
    results["python_api"] = python_api()
    results["first_run"] = first_run(pynbox, dest)

    compute = [b for b in COMPUTE + [LXML[0]] if b in results["benchmarks"]]
    numpy_ratios = [results["benchmarks"][b]["sandbox"]["median"] / results["benchmarks"][b]["native"]["median"]
                    for b in (f"numpy_{w}" for w in NUMPY_WORKLOADS) if b in results["benchmarks"]]
    if numpy_ratios:
        results["numpy_geomean_ratio"] = statistics.geometric_mean(numpy_ratios)
    ratios = [results["benchmarks"][b]["sandbox"]["median"] / results["benchmarks"][b]["native"]["median"] for b in compute]
    if ratios:
        results["compute_geomean_ratio"] = statistics.geometric_mean(ratios)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    draw(results, args.out / "ratios.svg")
    summary(results)


def first_run(pynbox, dest):
    """The first run after install without the install's precompiled code:
    the cost of compiling the interpreter."""
    with tempfile.TemporaryDirectory() as cache:
        dt, rss, _ = timed([str(pynbox), "run", "--cache-dir", cache, "-m", f"{dest / 'root'}:/:ro", "python", "-c", "pass"])
    dt2, rss2, _ = timed([str(dest / "bin/run"), "python", "-c", "pass"])
    return {"compile_and_run_s": dt, "compile_peak_rss_kib": rss, "precompiled_run_s": dt2, "precompiled_peak_rss_kib": rss2}


def report(name, r):
    n, s = r["native"]["median"], r["sandbox"]["median"]
    system = f"   system python3 {fmt(r['system'])} ({r['system']['median'] / n:4.2f}x)" if "system" in r else ""
    print(f"{name:<22} native {fmt(r['native'])}  sandbox {fmt(r['sandbox'])}  ratio {s / n:5.2f}x{system}", flush=True)


def fmt(s):
    unit, name = (1e3, "ms") if s["median"] >= 1e-3 else (1e6, "us")
    return f"{s['median'] * unit:8.2f} {name} [{s['min'] * unit:.2f}-{s['max'] * unit:.2f}]"


def summary(results):
    print()
    print(f"{'benchmark':<22} {'native us':>11} {'sandbox us':>11} {'ratio':>7} {'system us':>11} {'ratio':>7}")
    for name, r in results["benchmarks"].items():
        n, s = r["native"]["median"] * 1e6, r["sandbox"]["median"] * 1e6
        y = f"{r['system']['median'] * 1e6:11.1f} {r['system']['median'] * 1e6 / n:6.2f}x" if "system" in r else f"{'n/a':>11}"
        print(f"{name:<22} {n:11.1f} {s:11.1f} {s / n:6.2f}x {y}")
    if "compute_geomean_ratio" in results:
        worst = max((r["sandbox"]["median"] / r["native"]["median"], k) for k, r in results["benchmarks"].items()
                    if not k.startswith(("start", "numpy_")))
        print(f"\ncompute, geometric mean of sandbox/native: {results['compute_geomean_ratio']:.2f}x (target 1.3x); "
              f"worst {worst[1]} {worst[0]:.2f}x (target 2x)")
    if "numpy_geomean_ratio" in results:
        print(f"numpy workloads, geometric mean of sandbox/native: {results['numpy_geomean_ratio']:.2f}x "
              "(native: the same numpy with its x86 SIMD dispatch; the sandbox's has none)")
    st = results["benchmarks"].get("start: -c pass")
    if st:
        print(f"peak RSS of -c pass: sandbox {st['peak_rss_kib']['sandbox'] / 1024:.1f} MiB, "
              f"native {st['peak_rss_kib']['native'] / 1024:.1f} MiB "
              f"({st['peak_rss_kib']['sandbox'] / st['peak_rss_kib']['native']:.2f}x, target 2x)")
    a = results["api"]
    print(f"in-process fresh sandbox: python -c pass {a['fresh_python_pass_ms']:.2f} ms pre-initialised "
          f"({a['fresh_plain_python_pass_ms']:.2f} ms plain), minimal guest "
          f"{a['fresh_minimal_guest_ms']:.3f} ms; {a['live_sandboxes']} live Python sandboxes, "
          f"{a['private_mib_per_sandbox']:.1f} MiB private each")
    se = results.get("sessions")
    if se:
        print(f"sessions: start {se['session_start_ms']:.1f} ms, eval('1+1') round trip {se['eval_round_trip_us']:.0f} us "
              f"(goal 100), host function round trip {se['host_call_round_trip_us']:.0f} us; a session with json and a 10 MiB "
              f"list saves in {se['save_10mib_list_ms']:.0f} ms to {se['saved_10mib_list_bytes'] / 2**20:.1f} MiB and restores "
              f"in {se['restore_10mib_list_ms']:.1f} ms (goal 10); {se['live_sessions']} live sessions, "
              f"{se['private_mib_per_session']:.1f} MiB each")
        if "pool_take_pass_us" in se:
            print(f"fresh sandbox from a session pool: take + exec('pass') {se['pool_take_pass_us']:.0f} us (goal under 1 ms); "
                  f"{se['fresh_sessions_per_second_per_core']:.0f} fresh sessions started per second per core")
    pa = results.get("python_api")
    if pa:
        print(f"from Python: pynbox.run('pass') {pa['run_pass_ms']:.1f} ms against subprocess.run([sys.executable, '-c', 'pass']) "
              f"{pa['subprocess_pass_ms']:.1f} ms ({pa['run_vs_subprocess']:.2f}x); Session.eval('1+1') {pa['session_eval_us']:.0f} us; "
              f"save {pa['save_10mib_list_ms']:.0f} ms, restore {pa['restore_10mib_list_ms']:.1f} ms (10 MiB list)")
    f = results["first_run"]
    print(f"first run without precompiled code: {f['compile_and_run_s']:.1f} s, peak {f['compile_peak_rss_kib'] / 1024:.0f} MiB; "
          f"precompiled: {f['precompiled_run_s'] * 1e3:.0f} ms")


def draw(results, path):
    """A horizontal bar chart of sandbox/native ratios, as plain SVG."""
    items = [(k, v["sandbox"]["median"] / v["native"]["median"]) for k, v in results["benchmarks"].items()]
    w, row, left = 720, 22, 170
    h = 60 + row * len(items)
    top = max([r for _, r in items] + [2.0])
    scale = (w - left - 60) / top
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<text x="10" y="20" font-size="14">pynbox sandbox time / native CPython 3.13.5 time (lower is better)</text>']
    for x in (1.0, 1.3, 2.0):
        if x <= top:
            px = left + x * scale
            out.append(f'<line x1="{px:.1f}" y1="30" x2="{px:.1f}" y2="{h - 20}" stroke="#999" stroke-dasharray="4"/>')
            out.append(f'<text x="{px - 8:.1f}" y="{h - 6}">{x}x</text>')
    for i, (name, r) in enumerate(items):
        y = 36 + i * row
        color = "#3a7" if r <= 1.3 else "#d84"
        out.append(f'<text x="10" y="{y + 13}">{name}</text>')
        out.append(f'<rect x="{left}" y="{y}" width="{r * scale:.1f}" height="{row - 6}" fill="{color}"/>')
        out.append(f'<text x="{left + r * scale + 4:.1f}" y="{y + 13}">{r:.2f}x</text>')
    out.append("</svg>")
    path.write_text("\n".join(out))


if __name__ == "__main__":
    main()
