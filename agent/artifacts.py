"""The artifact store, re-exported from ``tools.artifacts`` (the bottom layer, where it lives)."""

from tools.artifacts import ArtifactStore, ImageRef, default_artifacts_dir

__all__ = ["ImageRef", "ArtifactStore", "default_artifacts_dir"]
