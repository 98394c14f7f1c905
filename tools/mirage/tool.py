"""``regional_edit``: MIRAGE as an editor of the agent loop and as a LangChain tool.

``RegionalEditor`` satisfies the ``Editor`` protocol: given an image and an instruction it
parses the instruction into (expression, edit) pairs, grounds each expression, and runs the
MIRAGE sampler with one region per pair. Its output carries the regions used, so the agent's
step record shows them. Regions given explicitly skip parsing and grounding.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from langchain_core.tools import BaseTool, ToolException
from pydantic import BaseModel, Field

from tools.artifacts import ArtifactStore, ImageRef
from tools.contracts import Box, EditOutput, Grounder
from tools.errors import GroundingError, RecoverableToolError
from tools.lc import validation_answer
from tools.mirage.parse import InstructionParser
from tools.mirage.regions import Region
from tools.models import REGISTRY

if TYPE_CHECKING:
    from PIL import Image

    from tools.contracts import ProgressFn

__all__ = ["RegionalEditor", "RegionalEditArgs", "RegionalEditTool"]


class RegionalEditor:
    """MIRAGE behind the ``Editor`` protocol.

    ``sampler``: a ``MirageFlux2`` (or any callable with its signature); ``parser`` and
    ``grounder`` find the regions (parse and ground, ``docs/mirage.md``). ``rho`` and the two
    ablation switches are passed to the sampler. ``num_inference_steps``/``guidance_scale``
    default to the sampler's when not given per call.
    """

    #: ``edit`` takes ``regions=``: the loop passes a user's boxes as the regions to edit.
    takes_regions: ClassVar[bool] = True

    def __init__(
        self,
        sampler: Callable[..., Any],
        *,
        parser: InstructionParser | None = None,
        grounder: Grounder | None = None,
        rho: float = 0.6,
        target_replacement: bool = True,
        background_replacement: bool = True,
        num_inference_steps: int = 50,
        guidance_scale: float = 4.0,
        sampler_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if not 0 < rho <= 1:
            raise ValueError(f"rho must be in (0, 1], got {rho!r}")
        self.sampler = sampler
        self.parser = parser
        self.grounder = grounder
        self.rho = rho
        self.target_replacement = target_replacement
        self.background_replacement = background_replacement
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.sampler_kwargs = dict(sampler_kwargs or {})

    @classmethod
    def for_editor(cls, editor: Any, **kwargs: Any) -> RegionalEditor:
        """Build on an editor whose family supports MIRAGE (``editor.supports_mirage``): its
        sampler on the editor's pipeline (loaded now), its steps, guidance and call options.
        ``kwargs`` are ``RegionalEditor`` arguments; ``sampler_kwargs`` given here win over the
        editor's."""
        if not getattr(editor, "supports_mirage", False):
            raise ValueError(
                f"editor {editor!r} has no MIRAGE sampler (supports_mirage is not "
                f"True); MIRAGE needs a family that declares one"
            )
        sampler, call = editor.mirage_sampler()
        kwargs.setdefault("num_inference_steps", editor.num_inference_steps)
        kwargs.setdefault("guidance_scale", editor.guidance_scale)
        kwargs["sampler_kwargs"] = {**call, **(kwargs.get("sampler_kwargs") or {})}
        return cls(sampler, **kwargs)

    def find_regions(
        self, image: Image.Image, instruction: str
    ) -> tuple[list[Region], dict[str, Any]]:
        """Parse and ground: one region per (expression, edit) pair. Raises recoverable errors
        (``RegionParseError``, ``GroundingError``) when a target cannot be found."""
        if self.parser is None or self.grounder is None:
            raise ValueError("finding regions needs parser= and grounder= (or pass regions=)")
        t0 = time.perf_counter()
        pairs = self.parser.parse(image, instruction)
        t1 = time.perf_counter()
        regions = []
        for pair in pairs:
            found = self.grounder.ground(image, pair.expression)
            if not found.boxes:
                raise GroundingError(f"no region found for {pair.expression!r}", tool="grounder")
            regions.append(
                Region(instruction=pair.instruction, box=found.boxes[0], expression=pair.expression)
            )
        timings = {"parse_s": t1 - t0, "ground_s": time.perf_counter() - t1}
        return regions, timings

    def edit(
        self,
        image: Image.Image,
        instruction: str,
        *,
        seed: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        progress: ProgressFn | None = None,
        regions: list[Region] | None = None,
        rho: float | None = None,
    ) -> EditOutput:
        rho = self.rho if rho is None else rho
        timings: dict[str, float] = {}
        if regions is None:
            regions, timings = self.find_regions(image, instruction)
        pipe = getattr(self.sampler, "pipe", None)
        device = str(getattr(pipe, "_execution_device", "cpu")) if pipe is not None else "cpu"
        with REGISTRY.device_lock(device):
            out = self.sampler(
                image,
                instruction,
                regions,
                rho=rho,
                seed=seed,
                progress=progress,
                num_inference_steps=num_inference_steps or self.num_inference_steps,
                guidance_scale=self.guidance_scale if guidance_scale is None else guidance_scale,
                target_replacement=self.target_replacement,
                background_replacement=self.background_replacement,
                **self.sampler_kwargs,
            )
        timings.update(out.timings)
        info = {
            "strategy": "mirage",
            "rho": rho,
            "regions": [
                {
                    "expression": r.expression,
                    "instruction": r.instruction,
                    "box": list(r.box.as_tuple()),
                    "snapped_box": list(b),
                }
                for r, b in zip(regions, out.boxes)
            ],
            "transformer_calls": len(out.calls),
            "timings": {k: round(v, 4) for k, v in timings.items()},
        }
        return EditOutput(image=out.image, info=info)


class RegionArg(BaseModel):
    instruction: str = Field(description="the edit for this region")
    box: list[int] = Field(min_length=4, max_length=4, description="pixel box [x1, y1, x2, y2]")


class RegionalEditArgs(BaseModel):
    image: ImageRef = Field(description="the image to edit")
    instruction: str = Field(description="the full instruction; may name several objects")
    regions: list[RegionArg] | None = Field(
        default=None, description="explicit regions; None = parse the instruction and ground them"
    )
    rho: float = Field(
        default=0.6, gt=0, le=1, description="share of steps run by the global branch"
    )
    seed: int | None = Field(default=None, description="random seed")
    num_inference_steps: int | None = Field(default=None, ge=1)
    guidance_scale: float | None = Field(default=None, ge=0)


class RegionalEditTool(BaseTool):
    """MIRAGE as a langchain-core tool: returns the edited image's ref and the regions used."""

    name: str = "regional_edit"
    description: str = (
        "Edit several specific objects of an image at once, keeping everything "
        "else exactly as it was. Returns the edited image and the regions used."
    )
    args_schema: type[BaseModel] = RegionalEditArgs
    editor: RegionalEditor
    store: ArtifactStore
    handle_tool_error: bool = True  # bad arguments and recoverable failures are answers
    handle_validation_error: Callable[[Exception], str] = validation_answer

    def _run(
        self,
        image: ImageRef,
        instruction: str,
        regions: list[Any] | None = None,
        rho: float = 0.6,
        seed: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        **_: Any,
    ) -> dict[str, Any]:
        given = None
        try:
            source = self.store.open(image)
        except (ValueError, FileNotFoundError, TypeError, OSError) as exc:
            raise ToolException(f"image={image!r} cannot be read: {exc}") from exc
        if regions is not None:
            try:
                given = [
                    Region(
                        instruction=_get(r, "instruction"),
                        box=Box(**dict(zip("x1 y1 x2 y2".split(), _get(r, "box")))),
                    )
                    for r in regions
                ]
            except ValueError as exc:  # pydantic's ValidationError is one
                raise ToolException(f"regions={regions!r} are not valid: {exc}") from exc
        try:
            out = self.editor.edit(
                source,
                instruction,
                seed=seed,
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                regions=given,
                rho=rho,
            )
        except RecoverableToolError as exc:
            raise ToolException(str(exc)) from exc
        return {"image": self.store.put(out.image), **out.info}


def _get(obj: Any, key: str) -> Any:
    return obj[key] if isinstance(obj, dict) else getattr(obj, key)
