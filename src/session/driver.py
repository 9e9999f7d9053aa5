# The guest's half of a pynbox session (src/session/). pynbox hands this
# source to the interpreter's pynbox.session_start export, which runs it
# once; every later call of pynbox.session_call runs serve() once. The
# host's half and the message forms are in src/session/mod.rs and
# src/session/value.rs.

# Imported at start: only what start-up has already loaded, or is cheap
# (linecache and traceback cost milliseconds; they load when needed).
import sys
import types

import _pynbox_session as _link
import _struct as struct

_ANSWER, _HOST_CALL = 0, 1
_MAX_DEPTH = 100
_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")
_U32 = struct.Struct("<I")
_main = sys.modules["__main__"].__dict__
_calls = 0
# Each call's source by file name, so that tracebacks show its lines.
_sources = {}


def _remember(filename, source):
    _sources[filename] = source
    linecache = sys.modules.get("linecache")
    if linecache is not None:
        _register(linecache, filename, source)


def _register(linecache, filename, source):
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)


def _format(e):
    import linecache
    import traceback

    for filename, source in _sources.items():
        if filename not in linecache.cache:
            _register(linecache, filename, source)
    return "".join(traceback.format_exception(e))


def _put(out, tag, data):
    out += tag
    out += _U32.pack(len(data))
    out += data


def _text(s):
    # Lone surrogates cannot cross as UTF-8; they cross escaped.
    return s.encode("utf-8", "backslashreplace")


def _encode(v, out, to_host, depth=0):
    """Appends v to out. Results of eval (to_host) may hold objects outside
    the interchange form, which cross as their repr(); host-function
    arguments may not."""
    if depth > _MAX_DEPTH:
        raise ValueError(f"pynbox: values nest deeper than {_MAX_DEPTH}")
    t = type(v)
    if v is None:
        out += b"N"
    elif v is True:
        out += b"T"
    elif v is False:
        out += b"F"
    elif t is int and -(1 << 63) <= v < (1 << 63):
        out += b"i"
        out += _I64.pack(v)
    elif t is float:
        out += b"f"
        out += _F64.pack(v)
    elif t is str:
        _put(out, b"s", _text(v))
    elif t is bytes or t is bytearray:
        _put(out, b"b", bytes(v))
    elif t is list or t is tuple:
        out += b"l"
        out += _U32.pack(len(v))
        for item in v:
            _encode(item, out, to_host, depth + 1)
    elif t is dict:
        out += b"d"
        out += _U32.pack(len(v))
        for k, item in v.items():
            _encode(k, out, to_host, depth + 1)
            _encode(item, out, to_host, depth + 1)
    elif to_host:
        _put(out, b"r", _text(repr(v)))
    else:
        raise TypeError(
            f"pynbox_host: a {t.__name__} cannot be passed to the host "
            "(None, bool, int of 64 bits, float, str, bytes, list, tuple and dict can)"
        )


def _decode(buf, pos=0, depth=0):
    """The value at buf[pos:], and where it ends."""
    if depth > _MAX_DEPTH:
        raise ValueError("pynbox: the host's value nests too deeply")
    tag = buf[pos : pos + 1]
    pos += 1
    if tag == b"N":
        return None, pos
    if tag == b"T":
        return True, pos
    if tag == b"F":
        return False, pos
    if tag == b"i":
        return _I64.unpack_from(buf, pos)[0], pos + 8
    if tag == b"f":
        return _F64.unpack_from(buf, pos)[0], pos + 8
    if tag in (b"s", b"b"):
        (n,) = _U32.unpack_from(buf, pos)
        data = bytes(buf[pos + 4 : pos + 4 + n])
        return (data.decode("utf-8") if tag == b"s" else data), pos + 4 + n
    if tag == b"l":
        (n,) = _U32.unpack_from(buf, pos)
        pos += 4
        items = []
        for _ in range(n):
            item, pos = _decode(buf, pos, depth + 1)
            items.append(item)
        return items, pos
    if tag == b"d":
        (n,) = _U32.unpack_from(buf, pos)
        pos += 4
        items = {}
        for _ in range(n):
            k, pos = _decode(buf, pos, depth + 1)
            items[k], pos = _decode(buf, pos, depth + 1)
        return items, pos
    raise ValueError(f"pynbox: unknown value tag {tag!r} from the host")


class HostError(Exception):
    """A host function failed or refused the call; the message is the host's."""


HostError.__module__ = "pynbox_host"


def call(name, *args):
    """Calls the host function `name` with `args`; returns its result."""
    if type(name) is not str:
        raise TypeError("pynbox_host.call: the function's name must be a str")
    out = bytearray()
    _encode([name, list(args)], out, False)
    _link.send(_HOST_CALL, bytes(out))
    reply = _link.take()
    if reply[:1] == b"o":
        return _decode(reply, 1)[0]
    raise HostError(_decode(reply, 1)[0])


def _host_module():
    m = types.ModuleType(
        "pynbox_host",
        "Functions the host exposes to this session: "
        "pynbox_host.call('name', *args), or pynbox_host.name(*args).",
    )
    m.call = call
    m.HostError = HostError

    def __getattr__(name):
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args: call(name, *args)

    m.__getattr__ = __getattr__
    return m


sys.modules["pynbox_host"] = _host_module()


def _type_name(e):
    t = type(e)
    if t.__module__ in ("builtins", "__main__"):
        return t.__qualname__
    return f"{t.__module__}.{t.__qualname__}"


def _flush():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def serve():
    global _calls
    request = _link.take()
    out = bytearray(b"o")
    try:
        op, source = request[:1], request[1:].decode("utf-8")
        if op == b"w":
            # A pool's warm-up (src/session/pool.rs): a fresh interpreter's
            # first compile and exec cost milliseconds, paid here before the
            # session is handed out. Not counted, nothing kept.
            exec(compile(source, "<warm-up>", "exec"), {})
            _flush()
            _link.send(_ANSWER, bytes(b"oN"))
            return
        _calls += 1
        # Named so that tracebacks show the lines (as IPython does).
        filename = f"<session:{_calls}>"
        _remember(filename, source)
        if op == b"x":
            exec(compile(source, filename, "exec"), _main)
            value = None
        elif op == b"e":
            value = eval(compile(source, filename, "eval"), _main)
        else:
            raise ValueError(f"pynbox: unknown request {op!r}")
        _encode(value, out, True)
    except BaseException as e:
        out = bytearray(b"e")
        try:
            message = str(e)
            tb = _format(e)
        except BaseException:
            message = tb = f"<{type(e).__name__} that cannot be shown>"
        for text in (_type_name(e), message, tb):
            _put(out, b"s", _text(text))
    _flush()
    _link.send(_ANSWER, bytes(out))
