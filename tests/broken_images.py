"""Image files PIL cannot decode, each failing the way a real one does (checked on Pillow 13)."""

import io
import struct
import zlib

import numpy as np
from PIL import Image


def png_bytes(side: int, *, seed: int = 0) -> bytes:
    """A side x side+3 PNG of noise: its pixel data does not compress away, so half of the file
    still holds the header and part of the pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side + 3, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def broken_images() -> dict[str, bytes]:
    """What a photo folder may hold by accident, by what PIL raises on it."""
    good = png_bytes(16)
    idat = good.index(b"IDAT")
    length = struct.unpack(">I", good[idat - 4:idat])[0]
    huge = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    return {
        # Image.open: UnidentifiedImageError (an OSError)
        "empty": b"",
        # opens (the header is whole), OSError "image file is truncated" when the pixels load
        "truncated": good[:len(good) // 2],
        # opens, SyntaxError "broken PNG file (chunk ...)" when the pixels load: not an OSError
        "broken-chunk": good[:idat - 4] + struct.pack(">I", length - 8) + good[idat:],
        # Image.open: DecompressionBombError (400 M pixels claimed in a 60-byte file): not an OSError
        "too-many-pixels": (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", huge)
                            + _chunk(b"IDAT", zlib.compress(b"\0")) + _chunk(b"IEND", b"")),
    }
