"""Removes the exports whose names start with PREFIX from a wasm module.

wasm-ld's --export-dynamic exports every default-visibility symbol linked
in, the C++ library's among them; the interpreter gives side modules those
through its table of C++ symbols instead (cxx_symbols.py), so their exports
are dropped here. The functions and data stay: the table refers to them.

    python drop_exports.py MODULE.wasm PREFIX   (rewritten in place)
"""
import sys

from cxx_symbols import leb  # beside this file


def uleb(n):
    out = bytearray()
    while True:
        x = n & 0x7F
        n >>= 7
        if n:
            out.append(x | 0x80)
        else:
            out.append(x)
            return bytes(out)


def main():
    path, prefix = sys.argv[1], sys.argv[2].encode()
    b = open(path, "rb").read()
    if b[:8] != b"\0asm\1\0\0\0":
        sys.exit(f"{path}: not a wasm module")
    out = bytearray(b[:8])
    i, dropped = 8, 0
    while i < len(b):
        start = i
        sid = b[i]
        n, i = leb(b, i + 1)
        end = i + n
        if sid == 7:
            count, j = leb(b, i)
            kept = []
            for _ in range(count):
                e = j
                length, j = leb(b, j)
                name = b[j:j + length]
                j += length + 1  # the kind byte
                _, j = leb(b, j)  # the index
                if name.startswith(prefix):
                    dropped += 1
                else:
                    kept.append(b[e:j])
            body = uleb(len(kept)) + b"".join(kept)
            out += bytes([7]) + uleb(len(body)) + body
        else:
            out += b[start:end]
        i = end
    open(path, "wb").write(out)
    print(f"dropped {dropped} exports starting with {prefix.decode()}", file=sys.stderr)


main()
