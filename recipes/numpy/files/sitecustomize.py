"""Makes the native python that runs numpy's build describe the wasm one.

recipes/numpy/build.sh runs meson's python introspection and numpy's code
generators with the native CPython of the same source, with
_PYTHON_SYSCONFIGDATA_NAME naming the wasm build's configuration (EXT_SUFFIX
.cpython-313-wasm32-wasi.so, SIZEOF_VOID_P 4, ...), copied beside this file.
sysconfig's install paths, though, come from the running interpreter's own
prefix; the two below point the header directory meson asks for at the wasm
CPython's installed headers, named by PYNBOX_WASM_PYTHON_PREFIX. ("base" and
"platbase" must stay: sysconfig recomputes everything when "base" differs
from sys.prefix.)
"""
import os
import sysconfig

_prefix = os.environ.get("PYNBOX_WASM_PYTHON_PREFIX")
if _prefix:
    _vars = sysconfig.get_config_vars()
    _vars["installed_base"] = _prefix
    _vars["installed_platbase"] = _prefix
