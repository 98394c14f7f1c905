"""Random-weight pipelines for every editor family: tiny ones for CPU tests and the ``tiny``
preset, real-size ones from ``tools/model_configs`` for GPU timing.

The machinery is ``tools.editors._random``; what each family builds (``RECIPES``) and its tiny
factory live in the family's own module. This module gathers them under one name:
``build_from_configs``, ``tiny_pipeline``, the inline tokenizers, the tiny factories, and the
tables ``CONFIG_DIRS`` (config folder -> pipeline class), ``TINY`` (config folder -> tiny
overrides) and ``TINY_CALL_KWARGS`` (config folder -> call arguments a tiny pipeline needs),
read from the recipes.
"""

from __future__ import annotations

from typing import Any

from tools.editors._random import (
    CONFIG_ROOT,
    build_from_configs,
    clip_tokenizer,
    config_dirs,
    qwen2_tokenizer,
    recipes,
    t5_tokenizer,
    tiny_pipeline,
)
from tools.editors.flux2 import (
    tiny_flux2_editor,
    tiny_flux2_klein_base_editor,
    tiny_flux2_klein_editor,
)
from tools.editors.flux_kontext import tiny_flux_kontext_editor
from tools.editors.ip2p import tiny_ip2p_editor
from tools.editors.qwen_edit import tiny_qwen_edit_plus_editor

__all__ = [
    "CONFIG_ROOT",
    "CONFIG_DIRS",
    "TINY",
    "TINY_CALL_KWARGS",
    "build_from_configs",
    "tiny_pipeline",
    "qwen2_tokenizer",
    "clip_tokenizer",
    "t5_tokenizer",
    "tiny_ip2p_editor",
    "tiny_flux_kontext_editor",
    "tiny_flux2_editor",
    "tiny_flux2_klein_editor",
    "tiny_flux2_klein_base_editor",
    "tiny_qwen_edit_plus_editor",
]

#: config folder -> pipeline class it builds.
CONFIG_DIRS: dict[str, str] = config_dirs()
#: config folder -> the overrides that make it tiny (deep-merged, per component).
TINY: dict[str, Any] = {d: r.tiny[d] for d, r in recipes().items() if d in r.tiny}
#: config folder -> call arguments its tiny pipeline needs.
TINY_CALL_KWARGS: dict[str, dict[str, Any]] = {
    d: dict(r.tiny_call_kwargs.get(d, {})) for d, r in recipes().items() if d in r.tiny
}
