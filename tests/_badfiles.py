"""Bad and odd input files made by code (no binary blobs in git), shared by the tests."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def png_with_size(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR then claims ``width`` x ``height`` (CRC fixed)."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)
