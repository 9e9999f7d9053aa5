"""`python -m pynbox_regrtest ARGS` is `python -m test ARGS` (CPython's
regrtest) with the python-tests package's test support modules.

The python package is configured with --disable-test-modules (its users do
not need them), so sysconfig says TEST_MODULES=no, and test.support then
skips the C API tests (test_capi) even where the modules exist. The
python-tests package installs them (native modules in lib-dynload/): the
imports below prove it (they fail without the package), and only then is
sysconfig told, before test.support reads it.
"""

import sysconfig

import _testcapi  # noqa: F401
import _testinternalcapi  # noqa: F401

sysconfig.get_config_vars()["TEST_MODULES"] = "yes"

from test.libregrtest.main import main  # noqa: E402

main(_add_python_opts=True)
