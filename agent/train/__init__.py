"""Training the project's own micro models on the micro-world (``mira-train``).

Heavy libraries (torch, diffusers, transformers, tokenizers) are imported inside functions.
"""

__all__: list[str] = []
