"""The one interface every nearest-neighbour backend implements.

A backend is a small subclass that fills in ``_add``, ``_remove``, ``_search``,
``_vectors``, ``_save_native`` and ``_load_native``; validation, locking, filtering
fallbacks, the saved header and atomic writes live here, once.

Distances are "smaller is closer" for every metric:

- ``cosine``: 1 − cos(a, b)
- ``l2``: Euclidean distance ‖a − b‖
- ``ip``: 1 − a·b (inner product, as hnswlib reports it)
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Iterable

import numpy as np

from .distances import nearest
from .errors import IndexFileError, IndexMismatch, InvalidInput
from .locks import RWLock, _save_lock

METRICS = ("cosine", "l2", "ip")
_F32 = np.dtype(np.float32)  # native float32: a query of that dtype is used as it is (`is`: no comparison call)
FORMAT_VERSION = 1
HEADER_FILE = "header.json"
# A filter that keeps at most this share of the items is answered by exact search over
# the allowed items: graph/tree search with a very selective filter misses results.
SELECTIVE_FILTER_SHARE = 0.05
SELECTIVE_FILTER_MAX = 20_000


class VectorIndex(ABC):
    """Nearest-neighbour index over (int64 id, float vector) pairs.

    Parameters
    ----------
    dim : vector dimension
    metric : "cosine", "l2" or "ip"
    **params : backend parameters (see each backend's ``default_params``)
    """

    name: ClassVar[str] = "base"
    default_params: ClassVar[dict[str, Any]] = {}
    query_param_names: ClassVar[tuple[str, ...]] = ()
    # True where the vectors live in a server (Milvus): counting and membership tests cost a
    # round trip there, so a search asks for neither and the backend filters by itself
    remote: ClassVar[bool] = False
    # True where a query holding NaN or inf always comes back with a non-finite nearest
    # distance (checked per backend in the tests): a single unfiltered query then skips the
    # upfront finiteness check (a numpy reduction that, between two graph walks, measured
    # 4-6 us slower than its own cost) and is checked only when its first distance is not finite
    finite_check_after: ClassVar[bool] = False

    def __init__(self, dim: int, metric: str = "cosine", **params: Any) -> None:
        if metric not in METRICS:
            raise InvalidInput(f"metric must be one of {METRICS}, not {metric!r}")
        if not isinstance(dim, (int, np.integer)) or dim <= 0:
            raise InvalidInput(f"dimension must be a positive integer, not {dim!r}")
        unknown = set(params) - set(self.default_params)
        if unknown:
            raise InvalidInput(f"unknown {self.name} parameter(s): {', '.join(sorted(unknown))}; "
                               f"known: {', '.join(self.default_params) or 'none'}")
        self.dim = int(dim)
        self.metric = metric
        self.params: dict[str, Any] = {**self.default_params, **params}
        self._query_names = frozenset(self.query_param_names)
        self.tag: str | None = None
        self.generation: int | None = None  # the caller's position in its source (saved in the header)
        self._lock = RWLock()

    # ---------------------------------------------------------------- public API
    def add(self, ids: Iterable[int] | np.ndarray, vectors: np.ndarray) -> None:
        """Add or replace vectors. ``ids``: shape (n,), ``vectors``: shape (n, dim).

        Re-adding an existing id replaces its vector. Bad input raises ``InvalidInput``
        and leaves the index unchanged.
        """
        ids_arr = self._check_ids(ids)
        vecs = self._check_vectors(vectors, name="vectors")
        if len(ids_arr) != len(vecs):
            raise InvalidInput(f"{len(ids_arr)} ids but {len(vecs)} vectors")
        if len(np.unique(ids_arr)) != len(ids_arr):
            raise InvalidInput("duplicate ids in one add call")
        if self.metric == "cosine" and np.any(np.linalg.norm(vecs, axis=1) == 0):
            raise InvalidInput("zero vector has no direction under the cosine metric")
        if len(ids_arr) == 0:
            return
        with self._lock.write():
            self._add(ids_arr, vecs)

    def remove(self, ids: Iterable[int] | np.ndarray) -> int:
        """Remove ids (unknown ids are ignored). Returns how many were removed."""
        ids_arr = self._check_ids(ids)
        with self._lock.write():
            present = ids_arr[self._contains_many(ids_arr)] if len(ids_arr) else ids_arr
            if len(present):
                self._remove(present)
            return int(len(present))

    def search(
        self, vectors: np.ndarray, k: int = 10, *, allowed: Iterable[int] | np.ndarray | None = None,
        **query_params: Any,
    ) -> tuple[np.ndarray, np.ndarray]:
        """k nearest neighbours of one query (shape (dim,)) or many (shape (n, dim)).

        Parameters
        ----------
        k : neighbours wanted; more than exist returns what exists
        allowed : optional ids to restrict results to; exactly ``min(k, |allowed ∩ index|)``
            results come back
        query_params : per-call backend settings (``ef`` for hnsw, ``search_k`` for annoy)

        Returns
        -------
        (ids, distances): shape (k',) for one query, (n, k') for many, where
        k' = min(k, items available); ids are int64, distances float32, nearest first.
        """
        after = (self.finite_check_after and allowed is None and type(vectors) is np.ndarray
                 and vectors.ndim == 1)
        q = self._check_queries(vectors, finite=not after)
        single = q.ndim == 1
        if single:
            q = q.reshape(1, -1)
        if type(k) is not int and not (isinstance(k, np.integer) and not isinstance(k, bool)) or k < 1:
            raise InvalidInput(f"k must be a positive integer, not {k!r}")
        if query_params and not self._query_names.issuperset(query_params):
            unknown = set(query_params) - self._query_names
            if unknown:
                raise InvalidInput(f"unknown {self.name} query parameter(s): {', '.join(sorted(unknown))}")
        self._lock.acquire_read()
        try:
            if allowed is None and not self.remote:  # the common case, kept short: it is every query's
                n, kk = self._count(), int(k)
                if n:
                    ids, dist = self._search(q, kk if kk <= n else n, None, **query_params)
                else:
                    ids, dist = np.empty((len(q), 0), np.int64), np.empty((len(q), 0), np.float32)
            else:
                ids, dist = self._search_filtered_or_remote(q, int(k), allowed, query_params)
        finally:
            self._lock.release_read()
        if after and (dist.size == 0 or not math.isfinite(dist.item(0))):
            self._check_finite(q)  # NaN or inf in the query: InvalidInput; else the answer stands
        if single:
            return ids[0], dist[0]
        return ids, dist

    def _search_filtered_or_remote(self, q: np.ndarray, k: int, allowed, query_params: dict[str, Any]
                                   ) -> tuple[np.ndarray, np.ndarray]:
        """``search`` with an ``allowed`` filter, or on a server (``remote``), under the read lock."""
        if allowed is not None:
            allowed_ids = np.unique(self._check_ids(allowed))
            if len(allowed_ids):
                allowed_ids = allowed_ids[self._contains_many(allowed_ids)]
            n_avail = len(allowed_ids)
        else:
            allowed_ids, n_avail = None, None  # a server counts for itself
        k_eff = k if n_avail is None else min(k, n_avail)
        if self.remote and k_eff:
            # the server filters and counts: ask for k, drop the columns nobody filled
            ids, dist = self._search(q, k_eff, allowed_ids, **query_params)
            filled = int((ids >= 0).sum(axis=1).max()) if ids.size else 0
            return ids[:, :filled], dist[:, :filled]
        if k_eff == 0:
            return np.empty((len(q), 0), np.int64), np.empty((len(q), 0), np.float32)
        if n_avail <= max(k_eff, min(SELECTIVE_FILTER_MAX, SELECTIVE_FILTER_SHARE * self._count())):
            return self._search_subset(q, k_eff, allowed_ids)
        ids, dist = self._search(q, k_eff, allowed_ids, **query_params)
        if np.any(ids < 0):  # the approximate search could not fill k under the filter: be exact
            return self._search_subset(q, k_eff, allowed_ids)
        return ids, dist

    def build(self) -> None:
        """Make what was added searchable at full speed now. Backends that index in bulk
        (Annoy's forest) override it; for the others every add is searchable at once."""

    def __len__(self) -> int:
        return self._count()

    def ids(self) -> np.ndarray:
        """Every id in the index (int64, no particular order)."""
        with self._lock.read():
            return self._all_ids()

    def __contains__(self, id_: int) -> bool:
        return self._contains(int(id_))

    def contains(self, ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """Which of ``ids`` are in the index, as a bool mask (one round trip for a server)."""
        arr = self._check_ids(ids)
        with self._lock.read():
            return self._contains_many(arr) if len(arr) else np.zeros(0, bool)

    def info(self) -> dict[str, Any]:
        return {"backend": self.name, "params": dict(self.params), "metric": self.metric,
                "dim": self.dim, "count": len(self), "tag": self.tag, "generation": self.generation}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.metric} dim={self.dim} n={len(self)} {self.params}>"

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike, *, tag: str | None = None, generation: int | None = None) -> Path:
        """Write the index folder atomically (temp folder + rename). ``tag`` and ``generation``
        are opaque to us, saved in the header (sonicsort: the model version, and the catalog
        generation the index holds)."""
        if tag is not None:
            self.tag = tag
        if generation is not None:
            self.generation = int(generation)
        path = Path(path).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a saved folder is for everyone
        try:
            with self._lock.read():
                self._save_native(tmp)
                header = {"format_version": FORMAT_VERSION, "saved_at": time.time(), **self.info()}
            (tmp / HEADER_FILE).write_text(json.dumps(header, indent=1))
            with _save_lock(path):  # one swap at a time, across threads and processes
                if path.exists():
                    old = path.with_name(f".{path.name}.old.{os.getpid()}.{threading.get_ident()}")
                    os.replace(path, old)
                    os.replace(tmp, path)
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, dim: int | None = None, metric: str | None = None,
             tag: str | None = None) -> "VectorIndex":
        """Load a saved index, checking it against what the caller expects."""
        header = read_header(path)
        if header["backend"] != cls.name:
            raise IndexMismatch(f"{path}: holds a {header['backend']} index, not {cls.name}")
        check_header(header, path, dim=dim, metric=metric, tag=tag)
        index = cls(header["dim"], header["metric"], **header["params"])
        index.tag = header.get("tag")
        index.generation = header.get("generation")
        try:
            index._load_native(Path(path))
        except (OSError, ValueError, RuntimeError) as exc:
            raise IndexFileError(f"{path}: cannot read the {cls.name} index ({exc})") from None
        if not getattr(index, "shared", False) and len(index) != header["count"]:  # a shared one changes under us
            raise IndexFileError(f"{path}: header says {header['count']} items, file holds {len(index)}")
        return index

    # ---------------------------------------------------------------- validation
    def _check_ids(self, ids) -> np.ndarray:
        arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) and not np.isscalar(ids) else ids)
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.ndim != 1:
            raise InvalidInput(f"ids must be one-dimensional, got shape {arr.shape}")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
                arr = arr.astype(np.int64)
            else:
                raise InvalidInput(f"ids must be integers, got {arr.dtype}")
        return arr.astype(np.int64, copy=False)

    def _check_queries(self, vectors, *, finite: bool = True) -> np.ndarray:
        """One query (dim,) or many (n, dim); the hot path, so checks are kept cheap.
        ``finite=False`` leaves the NaN/inf check to the caller (``_check_finite``)."""
        if type(vectors) is np.ndarray and vectors.dtype is _F32:
            q = vectors
        else:
            try:
                q = np.asarray(vectors, dtype=np.float32)
            except (TypeError, ValueError):
                raise InvalidInput("query must be a numeric array") from None
        if q.ndim not in (1, 2):
            raise InvalidInput(f"query must have shape ({self.dim},) or (n, {self.dim}), got {q.shape}")
        if q.shape[-1] != self.dim:
            raise InvalidInput(f"query has dimension {q.shape[-1]}, index has {self.dim}")
        if not q.flags.c_contiguous:
            q = np.ascontiguousarray(q)
        if finite:
            self._check_finite(q)
        return q

    @staticmethod
    def _check_finite(q: np.ndarray) -> None:
        # a float32 dot product is finite whenever every element is (cheap); when it is not,
        # the float64 sum decides (it is NaN/inf exactly when an element is: float32 values
        # cannot overflow it), so large finite values are not mistaken for bad ones
        if not math.isfinite(float(np.vdot(q, q))) and not math.isfinite(float(q.sum(dtype=np.float64))):
            raise InvalidInput("query contains NaN or infinite values")

    def _check_vectors(self, vectors, *, name: str) -> np.ndarray:
        try:
            arr = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError):
            raise InvalidInput(f"{name} must be numeric arrays") from None
        if arr.ndim != 2:
            raise InvalidInput(f"{name} must have shape (n, {self.dim}), got {arr.shape}")
        if arr.shape[1] != self.dim:
            raise InvalidInput(f"{name} have dimension {arr.shape[1]}, index has {self.dim}")
        if not np.all(np.isfinite(arr)):
            raise InvalidInput(f"{name} contain NaN or infinite values")
        return np.ascontiguousarray(arr)

    def _search_subset(self, q: np.ndarray, k: int, allowed_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        vecs = self._vectors(allowed_ids)
        pos, dist = nearest(q, vecs, k, self.metric)
        return allowed_ids[pos], dist.astype(np.float32)

    # ---------------------------------------------------------------- backend hooks
    @abstractmethod
    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    @abstractmethod
    def _remove(self, ids: np.ndarray) -> None: ...

    @abstractmethod
    def _search(self, q: np.ndarray, k: int, allowed: np.ndarray | None, **query_params: Any
                ) -> tuple[np.ndarray, np.ndarray]:
        """Return (ids, distances) of shape (n, k); pad with id -1 where fewer were found."""

    @abstractmethod
    def _vectors(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors of existing ids, shape (len(ids), dim)."""

    @abstractmethod
    def _contains(self, id_: int) -> bool: ...

    def _contains_many(self, ids: np.ndarray) -> np.ndarray:
        """Which of ``ids`` are here (a bool mask); backends with a round trip per call override it."""
        return np.fromiter((self._contains(int(i)) for i in ids), bool, len(ids))

    def close(self) -> None:
        """Let go of what the index holds outside this process (connections, temporary files)."""

    @abstractmethod
    def _count(self) -> int: ...

    @abstractmethod
    def _all_ids(self) -> np.ndarray: ...

    @abstractmethod
    def _save_native(self, folder: Path) -> None: ...

    @abstractmethod
    def _load_native(self, folder: Path) -> None: ...


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    folder = Path(path)
    hp = folder / HEADER_FILE
    if not hp.is_file():
        raise IndexFileError(f"{folder}: not a saved sonicsort index (no {HEADER_FILE})")
    try:
        header = json.loads(hp.read_text())
    except (OSError, ValueError) as exc:
        raise IndexFileError(f"{hp}: unreadable header ({exc})") from None
    if header.get("format_version") != FORMAT_VERSION:
        raise IndexFileError(f"{folder}: index format {header.get('format_version')!r} is not supported "
                             f"(expected {FORMAT_VERSION})")
    return header


def check_header(header: dict[str, Any], path, *, dim: int | None, metric: str | None, tag: str | None) -> None:
    if dim is not None and header["dim"] != dim:
        raise IndexMismatch(f"{path}: index has dimension {header['dim']}, expected {dim}")
    if metric is not None and header["metric"] != metric:
        raise IndexMismatch(f"{path}: index uses metric {header['metric']}, expected {metric}")
    if tag is not None and header.get("tag") != tag:
        raise IndexMismatch(f"{path}: index was built for {header.get('tag')!r}, expected {tag!r}")
