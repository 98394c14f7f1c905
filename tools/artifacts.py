"""Content-addressed image store: pixels live on disk, state holds ``ImageRef``s.

An artifact is a PNG named by the sha256 of its bytes, under ``<root>/<aa>/<sha>.png``.
The same pixels always give the same PNG bytes, so the same image is stored once. Writes are
atomic (temporary file + ``os.replace``), and every read checks that the path lies inside the
store's root, is a regular file (no symbolic link is followed) and that the bytes still hash
to the name. ``put()`` verifies an existing file and rewrites it when it is corrupt, a link or
not a file; temporary files of killed writers are removed when a store is opened.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import shutil
import stat
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from tools._io import stale_temp_files, write_atomic

if TYPE_CHECKING:  # PIL and numpy are imported on use: `import agent` stays light.
    import numpy as np
    from PIL import Image

__all__ = ["ImageRef", "ArtifactStore", "default_artifacts_dir"]

#: Matched with ``fullmatch``: ``$`` in ``re.match`` lets a trailing newline through.
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ImageRef(TypedDict):
    """A stored image. JSON-only, so it can sit in graph state and checkpoints.

    ``uri`` is a ``file://`` URI of the PNG inside the store; ``width``/``height`` in pixels.
    Masks are ImageRefs too (single-channel PNG, 0 or 255).
    """

    uri: str
    sha256: str
    width: int
    height: int


def default_artifacts_dir() -> Path:
    """``$XDG_CACHE_HOME/mira-agent/artifacts`` (``~/.cache/...`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mira-agent" / "artifacts"


def _png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    # Fixed encoder settings and no metadata: equal pixels give equal bytes (and hash).
    image.save(buf, format="PNG", compress_level=6, optimize=False)
    return buf.getvalue()


class ArtifactStore:
    """Stores images as content-addressed PNGs under ``root`` and resolves ``ImageRef``s.

    Safe to share between threads and processes: files are written once, atomically.
    """

    def __init__(
        self, root: str | os.PathLike[str] | None = None, *, clean_temp_files: bool = True
    ) -> None:
        self.root = Path(root if root is not None else default_artifacts_dir()).expanduser()
        self.root.mkdir(parents=True, exist_ok=True)
        self.root = self.root.resolve()
        if clean_temp_files:  # a read-only server (agent.http) leaves that to the writers
            self._clean_stale_temp_files()

    def _clean_stale_temp_files(self) -> None:
        """Remove the temporary files of writers killed mid-write (SIGKILL, power loss)."""
        try:
            shards = [e.path for e in os.scandir(self.root) if e.is_dir(follow_symlinks=False)]
        except OSError:
            return
        for folder in shards:
            for tmp in stale_temp_files(folder):
                tmp.unlink(missing_ok=True)

    def __repr__(self) -> str:
        return f"ArtifactStore(root={str(self.root)!r})"

    # -- writing -----------------------------------------------------------------------------
    def put(self, image: Image.Image) -> ImageRef:
        """Store an RGB image (other modes are converted) and return its reference."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        return self._put_png(image)

    def put_mask(self, mask: Image.Image | np.ndarray) -> ImageRef:
        """Store a mask: an HxW bool/0-1 array or a PIL image (nonzero = inside)."""
        import numpy as np
        from PIL import Image

        arr = np.asarray(mask)
        if arr.ndim != 2:
            raise ValueError(f"mask must be HxW, got an array of shape {arr.shape!r}")
        return self._put_png(Image.fromarray(np.where(arr > 0, 255, 0).astype(np.uint8), "L"))

    def _put_png(self, image: Image.Image) -> ImageRef:
        data = _png_bytes(image)
        sha = hashlib.sha256(data).hexdigest()
        path = self._path_for(sha)
        if not self._verified(path, sha):  # missing, corrupt, a link or not a file: (re)write
            shard = path.parent
            if shard.is_symlink() or (os.path.lexists(shard) and not shard.is_dir()):
                shard.unlink()  # never write through a link planted in the store
            shard.mkdir(exist_ok=True)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            write_atomic(path, data)  # os.replace swaps a link itself, not what it points at
        return ImageRef(uri=path.as_uri(), sha256=sha, width=image.width, height=image.height)

    @staticmethod
    def _verified(path: Path, sha: str) -> bool:
        try:
            return hashlib.sha256(_read_regular(path)).hexdigest() == sha
        except (OSError, ValueError):
            return False

    # -- reading -----------------------------------------------------------------------------
    def path(self, ref: ImageRef | str) -> Path:
        """The file behind a reference (or a bare sha256), checked to lie inside the root.

        Raises ``ValueError`` for a malformed hash or a URI that points outside the store, and
        ``FileNotFoundError`` when the artifact is not in this store.
        """
        if isinstance(ref, str):
            sha = ref
            uri = None
        elif isinstance(ref, dict) and "sha256" in ref:
            sha, uri = ref["sha256"], ref.get("uri")
        else:
            raise TypeError(f"expected an ImageRef or a sha256 string, got {ref!r}")
        if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
            raise ValueError(f"not a sha256 hex digest: {sha!r}")
        path = self._path_for(sha)
        if uri is not None:
            claimed = _uri_to_path(uri)
            claimed = claimed.parent.resolve() / claimed.name  # the file itself: not followed
            if claimed != path:
                raise ValueError(
                    f"ImageRef uri {uri!r} does not point at artifact {sha[:12]} inside the "
                    f"store root {str(self.root)!r}"
                )
        if path.parent.is_symlink():
            raise ValueError(f"artifact folder {str(path.parent)!r} is a symbolic link: refused")
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            raise FileNotFoundError(
                f"artifact {sha!r} is not in the store at {str(self.root)!r}"
            ) from None
        if not stat.S_ISREG(mode):  # a link would let one hash serve another image
            raise ValueError(f"artifact {str(path)!r} is not a regular file (a link?): refused")
        return path

    def read_bytes(self, ref: ImageRef | str) -> bytes:
        """The PNG bytes of an artifact, verified against its hash.

        Raises ``ValueError`` when the file is corrupt, a symbolic link or not a regular file
        (a link would let one hash serve another image).
        """
        path = self.path(ref)
        data = _read_regular(path)
        if hashlib.sha256(data).hexdigest() != path.name.removesuffix(".png"):
            raise ValueError(
                f"artifact {str(path)!r} is corrupt: its bytes no longer match its hash"
            )
        return data

    def open(self, ref: ImageRef | str) -> Image.Image:
        """Load an artifact as a PIL image (RGB for images, L for masks), fully read."""
        from PIL import Image

        image = Image.open(io.BytesIO(self.read_bytes(ref)))
        image.load()
        return image

    def open_mask(self, ref: ImageRef | str) -> np.ndarray:
        """Load a mask artifact as an HxW bool array."""
        import numpy as np

        return np.asarray(self.open(ref).convert("L")) > 127

    def contains(self, ref: ImageRef | str) -> bool:
        try:
            self.path(ref)
        except (ValueError, FileNotFoundError):
            return False
        return True

    def _path_for(self, sha: str) -> Path:
        # Not resolved: links inside the store are refused on read, replaced on write.
        path = self.root / sha[:2] / f"{sha}.png"
        if not os.path.normpath(path).startswith(str(self.root) + os.sep):  # defence in depth
            raise ValueError(f"artifact path {str(path)!r} escapes the store root")
        return path


def _read_regular(path: Path) -> bytes:
    """The bytes of ``path``, refusing a symbolic link (at the file or its shard folder) or
    anything but a regular file."""
    if path.parent.is_symlink():
        raise ValueError(f"artifact folder {str(path.parent)!r} is a symbolic link: refused")
    try:
        fd = os.open(
            path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        )
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ValueError(f"artifact {str(path)!r} is a symbolic link: refused") from exc
        raise
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ValueError(f"artifact {str(path)!r} is not a regular file: refused")
        return f.read()


def _uri_to_path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        raise ValueError(f"artifact uri must be a local file:// URI, got {uri!r}")
    return Path(unquote(parsed.path))
