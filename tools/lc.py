"""The tool contracts as langchain-core tools, so a LangChain chat agent can call them.

Images cross the boundary as ``ImageRef``s: each tool resolves its inputs through the
artifact store and stores its outputs there. Bad arguments (a malformed or unknown
``ImageRef``, a missing field) and recoverable tool errors become the tool's answer, an error
``ToolMessage`` (``handle_tool_error``, ``handle_validation_error``), so a chat model can react
to "no region found" or "artifact not in the store" and the chat run goes on; other errors
(fatal tool errors, bugs) raise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langchain_core.tools import BaseTool, ToolException
from pydantic import BaseModel, Field

from tools.artifacts import ArtifactStore, ImageRef
from tools.contracts import Critic, Editor, Grounder, HistoryItem, Planner
from tools.errors import InvalidInputError, RecoverableToolError

__all__ = ["EditorTool", "GrounderTool", "CriticTool", "PlannerTool", "validation_answer"]


class EditArgs(BaseModel):
    image: ImageRef = Field(description="the image to edit")
    instruction: str = Field(description="one atomic edit, e.g. 'make the car red'")
    seed: int | None = Field(default=None, description="random seed, for reproducible output")
    num_inference_steps: int | None = Field(default=None, ge=1, description="denoising steps")
    guidance_scale: float | None = Field(default=None, ge=0, description="guidance scale")


class GroundArgs(BaseModel):
    image: ImageRef = Field(description="the image to search")
    expression: str = Field(description="a referring expression, e.g. 'the leftmost dog'")


class CritiqueArgs(BaseModel):
    source: ImageRef = Field(description="the image before the edit")
    edited: ImageRef = Field(description="the image after the edit")
    instruction: str = Field(description="the edit that was asked for")
    mask: ImageRef | None = Field(default=None, description="optional region mask to judge within")


class PlanArgs(BaseModel):
    original: ImageRef = Field(description="the user's original image")
    current: ImageRef = Field(description="the latest accepted edited image")
    instruction: str = Field(description="the full, possibly compositional instruction")
    history: list[HistoryItem] = Field(default_factory=list, description="earlier steps")


def validation_answer(exc: Exception) -> str:
    """The answer to a tool call whose arguments do not validate: pydantic's own message, which
    names each bad argument and its value, so the model can correct the call."""
    return f"invalid tool arguments: {exc}"


def _recoverable(exc: Exception) -> ToolException:
    return ToolException(str(exc))


class _StoreTool(BaseTool):
    store: ArtifactStore
    handle_tool_error: bool = True  # ToolException text goes back to the model as the answer
    # so does a tool call whose arguments do not validate, naming them
    handle_validation_error: Callable[[Exception], str] = validation_answer

    def _open(self, ref: ImageRef, argument: str) -> Any:
        """The stored image behind ``ref``; a ref the store cannot read is the model's mistake,
        answered with a ``ToolException`` that names the argument and its value."""
        try:
            return self.store.open(ref)
        except (ValueError, FileNotFoundError, TypeError, OSError) as exc:
            raise ToolException(f"{argument}={ref!r} cannot be read: {exc}") from exc

    def _open_mask(self, ref: ImageRef, argument: str) -> Any:
        try:
            return self.store.open_mask(ref)
        except (ValueError, FileNotFoundError, TypeError, OSError) as exc:
            raise ToolException(f"{argument}={ref!r} cannot be read: {exc}") from exc


class EditorTool(_StoreTool):
    """Apply one atomic edit; returns the edited image's ``ImageRef``."""

    name: str = "edit_image"
    description: str = (
        "Apply one atomic, instruction-guided edit to an image; returns the edited image."
    )
    args_schema: type[BaseModel] = EditArgs
    editor: Editor

    def _run(
        self,
        image: ImageRef,
        instruction: str,
        seed: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        **_: Any,
    ) -> ImageRef:
        try:
            out = self.editor.edit(
                self._open(image, "image"),
                instruction,
                seed=seed,
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
            )
        except (RecoverableToolError, InvalidInputError) as exc:
            raise _recoverable(exc) from exc
        return self.store.put(out)


class GrounderTool(_StoreTool):
    """Find the region a referring expression names; returns pixel XYXY boxes and mask refs."""

    name: str = "ground_region"
    description: str = (
        "Find the region of an image that a referring expression names; "
        "returns pixel boxes [x1, y1, x2, y2] and, when available, mask images."
    )
    args_schema: type[BaseModel] = GroundArgs
    grounder: Grounder

    def _run(self, image: ImageRef, expression: str, **_: Any) -> dict[str, Any]:
        try:
            found = self.grounder.ground(self._open(image, "image"), expression)
        except RecoverableToolError as exc:
            raise _recoverable(exc) from exc
        masks = [self.store.put_mask(m) for m in found.masks] if found.masks else None
        return {
            "expression": expression,
            "boxes": [list(b.as_tuple()) for b in found.boxes],
            "masks": masks,
        }


class CriticTool(_StoreTool):
    """Score an edit EditScore-style; returns sub-scores, SC, PQ, Overall and ``valid``."""

    name: str = "critique_edit"
    description: str = (
        "Score how well an edited image follows an instruction and how natural "
        "it looks (0-10); returns sub-scores, overall and reasoning."
    )
    args_schema: type[BaseModel] = CritiqueArgs
    critic: Critic

    def _run(
        self,
        source: ImageRef,
        edited: ImageRef,
        instruction: str,
        mask: ImageRef | None = None,
        **_: Any,
    ) -> dict[str, Any]:
        mask_arr = self._open_mask(mask, "mask") if mask is not None else None
        before, after = self._open(source, "source"), self._open(edited, "edited")
        try:
            critique = self.critic.critique(before, after, instruction, mask=mask_arr)
        except RecoverableToolError as exc:
            raise _recoverable(exc) from exc
        return {**critique.summary(), "reasoning": critique.reasoning}


class PlannerTool(_StoreTool):
    """Choose the next atomic edit (or stop) for a compositional instruction."""

    name: str = "plan_next_edit"
    description: str = (
        "Given the original image, the latest edited image and the full "
        "instruction, return the next atomic edit to apply, or stop."
    )
    args_schema: type[BaseModel] = PlanArgs
    planner: Planner

    def _run(
        self,
        original: ImageRef,
        current: ImageRef,
        instruction: str,
        history: list[HistoryItem] | None = None,
        **_: Any,
    ) -> dict[str, Any]:
        items = [HistoryItem.model_validate(h) for h in (history or [])]
        try:
            decision = self.planner.next_action(
                self._open(original, "original"), self._open(current, "current"), instruction, items
            )
        except RecoverableToolError as exc:
            raise _recoverable(exc) from exc
        return decision.model_dump()
