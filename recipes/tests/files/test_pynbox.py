"""pynbox's checks from inside the sandbox.

Run by DEST/bin/test_pynbox as `python /test/test_pynbox.py`, with the
install's root mounted read-only at / and a fresh empty directory mounted
read-write at /scratch. Each test prints its result; the last line says how
many passed and failed, and the exit status is non-zero on any failure.
"""

import errno
import os
import sys
import time
import unittest

SCRATCH = "/scratch"
STDLIB = os.path.dirname(os.__file__)


class BlockedServices(unittest.TestCase):
    """What WASI cannot do must fail with a Python exception, not a crash."""

    def test_no_network_sockets(self):
        import socket

        with self.assertRaises(OSError):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.connect(("127.0.0.1", 80))

    def test_no_pipes(self):
        pipe = getattr(os, "pipe", None)
        if pipe is not None:
            with self.assertRaises(OSError):
                pipe()

    def test_no_subprocess(self):
        import subprocess

        with self.assertRaises(OSError):
            subprocess.run(["/bin/sh", "-c", "true"])

    def test_no_fork(self):
        self.assertFalse(hasattr(os, "fork"))

    def test_no_kill(self):
        kill = getattr(os, "kill", None)
        if kill is not None:
            with self.assertRaises(OSError):
                kill(1, 9)

    def test_no_waitpid(self):
        waitpid = getattr(os, "waitpid", None)
        if waitpid is not None:
            with self.assertRaises(OSError):
                waitpid(-1, 0)

    def test_no_threads(self):
        import threading

        t = threading.Thread(target=lambda: None)
        with self.assertRaises(RuntimeError):
            t.start()

    def test_no_ctypes(self):
        with self.assertRaises(ImportError):
            import ctypes  # noqa: F401

    def test_no_host_environment(self):
        for name in ("HOME", "PATH", "USER", "SHELL"):
            self.assertNotIn(name, os.environ)


class Filesystem(unittest.TestCase):
    def test_root_holds_only_installed_packages(self):
        top = set(os.listdir("/"))
        self.assertIn("python", top)
        self.assertIn("test", top)
        self.assertIn("scratch", top)
        for host_dir in ("home", "etc", "usr", "proc", "dev", "root", "tmp"):
            self.assertNotIn(host_dir, top)

    def test_host_files_are_out_of_reach(self):
        for path in ("/etc/passwd", "/proc/self/environ", "/../../etc/passwd",
                     "/python/../../etc/passwd", "/home"):
            with self.assertRaises(OSError, msg=path):
                with open(path, "rb") as f:
                    f.read()

    def test_reads_the_stdlib(self):
        with open(os.path.join(STDLIB, "os.py"), encoding="utf-8") as f:
            self.assertIn("def makedirs", f.read())

    def test_root_is_read_only(self):
        for attempt in (lambda: open("/python/new.txt", "w"),
                        lambda: os.mkdir("/python/newdir"),
                        lambda: os.remove(os.path.join(STDLIB, "os.py")),
                        lambda: os.rename(os.path.join(STDLIB, "os.py"), "/python/x.py"),
                        lambda: os.chmod(os.path.join(STDLIB, "os.py"), 0o777),
                        lambda: os.utime(os.path.join(STDLIB, "os.py"), (0, 0))):
            with self.assertRaises(OSError) as cm:
                attempt()
            # What the docs promise for every change to a read-only mount.
            self.assertEqual(cm.exception.errno, errno.EROFS, cm.exception)

    def test_scratch_is_writable(self):
        path = os.path.join(SCRATCH, "hello.txt")
        with open(path, "w") as f:
            f.write("hello from the sandbox")
        with open(path) as f:
            self.assertEqual(f.read(), "hello from the sandbox")
        os.mkdir(os.path.join(SCRATCH, "d"))
        os.rename(path, os.path.join(SCRATCH, "d", "moved.txt"))
        self.assertEqual(os.listdir(os.path.join(SCRATCH, "d")), ["moved.txt"])
        os.remove(os.path.join(SCRATCH, "d", "moved.txt"))
        os.rmdir(os.path.join(SCRATCH, "d"))

    def test_symlinks_cannot_be_made(self):
        with self.assertRaises(PermissionError):
            os.symlink("/etc/passwd", os.path.join(SCRATCH, "link"))

    def test_prefix(self):
        self.assertEqual(sys.prefix, "/python")
        self.assertTrue(STDLIB.startswith("/python/lib/python3.13"))


class TimeAndData(unittest.TestCase):
    def test_time_is_plausible(self):
        now = time.time()
        self.assertGreater(now, 1.7e9)  # after 2023
        self.assertLess(now, 4.1e9)  # before 2100
        t0 = time.monotonic()
        time.sleep(0.01)
        self.assertGreaterEqual(time.monotonic() - t0, 0.009)

    def test_datetime(self):
        import datetime

        d = datetime.datetime.now(datetime.timezone.utc)
        self.assertGreaterEqual(d.year, 2024)
        self.assertEqual((datetime.date(2024, 3, 1) - datetime.date(2024, 2, 1)).days, 29)

    def test_zoneinfo(self):
        import datetime
        import zoneinfo

        paris = zoneinfo.ZoneInfo("Europe/Paris")
        winter = datetime.datetime(2024, 1, 15, 12, tzinfo=paris)
        summer = datetime.datetime(2024, 7, 15, 12, tzinfo=paris)
        self.assertEqual(winter.utcoffset(), datetime.timedelta(hours=1))
        self.assertEqual(summer.utcoffset(), datetime.timedelta(hours=2))
        self.assertIn("America/New_York", zoneinfo.available_timezones())

    def test_array(self):
        import array

        a = array.array("i", range(10))
        a.append(10)
        self.assertEqual(sum(a), 55)
        self.assertEqual(a.tobytes()[:4], (0).to_bytes(4, sys.byteorder))

    def test_hashlib(self):
        import hashlib

        expected = {
            "md5": "900150983cd24fb0d6963f7d28e17f72",
            "sha1": "a9993e364706816aba3e25717850c26c9cd0d89d",
            "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "sha512": "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
                      "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
            "sha3_256": "3a985da74fe225b2045c172d6bd390bd855f086e3e9d525b46bfe24511431532",
            "blake2b": "ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d1"
                       "7d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923",
            "blake2s": "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982",
        }
        for name, digest in expected.items():
            self.assertEqual(hashlib.new(name, b"abc").hexdigest(), digest, name)

    def test_zlib_round_trip(self):
        import zlib

        data = os.urandom(1000) * 50
        packed = zlib.compress(data, 9)
        self.assertLess(len(packed), len(data) // 10)
        self.assertEqual(zlib.decompress(packed), data)
        self.assertEqual(zlib.crc32(b"hello"), 0x3610A686)

    def test_bz2_and_lzma_round_trip(self):
        import bz2
        import lzma

        data = b"pynbox " * 10000
        self.assertEqual(bz2.decompress(bz2.compress(data)), data)
        self.assertEqual(lzma.decompress(lzma.compress(data)), data)
        self.assertEqual(lzma.decompress(lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_SHA256)), data)

    def test_sqlite3_on_a_file(self):
        import sqlite3

        path = os.path.join(SCRATCH, "t.db")
        db = sqlite3.connect(path)
        db.execute("create table t (k integer primary key, v text)")
        db.executemany("insert into t (v) values (?)", [(str(i),) for i in range(1000)])
        db.commit()
        # Two more readers of the same file at once, in this one process.
        r1 = sqlite3.connect(path)
        r2 = sqlite3.connect(path)
        c1 = r1.execute("select count(*), sum(k) from t")
        c2 = r2.execute("select v from t where k = 500")
        self.assertEqual(c1.fetchone(), (1000, 500500))
        self.assertEqual(c2.fetchone(), ("499",))
        db.execute("update t set v = 'x' where k = 1")
        db.commit()
        self.assertEqual(r1.execute("select v from t where k = 1").fetchone(), ("x",))
        for c in (db, r1, r2):
            c.close()
        os.remove(path)

    def test_decimal(self):
        import decimal

        decimal.getcontext().prec = 50
        self.assertEqual(str(decimal.Decimal(1) / decimal.Decimal(7))[:12], "0.1428571428")
        self.assertEqual(decimal.Decimal("0.1") + decimal.Decimal("0.2"), decimal.Decimal("0.3"))
        import _decimal  # the C implementation, not _pydecimal
        self.assertIs(decimal.Decimal, _decimal.Decimal)

    def test_xml(self):
        import xml.etree.ElementTree as ET
        import pyexpat

        root = ET.fromstring("<a><b x='1'>text</b><b x='2'/></a>")
        self.assertEqual([b.get("x") for b in root.iter("b")], ["1", "2"])
        self.assertEqual(ET.tostring(root.find("b")), b'<b x="1">text</b>')
        self.assertTrue(pyexpat.EXPAT_VERSION.startswith("expat_"))
        import _elementtree  # noqa: F401

    def test_unicodedata(self):
        import unicodedata

        self.assertEqual(unicodedata.name("\u00e9"), "LATIN SMALL LETTER E WITH ACUTE")
        self.assertEqual(unicodedata.normalize("NFD", "\u00e9"), "e\u0301")

    def test_json_pickle_struct_binascii(self):
        import binascii
        import json
        import pickle
        import struct

        obj = {"a": [1, 2.5, None, True], "b": {"c": "\u2603"}}
        self.assertEqual(json.loads(json.dumps(obj)), obj)
        self.assertEqual(pickle.loads(pickle.dumps(obj, protocol=5)), obj)
        self.assertEqual(struct.unpack("<iQd", struct.pack("<iQd", -1, 2**63, 0.5)), (-1, 2**63, 0.5))
        self.assertEqual(binascii.hexlify(b"\x01\xff"), b"01ff")
        import _json
        import _pickle  # noqa: F401
        self.assertIsNotNone(_json.scanstring)

    def test_math_and_random(self):
        import cmath
        import math
        import random

        self.assertAlmostEqual(math.gamma(5), 24.0)
        self.assertAlmostEqual(cmath.exp(1j * math.pi).real, -1.0)
        a = random.random()
        b = random.random()
        self.assertNotEqual(a, b)
        r = random.Random(42)
        self.assertEqual(r.randrange(1000), 654)

    def test_select(self):
        import select

        self.assertTrue(hasattr(select, "select"))

    def test_randomness_is_fresh(self):
        self.assertNotEqual(os.urandom(16), os.urandom(16))


# Modules that cannot work on WASI, and why. Importing any other module of
# the shipped stdlib must succeed.
EXPECTED_IMPORT_FAILURES = {
    "ctypes": "no _ctypes: WASI cannot load or call native code",
    "curses": "no _curses: no terminal library",
    "dbm.gnu": "no _gdbm",
    "dbm.ndbm": "no _dbm",
    "readline": "no readline library",
    "ssl": "no _ssl: no OpenSSL and no network",
    "multiprocessing.forkserver": "no _multiprocessing: no processes",
    "multiprocessing.heap": "no mmap",
    "multiprocessing.resource_tracker": "no _multiprocessing: no processes",
    "multiprocessing.sharedctypes": "no _ctypes",
    "multiprocessing.popen_fork": "no fork",
    "multiprocessing.popen_forkserver": "no fork",
    "multiprocessing.popen_spawn_posix": "no _posixshmem / processes",
    "multiprocessing.popen_spawn_win32": "Windows only",
    "multiprocessing.shared_memory": "no _posixshmem",
    "multiprocessing.synchronize": "no _multiprocessing.SemLock",
    "pty": "no termios / fork",
    "tty": "no termios",
    "asyncio.windows_events": "Windows only",
    "asyncio.windows_utils": "Windows only",
    "encodings.mbcs": "Windows only",
    "encodings.oem": "Windows only",
    "msilib": "Windows only",
    "winreg": "Windows only",
    "_winapi": "Windows only",
    "winsound": "Windows only",
    "turtle": "tkinter is not shipped",
}

# Modules whose import has visible side effects (printing, opening a browser).
SKIP_IMPORT = {"this", "antigravity"}


class BuiltinModules(unittest.TestCase):
    """The standard library's C modules are linked into the interpreter
    and registered as built-in modules."""

    def test_c_modules_are_built_in(self):
        for name in ("_sqlite3", "zlib", "_decimal", "pyexpat", "_json", "_sha2"):
            self.assertIn(name, sys.builtin_module_names)
            self.assertEqual(__import__(name).__spec__.origin, "built-in")

    def test_package_modules_load_from_site_packages_when_installed(self):
        # With the lxml package, lxml.etree is an extension module file that
        # loads into this same interpreter.
        try:
            from lxml import etree
        except ImportError:
            self.skipTest("lxml is not installed")
        self.assertTrue(etree.__spec__.origin.endswith("/lxml/etree.cpython-313-wasm32-wasi.so"))
        self.assertEqual(etree.XML("<a><b/></a>").xpath("count(//b)"), 1.0)


class Stdlib(unittest.TestCase):
    def test_every_shipped_module_imports(self):
        import importlib
        import pkgutil

        names = []
        for info in pkgutil.walk_packages([STDLIB], onerror=lambda n: None):
            if info.name.startswith(("test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3")):
                continue
            if info.name.endswith("__main__") or ".tests" in info.name or info.name.startswith("_"):
                continue
            if info.name in SKIP_IMPORT:
                continue
            names.append(info.name)
        self.assertGreater(len(names), 300)
        unexpected = []
        import warnings
        warnings.simplefilter("ignore", DeprecationWarning)  # sre_compile and friends
        for name in sorted(names):
            try:
                importlib.import_module(name)
            except BaseException as e:  # noqa: B902 - some modules raise SystemExit-like errors
                if name in EXPECTED_IMPORT_FAILURES or name.split(".")[0] in EXPECTED_IMPORT_FAILURES:
                    continue
                unexpected.append(f"{name}: {type(e).__name__}: {e}")
        self.assertEqual(unexpected, [], "\n".join(unexpected))

    def test_expected_import_failures_still_fail(self):
        # A module that imports now must leave the list, so that the list
        # never hides a module that broke for another reason.
        import importlib
        import warnings
        warnings.simplefilter("ignore", DeprecationWarning)
        stale = []
        for name in sorted(EXPECTED_IMPORT_FAILURES):
            try:
                importlib.import_module(name)
            except BaseException:  # noqa: B902 - as above
                continue
            stale.append(name)
        self.assertEqual(stale, [], "these import now: remove them from EXPECTED_IMPORT_FAILURES")


NATIVE = "/test/native"


class NativeModules(unittest.TestCase):
    """C extension modules as wasm side modules, loaded at import by the
    host's dynamic linker through CPython's ordinary extension machinery."""

    @classmethod
    def setUpClass(cls):
        if NATIVE not in sys.path:
            sys.path.insert(0, NATIVE)

    def test_found_and_loaded_like_any_extension_module(self):
        import importlib.machinery
        import importlib.util

        self.assertIn(".cpython-313-wasm32-wasi.so", importlib.machinery.EXTENSION_SUFFIXES)
        spec = importlib.util.find_spec("pynbox_ext")
        self.assertIsInstance(spec.loader, importlib.machinery.ExtensionFileLoader)
        import pynbox_ext

        self.assertEqual(pynbox_ext.__file__, NATIVE + "/pynbox_ext.cpython-313-wasm32-wasi.so")
        self.assertEqual(pynbox_ext.__doc__, "pynbox's test extension module")

    def test_calls_into_the_module_and_back(self):
        import pynbox_ext

        self.assertEqual(pynbox_ext.greet(), "hello from a side module")  # relocated data
        self.assertEqual(pynbox_ext.sort_ints([5, -1, 3, 0]), [-1, 0, 3, 5])  # libc calls back
        self.assertEqual(pynbox_ext.was_constructed(), 42)  # constructors ran
        with self.assertRaisesRegex(ValueError, "raised in C"):
            pynbox_ext.fail()
        c = pynbox_ext.Counter()
        self.assertEqual((c.bump(), c.bump()), (1, 2))
        self.assertTrue(pynbox_ext.same_function_addresses())

    def test_c_library_string_scanners_agree_with_plain_loops(self):
        # The interpreter's memchr, strlen, memcmp and friends are wasm SIMD
        # (16 aligned bytes at a time, reading past the string's ends):
        # every alignment and length, the byte found or not.
        import pynbox_ext

        pynbox_ext.string_functions_agree()
        # And from Python, through the interpreter's own callers (find and
        # rfind of one byte call memchr and memrchr from `start`, so at
        # every alignment; comparisons call memcmp).
        for n in range(80):
            body = bytes(97 + i % 26 for i in range(n))
            for pad in range(17):
                data = b"." * pad + body
                for ch in (b"a", b"z", b"\x80"):
                    found = [i for i, c in enumerate(body) if c == ch[0]]
                    self.assertEqual(data.find(ch, pad), pad + found[0] if found else -1, (n, pad, ch))
                    self.assertEqual(data.rfind(ch, pad), pad + found[-1] if found else -1, (n, pad, ch))
            if n:
                other = bytearray(body)
                other[n // 2] ^= 1
                self.assertNotEqual(body, bytes(other))
                self.assertEqual(body < bytes(other), body[n // 2] < other[n // 2])

    def test_native_packages_combine_in_one_run(self):
        # lxml (C, with three shared libraries) and numpy (C and C++) loaded
        # into this one interpreter, working on the same data.
        try:
            import numpy
            from lxml import etree
        except ImportError as e:
            self.skipTest(f"needs the lxml and numpy packages: {e}")
        import pynbox_ext

        doc = etree.XML("<r>" + "".join(f"<v>{i}</v>" for i in range(1, 101)) + "</r>")
        values = numpy.array([float(v.text) for v in doc.iterfind("v")])
        self.assertEqual(values.sum(), 5050.0)
        self.assertEqual(numpy.sort(values[::-1])[:3].tolist(), [1.0, 2.0, 3.0])  # C++ sort
        self.assertEqual(numpy.unique(values % 7).size, 7)  # C++ hash set
        self.assertAlmostEqual(abs(numpy.fft.fft(values)[0]), 5050.0)  # C++ pocketfft
        self.assertEqual(pynbox_ext.sort_ints([int(x) for x in values[:3][::-1]]), [1, 2, 3])
        for module in (numpy._core._multiarray_umath, etree, pynbox_ext):
            self.assertTrue(module.__file__.endswith(".cpython-313-wasm32-wasi.so"), module.__file__)

    def test_needed_library_is_loaded_once_and_shared(self):
        import pynbox_ext

        before = pynbox_ext.helper_calls()
        self.assertEqual(pynbox_ext.helper_add(40, 2), 42)
        self.assertEqual(pynbox_ext.helper_calls(), before + 1)

    def test_missing_symbol_is_an_import_error_naming_it(self):
        with self.assertRaises(ImportError) as cm:
            import pynbox_missing  # noqa: F401
        self.assertIn("pynbox_no_such_function", str(cm.exception))
        self.assertIn("pynbox_missing.cpython-313-wasm32-wasi.so", str(cm.exception))

    def test_module_written_inside_the_sandbox_is_refused(self):
        import importlib.util
        import shutil

        d = os.path.join(SCRATCH, "native-copy")
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "pynbox_ext.cpython-313-wasm32-wasi.so")
        shutil.copy(os.path.join(NATIVE, "pynbox_ext.cpython-313-wasm32-wasi.so"), path)
        with open(path, "r+b") as f:  # one byte changed: no longer what was installed
            f.seek(-1, os.SEEK_END)
            last = f.read(1)
            f.seek(-1, os.SEEK_END)
            f.write(bytes([last[0] ^ 1]))
        spec = importlib.util.spec_from_file_location("pynbox_ext", path)
        with self.assertRaises(ImportError) as cm:
            importlib.util.module_from_spec(spec)
        self.assertIn("not a native module installed by `pynbox install`", str(cm.exception))


if __name__ == "__main__":
    result = unittest.main(verbosity=2, exit=False).result
    failed = len(result.failures) + len(result.errors)
    passed = result.testsRun - failed - len(result.skipped)
    print(f"python: {passed} passed, {failed} failed, {len(result.skipped)} skipped", flush=True)
    sys.exit(1 if failed else 0)
