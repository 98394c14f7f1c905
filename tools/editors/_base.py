"""What every diffusers editor shares: model source, lazy loading, sizes, seeds, progress.

A ``DiffusersEditor`` holds *where its pipeline comes from* (a hub id or local directory, or
an already-built pipeline) and *how to place it* (``LoadOptions``); it loads the pipeline on the
first ``edit`` through ``tools.models.REGISTRY`` (once per process per
``(pipeline class, model, dtype, device, offload)``) and runs each diffusion under
``REGISTRY.device_lock`` and a lock of its pipeline (a pipeline call is not re-entrant, so
editors sharing one pipeline take turns, on the CPU too). Subclasses only say which pipeline
class they drive, their defaults and how the shared arguments map onto that pipeline's call
(``_call_kwargs``).

Sizes: the pipeline runs at the input's size scaled into ``[min_area, max_area]`` (aspect
kept) and rounded to the model's pixel multiple (VAE factor x patch size); the input is resized
to exactly that size first (so the pipeline never crops it), and the output is resized back
to the input's exact size with LANCZOS when they differ.

Seeds: ``seed`` makes a ``torch.Generator`` on the pipeline's execution device, so one seed
gives the same pixels on one device and software stack (CPU and CUDA draw different noise).
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from tools.contracts import ProgressFn
from tools.models import REGISTRY, LoadOptions, resolve_local, torch_dtype

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["DiffusersEditor", "import_diffusers", "factory_kwargs"]

# One lock per pipeline object: a pipeline call keeps state on the pipeline and its scheduler
# (timesteps, step index, guidance), so two calls on one pipeline must never overlap, even on
# the CPU where REGISTRY.device_lock does not serialise. Editors sharing a pipeline share it.
_CALL_LOCKS: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_CALL_LOCKS_GUARD = threading.Lock()


def _call_lock(pipe: Any) -> threading.Lock:
    with _CALL_LOCKS_GUARD:
        lock = _CALL_LOCKS.get(pipe)
        if lock is None:
            lock = _CALL_LOCKS[pipe] = threading.Lock()
        return lock


#: Pipeline call arguments the editor sets itself; ``call_kwargs`` may not override them.
_RESERVED = frozenset(
    {
        "image",
        "prompt",
        "generator",
        "height",
        "width",
        "num_inference_steps",
        "guidance_scale",
        "callback_on_step_end",
        "callback_on_step_end_tensor_inputs",
        "output_type",
        "return_dict",
        "num_images_per_prompt",
        "latents",
    }
)


def import_diffusers() -> Any:
    """``import diffusers``, or an ``ImportError`` saying what to install."""
    try:
        import diffusers
    except ImportError as exc:  # torch, transformers or diffusers missing
        raise ImportError(
            "the diffusers editors need torch, diffusers and transformers: "
            "pip install 'mira-agent[models]' (install torch first, see the Makefile)"
        ) from exc
    return diffusers


def is_pipeline(pipe: Any, pipeline_class: str) -> bool:
    """Whether ``pipe`` is an instance of the diffusers class ``pipeline_class`` (or of a
    subclass). A type check, never a name match: a look-alike class of the same name is no
    such pipeline."""
    cls = getattr(import_diffusers(), pipeline_class, None)
    if cls is None:
        raise ValueError(f"diffusers has no pipeline class {pipeline_class!r}")
    return isinstance(pipe, cls)


def factory_kwargs(options: Mapping[str, Any], **defaults: Any) -> dict[str, Any]:
    """Constructor arguments from a registry factory's options (JSON values, e.g. from
    ``AgentConfig.backend_options``): ``dtype``, ``device`` and ``cpu_offload`` become a
    ``LoadOptions``; every other option (``model``, ``num_inference_steps``, ...) passes through
    and wins over ``defaults``."""
    kwargs = {**defaults, **options}
    load = {k: kwargs.pop(k) for k in ("dtype", "device", "cpu_offload") if k in kwargs}
    if load:
        if "options" in kwargs:
            raise ValueError(f"give options or {sorted(load)}, not both")
        kwargs["options"] = LoadOptions(**load)
    return kwargs


class DiffusersEditor:
    """Base of the instruction-guided editors on diffusers pipelines (``tools.contracts.Editor``).

    Args:
        model: hub id (e.g. ``"black-forest-labs/FLUX.2-klein-9B"``) or local directory of a
            diffusers checkpoint; None = the class's ``default_model``. Hub ids are read from
            the local Hugging Face cache only: nothing is ever downloaded, and a missing model
            raises ``ModelNotFoundError`` (naming it, where it was looked for, how to get it).
        pipeline: an already-built pipeline to use instead of loading one (random-weight
            pipelines for tests and benchmarks, or one you placed yourself). Give ``model`` or
            ``pipeline``, not both; see also ``from_pipeline``.
        options: dtype, device and CPU offload of a loaded pipeline (ignored with ``pipeline``).
        num_inference_steps, guidance_scale: this editor's defaults, used when ``edit`` gets
            None; None = the class defaults (``default_steps``, ``default_guidance``).
        max_area, min_area: the pipeline runs at the input's size scaled (aspect kept) so that
            its area lies in ``[min_area, max_area]`` pixels; None = the class defaults.
        call_kwargs: extra keyword arguments for every pipeline call (e.g.
            ``max_sequence_length``); the ones the editor sets itself are refused.
    """

    #: diffusers pipeline class this editor drives.
    pipeline_class: ClassVar[str] = ""
    #: human name of the model family, used in messages.
    family: ClassVar[str] = ""
    #: hub id loaded when neither ``model`` nor ``pipeline`` is given.
    default_model: ClassVar[str] = ""
    default_steps: ClassVar[int] = 28
    default_guidance: ClassVar[float] = 1.0
    default_max_area: ClassVar[int] = 1024 * 1024
    default_min_area: ClassVar[int] = 0
    #: smallest side the pipeline accepts, in pixels (before rounding to the multiple).
    min_side: ClassVar[int] = 0

    def __init__(
        self,
        model: str | None = None,
        *,
        pipeline: Any = None,
        options: LoadOptions | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        max_area: int | None = None,
        min_area: int | None = None,
        call_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if model is not None and pipeline is not None:
            raise ValueError(f"give model or pipeline, not both (model={model!r})")
        if model is not None and (not isinstance(model, str) or not model.strip()):
            raise ValueError(f"model must be a hub id or a local directory, got {model!r}")
        if options is not None and not isinstance(options, LoadOptions):
            raise TypeError(f"options must be a LoadOptions, got {options!r}")
        _check_steps("num_inference_steps", num_inference_steps)
        _check_guidance("guidance_scale", guidance_scale)
        self.max_area = self.default_max_area if max_area is None else max_area
        self.min_area = self.default_min_area if min_area is None else min_area
        if not isinstance(self.max_area, int) or self.max_area < 64:
            raise ValueError(f"max_area must be an int >= 64 (pixels), got {max_area!r}")
        if not isinstance(self.min_area, int) or not 0 <= self.min_area <= self.max_area:
            raise ValueError(
                f"min_area must be an int in [0, max_area={self.max_area}], got {min_area!r}"
            )
        extra = dict(call_kwargs or {})
        clash = sorted(_RESERVED.intersection(extra))
        if clash:
            raise ValueError(f"call_kwargs must not set {clash!r}: the editor sets them itself")
        self.model = None if pipeline is not None else (model or self.default_model)
        self.options = options or LoadOptions()
        self.num_inference_steps = num_inference_steps or self.default_steps
        self.guidance_scale = (
            self.default_guidance if guidance_scale is None else float(guidance_scale)
        )
        self.call_kwargs = extra
        self._pipe = pipeline

    @classmethod
    def from_pipeline(cls, pipeline: Any, **kwargs: Any) -> DiffusersEditor:
        """An editor around an already-built pipeline (same keyword options as ``__init__``)."""
        expected = cls.pipeline_class
        if expected and not is_pipeline(pipeline, expected):
            raise TypeError(f"{cls.__name__} drives a {expected}, got {pipeline!r}")
        return cls(pipeline=pipeline, **kwargs)

    # -- capabilities -------------------------------------------------------------------------
    #: Whether ``mirage_sampler`` builds a MIRAGE regional sampler for this family. A family
    #: with MIRAGE support sets it and overrides ``mirage_sampler`` in its own module.
    supports_mirage: ClassVar[bool] = False

    def mirage_sampler(self, **options: Any) -> tuple[Any, dict[str, Any]]:
        """This family's MIRAGE sampler on this editor's pipeline (loaded now), and the keyword
        arguments each sampler call needs (from this editor's call options). ``options`` go to
        the sampler's constructor (e.g. ``max_batch``)."""
        raise ValueError(
            f"{type(self).__name__} ({self.family}) has no MIRAGE sampler; "
            f"supports_mirage is False for {self!r}"
        )

    def __repr__(self) -> str:
        source = repr(self.model) if self.model is not None else f"<{type(self._pipe).__name__}>"
        return (
            f"{type(self).__name__}({source}, steps={self.num_inference_steps}, "
            f"guidance={self.guidance_scale})"
        )

    # -- loading ------------------------------------------------------------------------------
    def _pipeline(self) -> Any:
        """The pipeline, loaded on first use (once per process per model, dtype and device)."""
        if self._pipe is None:
            opts = self.options.resolved()
            key = (
                "diffusers",
                self.pipeline_class,
                self.model,
                opts.dtype,
                opts.device,
                opts.cpu_offload,
            )
            pipe = REGISTRY.get(key, lambda: self._load(opts))
            self._check_pipeline(pipe)
            self._pipe = pipe
        return self._pipe

    def _check_pipeline(self, pipe: Any) -> None:
        """Raise ``ValueError`` if a loaded checkpoint does not suit this editor's settings."""

    def _load(self, opts: LoadOptions) -> Any:
        local = resolve_local(self.model, what=self.family or type(self).__name__)
        cls = getattr(import_diffusers(), self.pipeline_class)
        pipe = cls.from_pretrained(local, dtype=torch_dtype(opts.dtype), local_files_only=True)
        if opts.cpu_offload:
            pipe.enable_model_cpu_offload(device=opts.device)
        else:
            pipe.to(opts.device)
        pipe.set_progress_bar_config(disable=True)  # progress goes to the agent's events
        return pipe

    # -- the edit -----------------------------------------------------------------------------
    def check_inputs(
        self,
        image: Any,
        instruction: Any,
        seed: Any,
        num_inference_steps: Any,
        guidance_scale: Any,
        progress: Any,
        height: Any = None,
        width: Any = None,
    ) -> None:
        """Raise ``ValueError`` naming the first bad argument and its value."""
        from PIL import Image

        if not isinstance(image, Image.Image):
            raise ValueError(f"image must be a PIL.Image.Image, got {type(image).__name__}")
        if image.width < 1 or image.height < 1:
            raise ValueError(f"image must not be empty, got size {image.size!r}")
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError(f"instruction must be a non-empty string, got {instruction!r}")
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63
        ):
            raise ValueError(f"seed must be None or an int in [0, 2**63), got {seed!r}")
        _check_steps("num_inference_steps", num_inference_steps)
        _check_guidance("guidance_scale", guidance_scale)
        if progress is not None and not callable(progress):
            raise ValueError(f"progress must be callable or None, got {progress!r}")
        for name, value in (("height", height), ("width", width)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(f"{name} must be None or a positive int, got {value!r}")
        if (height is None) != (width is None):
            raise ValueError(
                f"height and width go together, got height={height!r}, width={width!r}"
            )

    def edit(
        self,
        image: Image.Image,
        instruction: str,
        *,
        seed: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        progress: ProgressFn | None = None,
        height: int | None = None,
        width: int | None = None,
    ) -> Image.Image:
        """Edit ``image`` (RGB PIL) as ``instruction`` says; returns an RGB PIL image of the
        input's size, or ``width`` x ``height`` when given. ``seed`` None draws fresh noise;
        ``progress(i, N)`` is called after each denoising step i = 1..N."""
        from PIL import Image

        # 1. check inputs
        self.check_inputs(
            image, instruction, seed, num_inference_steps, guidance_scale, progress, height, width
        )
        steps = num_inference_steps or self.num_inference_steps
        guidance = self.guidance_scale if guidance_scale is None else float(guidance_scale)
        out_w, out_h = (width, height) if width is not None else image.size

        # 2. load the pipeline (first call only) and pick the generation sizes
        pipe = self._pipeline()
        multiple = self._multiple(pipe)
        ref_w, ref_h = self._generation_size(image.width, image.height, multiple)
        gen_w, gen_h = (
            (ref_w, ref_h) if width is None else self._generation_size(out_w, out_h, multiple)
        )
        source = image.convert("RGB")
        if source.size != (ref_w, ref_h):
            source = source.resize((ref_w, ref_h), Image.Resampling.LANCZOS)

        # 3. seed and progress
        import torch

        device = pipe._execution_device
        generator = None if seed is None else torch.Generator(device=device).manual_seed(seed)
        kwargs = self._call_kwargs(pipe, source, instruction, steps, guidance, gen_w, gen_h)
        kwargs.update(self.call_kwargs)
        kwargs.update(
            image=source,
            prompt=instruction,
            generator=generator,
            num_inference_steps=steps,
            output_type="pil",
            return_dict=True,
        )
        if progress is not None:
            kwargs["callback_on_step_end"] = _step_callback(progress, steps)

        # 4. denoise: one diffusion per device, one call per pipeline at a time
        with REGISTRY.device_lock(str(device)), _call_lock(pipe):
            result = self._run(pipe, kwargs).images[0]

        # 5. back to the asked size
        result = result.convert("RGB")
        if result.size != (out_w, out_h):
            result = result.resize((out_w, out_h), Image.Resampling.LANCZOS)
        return result

    # -- hooks for subclasses -----------------------------------------------------------------
    def _call_kwargs(
        self,
        pipe: Any,
        image: Image.Image,
        instruction: str,
        steps: int,
        guidance: float,
        width: int,
        height: int,
    ) -> dict[str, Any]:
        """Pipeline-specific call arguments: guidance mapping, output size, extras."""
        return {"guidance_scale": guidance, "height": height, "width": width}

    def _run(self, pipe: Any, kwargs: dict[str, Any]) -> Any:
        """Call the pipeline (a hook for editors that must wrap the call)."""
        return pipe(**kwargs)

    @staticmethod
    def _multiple(pipe: Any) -> int:
        """Pixel multiple of the generation size: VAE factor x 2 (2x2 latent patches)."""
        return int(pipe.vae_scale_factor) * 2

    def _generation_size(self, width: int, height: int, multiple: int) -> tuple[int, int]:
        """``width x height`` scaled into ``[min_area, max_area]``, rounded to ``multiple``
        (down when shrinking, so the cap holds), each side at least ``min_side``."""
        area = width * height
        scale = 1.0
        if area > self.max_area:
            scale = math.sqrt(self.max_area / area)
        elif area < self.min_area:
            scale = math.sqrt(self.min_area / area)
        snap = math.floor if scale < 1 else (lambda x: math.floor(x + 0.5))  # half up, not to even
        least = max(1, math.ceil(self.min_side / multiple))
        w = max(least, int(snap(width * scale / multiple))) * multiple
        h = max(least, int(snap(height * scale / multiple))) * multiple
        return w, h


def _step_callback(progress: ProgressFn, steps: int) -> Any:
    """A diffusers ``callback_on_step_end`` reporting ``progress(i + 1, N)``."""

    def on_step_end(pipe: Any, i: int, t: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        total = getattr(pipe, "_num_timesteps", None) or steps  # schedulers of order 2 run more
        progress(i + 1, int(total))
        return {}

    return on_step_end


def _check_steps(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be None or a positive int, got {value!r}")


def _check_guidance(name: str, value: Any) -> None:
    if value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{name} must be None or a finite number >= 0, got {value!r}")
