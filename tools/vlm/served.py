"""VLM roles on an OpenAI-compatible chat server (vLLM, SGLang, ...): planner, grounder, critic,
and through the grounder the MIRAGE instruction parser.

``ServedVL`` is a Qwen-VL behind ``/v1/chat/completions`` with the ``generate`` of the local
``tools.vlm._qwen.QwenVL``, so the local role classes run on it unchanged: ``MiraPlanner``,
``QwenVLGrounder``, ``EditScoreCritic`` and ``tools.mirage.parse.VLMInstructionParser`` build the
same messages (MIRA template, grounding prompt, EditScore texts, parse prompt) and parse the
answers the same way; only the transport differs. Images go as base64 PNG data URLs (lossless),
in the order of the message. Requests go through langchain-openai (``pip install
'mira-agent[serve]'``), imported on the first request.

LoRA adapters are addressed by model name, as vLLM serves them (``--lora-modules
NAME=PATH``): ``adapters`` maps a role's adapter (``"editscore"``) to the served name;
``adapter=None`` asks the base ``model``. docs/serving.md gives the ``vllm serve`` commands.

Only chat prompts travel: a ``RawPrompt`` (EditScore's hand-written Qwen2.5-VL string) has no
OpenAI chat form, so the served critic and grounder use the Qwen3-VL family (chat template,
boxes on 0..1000).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tools.vlm._common import check_generate_args, image_url_block, message_text
from tools.vlm.critic import EDITSCORE_ADAPTER, EditScoreCritic
from tools.vlm.grounder import QwenVLGrounder
from tools.vlm.planner import DEFAULT_IMAGE_SIZE, MiraPlanner

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "ServedVL",
    "to_openai_messages",
    "served_planner",
    "served_grounder",
    "served_critic",
    "DEFAULT_PLANNER_URL",
    "DEFAULT_JUDGE_URL",
]

#: Where docs/serving.md starts the MIRA planner server.
DEFAULT_PLANNER_URL = "http://127.0.0.1:8000/v1"
#: Where docs/serving.md starts the Qwen3-VL server (grounder, parser, EditScore LoRA critic).
DEFAULT_JUDGE_URL = "http://127.0.0.1:8001/v1"


def to_openai_messages(prompt: Any) -> list[Any]:
    """A ``QwenVL`` chat (``[{"role", "content": [{"type": "image", "image": PIL} | {"type":
    "text", "text": ...}]}]``) as langchain-core messages with image_url blocks, same order."""
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    from tools.vlm._qwen import RawPrompt

    if isinstance(prompt, RawPrompt):
        raise ValueError(
            "a RawPrompt (a model-specific chat string) cannot be sent to an OpenAI-compatible "
            "chat endpoint; use a Qwen3-VL family model (family='qwen3') for this role"
        )
    kinds = {"user": HumanMessage, "system": SystemMessage, "assistant": AIMessage}
    out = []
    for message in prompt:
        role = message.get("role")
        if role not in kinds:
            raise ValueError(f"message role must be one of {sorted(kinds)}, got {role!r}")
        content = message["content"]
        if isinstance(content, list):
            content = [
                image_url_block(item["image"]) if item.get("type") == "image" else dict(item)
                for item in content
            ]
        out.append(kinds[role](content=content))
    return out


class ServedVL:
    """A Qwen-VL served by an OpenAI-compatible chat server, with ``QwenVL.generate``'s call.

    ``model`` is the served base model name, ``adapters`` maps adapter names (as the role
    classes pass them, e.g. ``"editscore"``) to the served LoRA names. ``family`` decides the
    grounding convention and the critic's prompt format, as for a local model.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key: str | None = None,
        adapters: Mapping[str, str] | None = None,
        family: str = "qwen3",
        timeout: float = 120.0,
        max_retries: int = 2,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be a non-empty string, got {model!r}")
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        if family not in ("qwen3", "qwen2.5"):
            raise ValueError(f"family must be 'qwen3' or 'qwen2.5', got {family!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout!r}")
        self.model, self.base_url, self.family = model, base_url, family
        self.adapters = dict(adapters or {})
        self._api_key = api_key if api_key is not None else "EMPTY"  # vLLM without --api-key
        self.timeout, self.max_retries = float(timeout), int(max_retries)
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return f"{self.model}@{self.base_url}"

    def served_name(self, adapter: str | None) -> str:
        """The model name a request with ``adapter`` goes to."""
        if adapter is None:
            return self.model
        if adapter not in self.adapters:
            raise ValueError(
                f"adapter {adapter!r} is not served: known adapters {sorted(self.adapters)!r} "
                f"(name its LoRA module with adapters={{{adapter!r}: '<served name>'}})"
            )
        return self.adapters[adapter]

    def _client(self, served: str) -> Any:
        with self._lock:
            if served not in self._clients:
                try:
                    from langchain_openai import ChatOpenAI
                except ImportError as exc:
                    raise ImportError(
                        "server-backed VLM roles need langchain-openai: "
                        "pip install 'mira-agent[serve]'"
                    ) from exc
                self._clients[served] = ChatOpenAI(
                    model=served,
                    base_url=self.base_url,
                    api_key=self._api_key,
                    timeout=self.timeout,
                    max_retries=self.max_retries,
                    use_responses_api=False,
                )
            return self._clients[served]

    def image_frame(self, image: Image.Image) -> tuple[int, int]:
        raise NotImplementedError(
            "a served model's processor frame is unknown: use family='qwen3' (0..1000 boxes)"
        )

    def generate(
        self,
        prompts: Sequence[Any],
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float | None = None,
        top_k: int | None = None,
        seed: int | None = None,
        num_return_sequences: int = 1,
        adapter: str | None = None,
        cache_implementation: str | None = None,  # a local decoding choice: the server's own
        compile: bool | None = None,
        fast: bool | None = None,
    ) -> list[list[str]]:
        """``answers[i][j]``: the j-th answer to prompt i (one request per prompt, ``n`` answers
        each), stripped. The sampling settings travel with each request."""
        check_generate_args(prompts, max_new_tokens, temperature, num_return_sequences)
        client = self._client(self.served_name(adapter))
        params: dict[str, Any] = {
            "max_tokens": max_new_tokens,
            "temperature": temperature,
            "n": num_return_sequences,
        }
        if top_p is not None:
            params["top_p"] = top_p
        if seed is not None:
            params["seed"] = seed
        if top_k is not None:  # not in OpenAI's schema; vLLM reads it from the body
            params["extra_body"] = {"top_k": top_k}
        result = client.generate([to_openai_messages(p) for p in prompts], **params)
        return [[message_text(g.message).strip() for g in gens] for gens in result.generations]


# -- registry factories -------------------------------------------------------------------------
def _number(name: str, value: Any, kind: type) -> Any:
    """``value`` as ``kind`` (options from the command line arrive as strings)."""
    try:
        return kind(value)
    except (TypeError, ValueError):
        what = "an integer" if kind is int else "a number"
        raise ValueError(f"{name} must be {what}, got {value!r}") from None


def served_planner(
    *,
    base_url: str = DEFAULT_PLANNER_URL,
    model: str = "mira",
    api_key: str | None = None,
    image_size: int | str | None = DEFAULT_IMAGE_SIZE,
    max_new_tokens: int | str = 64,
    timeout: float | str = 120.0,
) -> MiraPlanner:
    """The MIRA planner on a server: ``model`` is the served name of the MIRA checkpoint (or of
    its LoRA module on Qwen2.5-VL). Greedy, 512-pixel images, as the local planner."""
    vlm = ServedVL(
        model,
        base_url=base_url,
        api_key=api_key,
        family="qwen2.5",
        timeout=_number("timeout", timeout, float),
    )
    size = None if image_size in (None, "none", "None") else _number("image_size", image_size, int)
    return MiraPlanner(
        vlm, max_new_tokens=_number("max_new_tokens", max_new_tokens, int), image_size=size
    )


def served_grounder(
    *,
    base_url: str = DEFAULT_JUDGE_URL,
    model: str = "Qwen/Qwen3-VL-8B-Instruct",
    api_key: str | None = None,
    image_size: int | str | None = None,
    retries: int | str = 1,
    timeout: float | str = 120.0,
) -> QwenVLGrounder:
    """Qwen3-VL grounding on a server (base weights, boxes on 0..1000). The MIRAGE strategies
    parse the instruction with the same served model (``agent.wiring``)."""
    vlm = ServedVL(
        model, base_url=base_url, api_key=api_key, timeout=_number("timeout", timeout, float)
    )
    size = None if image_size in (None, "none", "None") else _number("image_size", image_size, int)
    return QwenVLGrounder(
        vlm, convention="qwen3", image_size=size, retries=_number("retries", retries, int)
    )


def served_critic(
    *,
    base_url: str = DEFAULT_JUDGE_URL,
    model: str = "Qwen/Qwen3-VL-8B-Instruct",
    lora: str | None = "editscore",
    api_key: str | None = None,
    num_passes: int | str = 1,
    timeout: float | str = 120.0,
) -> EditScoreCritic:
    """EditScore on a server: Qwen3-VL ``model`` with the EditScore LoRA served as ``lora``
    (None or "none": the weights of ``model`` itself, e.g. a merged checkpoint). EditScore's
    sampling (temperature 0.7, top_p 0.9, top_k 20, 512 tokens, seed 42), Avg@N as ``n``."""
    adapters = {} if lora in (None, "none", "None") else {EDITSCORE_ADAPTER: str(lora)}
    vlm = ServedVL(
        model,
        base_url=base_url,
        api_key=api_key,
        adapters=adapters,
        timeout=_number("timeout", timeout, float),
    )
    return EditScoreCritic(
        vlm,
        adapter=EDITSCORE_ADAPTER if adapters else None,
        num_passes=_number("num_passes", num_passes, int),
    )


#: Registry names declared by this module (``tools.registry``): kind -> name -> factory here.
BACKENDS = {
    "planner": {"mira-server": "served_planner"},
    "grounder": {"qwen-vl-server": "served_grounder"},
    "critic": {"editscore-server": "served_critic"},
}
