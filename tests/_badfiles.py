"""Bad and odd input files made by code (no binary blobs in git), shared by the tests."""

from __future__ import annotations

import base64
import io
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image


def png_with_size(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR then claims ``width`` x ``height`` (CRC fixed)."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


# -- the fuzz and bad-input corpus (issue 15) ---------------------------------------------------
# Each kind makes its input in a folder and says what must happen: "refuse" (a typed error,
# nothing written) or "accept" (a normal run). ``api_only``: not expressible as argv.
@dataclass(frozen=True)
class Kind:
    name: str
    make: Callable[[Path], Any]  # folder -> the image argument (a path, URI or data URL)
    expect: str  # "refuse" | "accept"
    instruction: Any = "make the left side red"
    api_only: bool = False


def _save(folder: Path, name: str, image: Image.Image, **kw: Any) -> str:
    path = folder / name
    image.save(path, **kw)
    return str(path)


def _bytes(folder: Path, name: str, data: bytes) -> str:
    path = folder / name
    path.write_bytes(data)
    return str(path)


def _picture(w: int = 32, h: int = 24) -> Image.Image:
    from agent.testing import make_test_image

    return make_test_image(w, h)


def _png(image: Image.Image | None = None) -> bytes:
    buf = io.BytesIO()
    (image or _picture()).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg() -> bytes:
    buf = io.BytesIO()
    _picture().save(buf, format="JPEG")
    return buf.getvalue()


def _data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _text_bomb(folder: Path) -> str:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("comment", "a" * 20_000_000, zip=True)
    return _save(folder, "text-bomb.png", _picture(8, 8), pnginfo=info)


def _bad_crc(folder: Path) -> str:
    data = bytearray(_png())
    data[-20] ^= 0xFF  # inside the last IDAT: the zlib stream breaks
    return _bytes(folder, "bad-crc.png", bytes(data))


def _sparse(folder: Path) -> str:
    path = folder / "sparse.png"
    with open(path, "wb") as f:
        f.truncate(300 * 1024 * 1024)  # over the 256 MiB default; nothing on disk
    return str(path)


def _fifo(folder: Path) -> str:
    os.mkfifo(folder / "pipe.png")
    return str(folder / "pipe.png")


def _link(folder: Path, name: str, target: str) -> str:
    (folder / name).symlink_to(target)
    return str(folder / name)


def _animated(folder: Path) -> str:
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    path = folder / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=40)
    return str(path)


def _multipage_tiff(folder: Path) -> str:
    pages = [_picture(16, 16), _picture(20, 12)]
    path = folder / "pages.tif"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    return str(path)


def _grey16(folder: Path) -> str:
    import numpy as np

    arr = (np.arange(32 * 24, dtype=np.uint16).reshape(24, 32) * 80).astype(np.uint16)
    return _save(folder, "grey16.png", Image.fromarray(arr))  # mode I;16


def _exif_rotated(folder: Path) -> str:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees
    return _save(folder, "rotated.jpg", _picture(), exif=exif.tobytes())


def _palette_transparent(folder: Path) -> str:
    image = _picture().convert("P")
    return _save(folder, "palette.png", image, transparency=0)


CORPUS: list[Kind] = [
    # -- bad files ---------------------------------------------------------------------------
    Kind("empty file", lambda d: _bytes(d, "empty.png", b""), "refuse"),
    Kind("text as png", lambda d: _bytes(d, "notes.png", b"hello, I am text"), "refuse"),
    Kind("html as jpg", lambda d: _bytes(d, "page.jpg", b"<html><body>hi</body></html>"), "refuse"),
    Kind(
        "svg", lambda d: _bytes(d, "v.svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>'), "refuse"
    ),
    Kind("pdf header", lambda d: _bytes(d, "doc.png", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"), "refuse"),
    Kind("random bytes", lambda d: _bytes(d, "noise.png", bytes(range(256)) * 8), "refuse"),
    Kind("zero bytes", lambda d: _bytes(d, "zeros.png", b"\0" * 4096), "refuse"),
    Kind("truncated png", lambda d: _bytes(d, "cut.png", _png()[:60]), "refuse"),
    Kind("truncated jpeg", lambda d: _bytes(d, "cut.jpg", _jpeg()[: len(_jpeg()) // 2]), "refuse"),
    Kind("jpeg SOI only", lambda d: _bytes(d, "soi.jpg", b"\xff\xd8\xff"), "refuse"),
    Kind("gif header only", lambda d: _bytes(d, "head.gif", b"GIF89a"), "refuse"),
    Kind("bmp header garbage", lambda d: _bytes(d, "bad.bmp", b"BM" + b"\xff" * 60), "refuse"),
    Kind("tiff header garbage", lambda d: _bytes(d, "bad.tif", b"II*\0" + b"\xff" * 60), "refuse"),
    Kind("broken IDAT", _bad_crc, "refuse"),
    Kind("png 0x0", lambda d: _bytes(d, "zero.png", png_with_size(0, 0)), "refuse"),
    Kind("bomb header", lambda d: _bytes(d, "bomb.png", png_with_size(40_000, 40_000)), "refuse"),
    Kind("over max pixels", lambda d: _bytes(d, "big.png", png_with_size(5000, 5000)), "refuse"),
    Kind("text-chunk bomb", _text_bomb, "refuse"),
    Kind("sparse 300 MB file", _sparse, "refuse"),
    # -- bad paths ---------------------------------------------------------------------------
    Kind("missing file", lambda d: str(d / "nope.png"), "refuse"),
    Kind("directory", lambda d: str(d), "refuse"),
    Kind("fifo", _fifo, "refuse"),
    Kind("symlink loop", lambda d: _link(d, "loop.png", str(d / "loop.png")), "refuse"),
    Kind("dangling symlink", lambda d: _link(d, "dangling.png", str(d / "gone.png")), "refuse"),
    Kind("name over 255 bytes", lambda d: str(d / ("x" * 300 + ".png")), "refuse"),
    Kind("path with NUL", lambda d: str(d / "a\0b.png"), "refuse"),
    Kind("path with escapes", lambda d: str(d / "pic\x1b[2J\n.png"), "refuse"),
    Kind("empty path", lambda d: "", "refuse"),
    Kind("blank path", lambda d: "  \t ", "refuse"),
    Kind("unknown ~user path", lambda d: "~no-such-user-mira/x.png", "refuse"),
    Kind("drive-letter path", lambda d: "C:\\images\\x.png", "refuse"),
    # -- bad URIs ----------------------------------------------------------------------------
    Kind("http URL", lambda d: "http://example.com/x.png", "refuse"),
    Kind("https URL", lambda d: "https://example.com/x.png", "refuse"),
    Kind("ftp URL", lambda d: "ftp://example.com/x.png", "refuse"),
    Kind("javascript URI", lambda d: "javascript:alert(1)", "refuse"),
    Kind("file URI remote host", lambda d: "file://evil.example/etc/x.png", "refuse"),
    Kind("file URI missing", lambda d: (d / "nope.png").as_uri(), "refuse"),
    Kind("file URI with %00", lambda d: (d / "x").as_uri() + "%00.png", "refuse"),
    Kind("data URL not base64", lambda d: "data:image/png,hello", "refuse"),
    Kind("data URL bad base64", lambda d: "data:image/png;base64,@@@@", "refuse"),
    Kind("data URL text type", lambda d: "data:text/plain;base64,aGVsbG8=", "refuse"),
    Kind("data URL of text", lambda d: _data_url(b"hello, I am text"), "refuse"),
    Kind("data URL of a bomb", lambda d: _data_url(png_with_size(40_000, 40_000)), "refuse"),
    # -- bad instructions --------------------------------------------------------------------
    Kind("empty instruction", lambda d: _bytes(d, "ok.png", _png()), "refuse", instruction=""),
    Kind("blank instruction", lambda d: _bytes(d, "ok.png", _png()), "refuse", instruction=" \n"),
    Kind("too long instruction", lambda d: _bytes(d, "ok.png", _png()), "refuse", "x " * 1500),
    Kind("non-text instruction", lambda d: _bytes(d, "ok.png", _png()), "refuse", 42, True),
    Kind("non-text image", lambda d: 3.14, "refuse", api_only=True),
    Kind("dict not an ImageRef", lambda d: {"uri": "file:///etc/passwd"}, "refuse", api_only=True),
    # -- odd but valid -----------------------------------------------------------------------
    Kind("plain png", lambda d: _bytes(d, "ok.png", _png()), "accept"),
    Kind("1x1 png", lambda d: _bytes(d, "dot.png", _png(Image.new("RGB", (1, 1)))), "accept"),
    Kind("rgba png", lambda d: _save(d, "rgba.png", _picture().convert("RGBA")), "accept"),
    Kind("palette with transparency", _palette_transparent, "accept"),
    Kind("16-bit grey png", _grey16, "accept"),
    Kind("cmyk jpeg", lambda d: _save(d, "cmyk.jpg", _picture().convert("CMYK")), "accept"),
    Kind("exif-rotated jpeg", _exif_rotated, "accept"),
    Kind("animated gif", _animated, "accept"),
    Kind("multi-page tiff", _multipage_tiff, "accept"),
    Kind("webp", lambda d: _save(d, "pic.webp", _picture()), "accept"),
    Kind("bmp", lambda d: _save(d, "pic.bmp", _picture()), "accept"),
    Kind("png named .txt", lambda d: _bytes(d, "image.txt", _png()), "accept"),
    Kind("unicode and spaces", lambda d: _bytes(d, "ïmage 画 (1).png", _png()), "accept"),
    Kind("file URI", lambda d: Path(_bytes(d, "uri me.png", _png())).as_uri(), "accept"),
    Kind("data URL", lambda d: _data_url(_png()), "accept"),
    Kind(
        "symlink to a png", lambda d: _link(d, "link.png", _bytes(d, "real.png", _png())), "accept"
    ),
    Kind(
        "control chars in instruction",
        lambda d: _bytes(d, "ok.png", _png()),
        "accept",
        instruction="make the left side red\x1b[2J\x1b]0;pwned\x07",
    ),
    Kind(
        "right-to-left instruction",
        lambda d: _bytes(d, "ok.png", _png()),
        "accept",
        instruction="\u202emake the left side red \u05d0\u05d1",
    ),
]
