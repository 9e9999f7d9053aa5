# The PEP 517 front end that pynbox runs inside the sandbox to build a
# source distribution (src/pypi/build.rs). It calls one hook of the
# backend and writes its answer to /build/out/.pynbox-hook.json, which the
# host reads as untrusted data: everything here runs with the sdist's code.
#
# argv: HOOK SOURCE_DIR BACKEND BACKEND_PATH_JSON
import json
import os
import sys

# The backend's output, in order, on one stream (the host shows its tail
# when the build fails). WASI has no dup2: Python-level writes only.
sys.stdout = sys.stderr

hook, source, backend_name, backend_path = sys.argv[1:5]
backend_path = json.loads(backend_path)
# `python -c` puts the working directory first on sys.path; a front end
# runs hooks from its own script, so the source tree is importable only
# through backend-path (PEP 517) or what the backend adds itself.
sys.path[:] = [p for p in sys.path if p not in ("", ".")]
sys.path[:0] = [os.path.join(source, p) for p in backend_path] + ["/build/env"]
os.chdir(source)

module, _, attrs = backend_name.partition(":")
import importlib

backend = importlib.import_module(module.strip())
for attr in filter(None, attrs.strip().split(".")):
    backend = getattr(backend, attr)

if hook == "get_requires_for_build_wheel":
    f = getattr(backend, hook, None)
    answer = list(f({})) if f is not None else []
elif hook == "build_wheel":
    answer = backend.build_wheel("/build/out", {})
else:
    raise SystemExit("unknown hook " + hook)

with open("/build/out/.pynbox-hook.json", "w") as f:
    json.dump(answer, f)
