"""Byte-level BPE tokenizers for the micro models, trained with the ``tokenizers`` library and
served by ``transformers.Qwen2Tokenizer`` (the class the real Qwen checkpoints use)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["train_qwen_bpe"]


def train_qwen_bpe(
    texts: Iterable[str],
    *,
    vocab_size: int,
    specials: Sequence[str],
    chat_template: str,
    model_max_length: int,
) -> Any:
    """A ``Qwen2Tokenizer`` whose BPE merges are learned on ``texts``, with Qwen2's own
    pre-tokenizer (so the served tokenizer splits text exactly as training did).

    ``specials[0]`` is the padding token; the rest become additional special tokens; the end
    of a turn is ``<|im_end|>``. ``ValueError`` when the result outgrows ``vocab_size``."""
    from tokenizers import Tokenizer, decoders, models, trainers
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import Qwen2Tokenizer

    def qwen(vocab: dict[str, int], merges: list[tuple[str, str]]) -> Any:
        return Qwen2Tokenizer(
            vocab=vocab,
            merges=merges,
            unk_token=None,
            bos_token=None,
            eos_token="<|im_end|>",
            pad_token=specials[0],
            model_max_length=model_max_length,
        )

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = qwen({"a": 0}, []).backend_tokenizer.pre_tokenizer
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(specials),
        initial_alphabet=ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tok = qwen(model["vocab"], merges)  # type: ignore[arg-type]
    tok.add_special_tokens({"additional_special_tokens": list(specials[1:])})
    tok.chat_template = chat_template
    if len(tok) > vocab_size:
        raise ValueError(f"tokenizer has {len(tok)} tokens, more than vocab_size={vocab_size}")
    return tok
