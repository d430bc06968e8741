"""Decodes a PNG far enough to prove it is one: signature, chunk CRCs, IHDR, and the
zlib stream of IDAT inflating to exactly the scanlines IHDR announces."""
import base64
import struct
import zlib

CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def decode(b64: str):
    data = base64.b64decode(b64, validate=True)
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        pos += 12 + n
    assert ihdr, "no IHDR"
    width, height, depth, color = ihdr[:4]
    raw = zlib.decompress(idat)
    row = (width * CHANNELS[color] * depth + 7) // 8
    assert len(raw) == height * (1 + row), "IDAT does not hold the announced image"
    return width, height
