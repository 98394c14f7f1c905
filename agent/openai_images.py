"""``POST /v1/images/edits``: OpenAI's image-edit API in front of the agent, for clients that
speak it (the official ``openai`` client, open-webui, litellm, AI gateways).

Multipart form fields, as OpenAI documents them: ``image`` (a PNG/JPEG/WebP file; ``image[]``
too, first file used), ``prompt`` (the instruction), optional ``mask`` (a PNG of the image's
size whose fully transparent pixels, alpha 0, mark where to edit), optional
``response_format`` (``b64_json``, the default, or ``url``: the artifact route's URL), ``n``
(only 1). ``model``, ``size``, ``quality``, ``user`` and other fields are accepted and ignored:
the server's agent (its preset, ``agent/studio.py``) edits at the input's size.

Errors come back in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``: bad
input is a 400 ``invalid_request_error`` naming the field; a failure of the agent a 500
``server_error``.
"""

from __future__ import annotations

import base64
import io
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tools.errors import InvalidInputError

__all__ = ["images_edits_route"]

_FORMATS = ("b64_json", "url")


class _BadRequest(Exception):
    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.param = param


def _error(status: int, message: str, *, kind: str, param: str | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    return JSONResponse(body, status_code=status)


async def _file_bytes(form: Any, *names: str) -> bytes | None:
    for name in names:
        item = form.get(name)
        if item is None:
            continue
        if isinstance(item, str):
            raise _BadRequest(f"{name} must be an uploaded file, got the text {item[:40]!r}", name)
        return await item.read()
    return None


def _mask_region(data: bytes) -> Any:
    """OpenAI's mask (alpha 0 = edit here) as an HxW bool region (True = may change)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        mask = Image.open(io.BytesIO(data))
        mask.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise _BadRequest(f"mask is not an image PIL can read: {exc}", "mask") from exc
    if "A" not in mask.getbands() and "transparency" not in mask.info:
        raise _BadRequest(
            f"mask must have an alpha channel (mode {mask.mode!r} has none): its fully "
            "transparent pixels mark where to edit",
            "mask",
        )
    alpha = np.asarray(mask.convert("RGBA"))[..., 3]
    return alpha == 0


def images_edits_route(graph: Any, store: Any, *, base_url: Any = None) -> Route:
    """The route, running ``graph`` (a compiled edit agent) over ``store`` (its artifact store).
    ``base_url()`` gives the URL base for ``response_format=url`` (default: the request's)."""

    def run(instruction: str, image: bytes, region: Any) -> dict[str, Any]:
        request: dict[str, Any] = {
            "image": "data:image/png;base64," + base64.b64encode(image).decode("ascii"),
            "instruction": instruction,
        }
        if region is not None:
            request["mask"] = store.put_mask(region)
        return graph.invoke(request)

    async def edits(request: Request) -> Response:
        import anyio

        if request.method != "POST":
            return _error(405, "use POST", kind="invalid_request_error")
        try:
            try:
                form = await request.form()
            except Exception as exc:  # noqa: BLE001 - any parse failure is the client's input
                raise _BadRequest(f"the body is not multipart/form-data: {exc}", None) from exc
            image = await _file_bytes(form, "image", "image[]")
            if image is None:
                raise _BadRequest("image is required (a file field)", "image")
            prompt = form.get("prompt")
            if not isinstance(prompt, str) or not prompt.strip():
                raise _BadRequest(
                    f"prompt is required (a non-empty text), got {prompt!r}", "prompt"
                )
            response_format = form.get("response_format") or "b64_json"
            if response_format not in _FORMATS:
                raise _BadRequest(
                    f"response_format={response_format!r} is not one of {list(_FORMATS)}",
                    "response_format",
                )
            n = form.get("n") or "1"
            if n != "1":
                raise _BadRequest(f"n={n!r}: this server returns one image (n=1)", "n")
            mask = await _file_bytes(form, "mask")
            region = _mask_region(mask) if mask is not None else None
            out = await anyio.to_thread.run_sync(run, prompt, image, region)
        except _BadRequest as exc:
            return _error(400, str(exc), kind="invalid_request_error", param=exc.param)
        except InvalidInputError as exc:
            text = str(exc)
            param = (
                "mask"
                if text.startswith("mask")
                else "prompt"
                if "instruction" in text
                else "image"
            )
            return _error(400, text, kind="invalid_request_error", param=param)
        if out.get("stop_reason") == "error":
            reason = next((s["reason"] for s in reversed(out["steps"]) if s.get("reason")), "")
            return _error(500, f"the agent failed: {reason}", kind="server_error")
        ref = out["result"]
        item: dict[str, Any]
        if response_format == "url":
            from agent.studio import artifact_url

            base = (base_url() if base_url is not None else None) or str(request.base_url)
            item = {"url": artifact_url(base, ref["sha256"])}
        else:
            item = {"b64_json": base64.b64encode(store.read_bytes(ref)).decode("ascii")}
        item["revised_prompt"] = None
        return JSONResponse({"created": int(time.time()), "data": [item]})

    return Route("/v1/images/edits", edits, methods=["GET", "POST"], name="images_edits")
