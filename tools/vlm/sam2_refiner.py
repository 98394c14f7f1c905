"""SAM2 refinement of grounding boxes into masks.

``SAM2ImagePredictor.set_image`` once per image (the expensive image encoder), then one cheap
``predict(box=...)`` per box. Models are built from the ``sam2`` package's own hydra configs plus
a checkpoint path (random weights without one, for tests), never downloaded.

sam2's predictor imports three transforms from torchvision (``Normalize``, ``Resize``,
``ToTensor``). Where torchvision is not installed (the project's CPU setup), an equivalent
torch-only ``SAM2Transforms`` is put in its place before the predictor is imported.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
import types
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tools.contracts import Box
from tools.models import REGISTRY, LoadOptions, ModelNotFoundError
from tools.vlm._common import Lazy

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = ["Sam2Refiner", "build_sam2_predictor", "load_sam2_predictor", "SAM2_CONFIGS"]

#: Packaged sam2 configs by short name (hydra config names inside the ``sam2`` package).
SAM2_CONFIGS = {
    "tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}

_shim_lock = threading.Lock()


def _install_transforms_shim() -> None:
    """Make ``sam2.utils.transforms`` importable without torchvision (no-op when it is there)."""
    with _shim_lock:
        if "sam2.utils.transforms" in sys.modules or importlib.util.find_spec("torchvision"):
            return
        import torch
        import torch.nn.functional as F

        class SAM2Transforms(torch.nn.Module):
            """Torch-only twin of sam2's ``SAM2Transforms``: to tensor, bilinear antialiased
            resize to ``resolution`` square, ImageNet normalisation; hole filling is not
            supported (``max_hole_area``/``max_sprinkle_area`` must be 0, sam2's default)."""

            def __init__(
                self,
                resolution: int,
                mask_threshold: float,
                max_hole_area: float = 0.0,
                max_sprinkle_area: float = 0.0,
            ) -> None:
                super().__init__()
                if max_hole_area > 0 or max_sprinkle_area > 0:
                    raise ValueError(
                        "hole filling needs sam2's torchvision transforms; install "
                        "torchvision or keep max_hole_area=max_sprinkle_area=0"
                    )
                self.resolution = resolution
                self.mask_threshold = mask_threshold
                self.register_buffer(
                    "mean", torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), persistent=False
                )
                self.register_buffer(
                    "std", torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1), persistent=False
                )

            def __call__(self, x: Any) -> torch.Tensor:
                import numpy as np

                t = torch.from_numpy(np.asarray(x, dtype=np.uint8).copy()).permute(
                    2, 0, 1
                )  # (3, H, W)
                t = t.float() / 255.0
                t = F.interpolate(
                    t[None],
                    size=(self.resolution, self.resolution),
                    mode="bilinear",
                    align_corners=False,
                    antialias=True,
                )[0]
                return (t - self.mean) / self.std

            def forward_batch(self, img_list: Sequence[Any]) -> torch.Tensor:
                return torch.stack([self(img) for img in img_list], dim=0)

            def transform_coords(
                self,
                coords: torch.Tensor,
                normalize: bool = False,
                orig_hw: tuple[int, int] | None = None,
            ) -> torch.Tensor:
                if normalize:
                    if orig_hw is None:
                        raise ValueError("orig_hw is required when normalize=True")
                    h, w = orig_hw
                    coords = coords.clone()
                    coords[..., 0] = coords[..., 0] / w
                    coords[..., 1] = coords[..., 1] / h
                return coords * self.resolution

            def transform_boxes(
                self,
                boxes: torch.Tensor,
                normalize: bool = False,
                orig_hw: tuple[int, int] | None = None,
            ) -> torch.Tensor:
                return self.transform_coords(boxes.reshape(-1, 2, 2), normalize, orig_hw)

            def postprocess_masks(
                self, masks: torch.Tensor, orig_hw: tuple[int, int]
            ) -> torch.Tensor:
                return F.interpolate(masks.float(), orig_hw, mode="bilinear", align_corners=False)

        module = types.ModuleType("sam2.utils.transforms")
        module.SAM2Transforms = SAM2Transforms  # type: ignore[attr-defined]
        module.__doc__ = "torch-only stand-in installed by tools.vlm.sam2_refiner (no torchvision)"
        sys.modules["sam2.utils.transforms"] = module


def _import_sam2() -> tuple[Any, Any]:
    try:
        import sam2  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "SAM2 refinement needs the `sam2` package: "
            "SAM2_BUILD_CUDA=0 pip install --no-deps sam2 hydra-core iopath"
        ) from exc
    _install_transforms_shim()
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    return build_sam2, SAM2ImagePredictor


def build_sam2_predictor(
    checkpoint: str | os.PathLike[str] | None,
    *,
    config: str = SAM2_CONFIGS["large"],
    image_size: int | None = None,
    device: str = "cpu",
    seed: int = 0,
) -> Any:
    """A ``SAM2ImagePredictor`` from a packaged sam2 config (a name in ``SAM2_CONFIGS`` or a
    config path) and a checkpoint file; ``checkpoint=None`` gives random weights (seeded).
    ``image_size`` overrides the model's input size (``++model.image_size``; tests use 256)."""
    import torch

    build_sam2, SAM2ImagePredictor = _import_sam2()
    config = SAM2_CONFIGS.get(config, config)
    overrides = [] if image_size is None else [f"++model.image_size={int(image_size)}"]
    torch.manual_seed(seed)
    ckpt = None if checkpoint is None else os.fspath(checkpoint)
    model = build_sam2(config, ckpt_path=ckpt, device=device, hydra_overrides_extra=overrides)
    predictor = SAM2ImagePredictor(model)
    if image_size is not None:
        # the predictor hard-codes the feature sizes of a 1024 input; a smaller input needs its own
        s = int(image_size)
        predictor._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]
    return predictor


def load_sam2_predictor(
    checkpoint: str | os.PathLike[str], *, config: str = "large", options: LoadOptions | None = None
) -> Any:
    """The shared SAM2 predictor for a local checkpoint file, built once per process. Raises
    ``ModelNotFoundError`` when the file is absent (never downloads)."""
    path = os.path.expanduser(os.fspath(checkpoint))
    if not os.path.isfile(path):
        raise ModelNotFoundError(
            f"SAM2 checkpoint {path!r} not found (not a file). This package never downloads "
            f"weights: download e.g. sam2.1_hiera_large.pt on a machine with access and pass its "
            f"path, or build with a config and random weights for testing.",
            tool="grounder",
        )
    opts = (options or LoadOptions()).resolved()
    key = ("sam2", os.path.abspath(path), config, opts.device)
    return REGISTRY.get(key, lambda: build_sam2_predictor(path, config=config, device=opts.device))


class Sam2Refiner:
    """Turns boxes into masks with a SAM2 image predictor (given, or a zero-argument loader)."""

    def __init__(self, predictor: Any | Callable[[], Any]) -> None:
        self._predictor = Lazy(predictor)
        self._lock = threading.Lock()  # a predictor holds one image at a time

    def refine(self, image: Image.Image, boxes: Sequence[Box]) -> list[np.ndarray]:
        """One HxW bool mask per box (pixel XYXY in ``image``'s frame), in order.

        ``set_image`` runs once for all boxes; each box is one ``predict(box=...)`` with a single
        mask output."""
        import numpy as np

        predictor = self._predictor.get()
        rgb = np.asarray(image.convert("RGB"))  # (H, W, 3) uint8
        masks = []
        with REGISTRY.device_lock(str(predictor.device)), self._lock:
            predictor.set_image(rgb)
            try:
                for box in boxes:
                    out, _scores, _logits = predictor.predict(
                        box=np.asarray(box.as_tuple(), dtype=np.float32), multimask_output=False
                    )
                    masks.append(np.asarray(out[0]) > 0)  # (H, W) bool
            finally:
                predictor.reset_predictor()
        return masks
