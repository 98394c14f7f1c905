"""Small helpers shared by the VLM backends: lazy model handles, image resizing and encoding,
text of a chat reply."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "Lazy",
    "check_generate_args",
    "fit_longest_side",
    "image_url_block",
    "data_url",
    "message_text",
]

T = TypeVar("T")


class Lazy(Generic[T]):
    """An object given directly, or a zero-argument loader called once, on first ``get()``.

    Anything with a ``generate`` or ``predict`` method counts as the object itself (a model
    handle); any other callable is a loader."""

    def __init__(self, value: T | Callable[[], T]) -> None:
        self._lock = threading.Lock()
        if callable(value) and not (hasattr(value, "generate") or hasattr(value, "predict")):
            self._loader: Callable[[], T] | None = value  # type: ignore[assignment]
            self._value: T | None = None
        else:
            self._loader, self._value = None, value  # type: ignore[assignment]

    def get(self) -> T:
        with self._lock:
            if self._loader is not None:
                self._value, self._loader = self._loader(), None
            return self._value  # type: ignore[return-value]


def fit_longest_side(image: Image.Image, size: int | None) -> Image.Image:
    """``image`` as RGB, resized (bicubic, aspect kept) so its longer side is ``size`` pixels;
    unchanged when ``size`` is None."""
    image = image.convert("RGB")
    if size is None or max(image.size) == size:
        return image
    from PIL import Image as PILImage

    w, h = image.size
    scale = size / max(w, h)
    return image.resize((max(1, round(w * scale)), max(1, round(h * scale))), PILImage.BICUBIC)


def data_url(image: Image.Image) -> str:
    """``data:image/png;base64,...`` of ``image`` (lossless, so a critic sees the exact pixels)."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def image_url_block(image: Image.Image) -> dict[str, Any]:
    """A langchain-core / OpenAI chat image content block carrying ``image`` as a data URL."""
    return {"type": "image_url", "image_url": {"url": data_url(image)}}


def message_text(message: Any) -> str:
    """The text of a chat model's reply: string content, or its text blocks joined."""
    content = getattr(message, "content", message)
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            c if isinstance(c, str) else c.get("text", "")
            for c in content
            if isinstance(c, str) or (isinstance(c, dict) and c.get("type") == "text")
        ]
        return "".join(parts)
    raise TypeError(f"chat model returned content of type {type(content).__name__}, expected text")


def check_generate_args(
    prompts: object, max_new_tokens: int, temperature: float, num_return_sequences: int
) -> None:
    """The argument checks every ``generate`` of a QwenVL-like backend makes."""
    if not prompts:
        raise ValueError("prompts must not be empty")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens!r}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    if num_return_sequences < 1 or (temperature == 0 and num_return_sequences > 1):
        raise ValueError(
            f"num_return_sequences must be >= 1, and 1 when decoding greedily "
            f"(temperature=0); got {num_return_sequences!r}"
        )
