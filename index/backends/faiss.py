"""FAISS (``faiss-cpu``, Meta): an exact flat index, an HNSW graph and IVF-PQ, as one backend.

``index_type`` chooses:

- ``Flat``: exhaustive search with faiss's SIMD kernels (``IndexFlat``); removes are real.
- ``HNSW``: ``IndexHNSWFlat`` (``M``, ``ef_construction``; ``ef`` per query). faiss cannot take
  a node out of its graph, so a removed item is masked out of every search (an
  ``IDSelector``) and keeps its memory until the index is rebuilt (``sonicsort reindex``).
- ``IVFPQ``: ``IndexIVFPQ``, the memory answer for large catalogs: ``nlist`` inverted lists
  over a coarse k-means, each vector stored as ``m`` codes of ``nbits`` bits (``m·nbits/8``
  bytes, 16 at the default for 128 dimensions, against 512 as float32), ``nprobe`` lists
  searched per query. Distances, and the vectors it gives back, are decoded from the codes:
  approximate. IVF-PQ must be trained before it indexes anything: until it holds
  ``train_size`` vectors (default: 39 per list, faiss's minimum for a stable k-means, and at
  least 256 for the codebooks) the vectors wait in a buffer searched exactly; the first
  search or ``build()`` after that trains on them and encodes them; later adds are encoded
  at once (the codebooks are not retrained: ``sonicsort reindex`` does that).

Every type keeps its own labels (0, 1, 2, …) and maps them to the caller's ids, so re-adding
an id replaces its vector in every type, HNSW included. Cosine is inner product over
vectors normalised at insert and at query. Filtered searches go through faiss's
``IDSelectorBatch`` (faiss filters during the search, so k allowed items come back whenever
the search reaches them). Builds and batch searches use faiss's OpenMP threads.

An unfiltered query runs on the index's own ``efSearch`` / ``nprobe`` (faiss's search
parameters object costs a little in C++ on every call): a query at another value sets it once
and leaves it set for the queries after it, as the hnsw backend does with ``ef``. A
concurrent query may briefly run at a neighbour's value (quality, never correctness).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import logging
import threading

logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # it announces every import at INFO

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from ..base import VectorIndex  # noqa: E402
from ..errors import InvalidInput  # noqa: E402
from .exact import ExactIndex  # noqa: E402

INDEX_TYPES = ("Flat", "HNSW", "IVFPQ")
_ptr = faiss.swig_ptr
_renorm = faiss.fvec_renorm_L2
_QUERY_PARAMS = {"Flat": (), "HNSW": ("ef",), "IVFPQ": ("nprobe",)}


class FaissIndex(VectorIndex):
    name = "faiss"
    default_params = {"index_type": "HNSW", "M": 16, "ef_construction": 200, "ef": 50,
                      "nlist": 256, "m": 0, "nbits": 8, "nprobe": 16, "train_size": 0}
    query_param_names = ("ef", "nprobe")

    def __init__(self, dim: int, metric: str = "cosine", **params: Any) -> None:
        super().__init__(dim, metric, **params)
        kind = self.params["index_type"]
        if kind not in INDEX_TYPES:
            raise InvalidInput(f"faiss index_type must be one of {', '.join(INDEX_TYPES)}, not {kind!r}")
        for key in ("M", "ef_construction", "ef", "nlist", "nbits", "nprobe"):
            if type(self.params[key]) is not int or self.params[key] < 1:
                raise InvalidInput(f"faiss {key} must be a positive integer, not {self.params[key]!r}")
        if kind == "IVFPQ":
            m = int(self.params["m"]) or _default_m(self.dim)
            if self.dim % m:
                raise InvalidInput(f"faiss IVFPQ needs m dividing the dimension {self.dim}, not {m}")
            self.params["m"] = m
            self.params["train_size"] = int(self.params["train_size"]) or max(39 * int(self.params["nlist"]),
                                                                             2 ** int(self.params["nbits"]))
        self._kind = kind
        self._type_query_names = frozenset(_QUERY_PARAMS[kind])
        self._query_name = {"HNSW": "ef", "IVFPQ": "nprobe"}.get(kind, "")
        self._ef_default = int(self.params["ef"])
        self._faiss_metric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
        self._index = self._new()
        self._label_ids = np.full(1024, -1, np.int64)  # label → caller id; -1: removed
        self._label_of: dict[int, int] = {}  # caller id → its live label
        self._next_label = 0
        self._masked = 0  # HNSW only: removed labels still in the graph
        self._buffer: ExactIndex | None = ExactIndex(dim, metric) if kind == "IVFPQ" else None
        self._knob: int | None = None  # the efSearch / nprobe the faiss index is set to now (None: unknown)
        self._knob_lock = threading.Lock()
        self._live_sel = None  # HNSW: selector of the live labels while some are masked

    def _new(self):
        d, metric = self.dim, self._faiss_metric
        if self._kind == "Flat":
            return faiss.IndexIDMap2(faiss.IndexFlat(d, metric))
        if self._kind == "HNSW":  # nothing leaves the graph, so a label is its position there
            index = faiss.IndexHNSWFlat(d, int(self.params["M"]), metric)
            index.hnsw.efConstruction = int(self.params["ef_construction"])
            index.hnsw.efSearch = int(self.params["ef"])
            return index
        quantizer = faiss.IndexFlat(d, metric)
        ivf = faiss.IndexIVFPQ(quantizer, d, int(self.params["nlist"]), int(self.params["m"]),
                               int(self.params["nbits"]), metric)
        ivf.own_fields = True
        quantizer.this.disown()  # the IVF index frees its quantizer
        ivf.nprobe = int(self.params["nprobe"])
        return ivf

    # ---------------------------------------------------------------- writing
    def _prepared(self, vectors: np.ndarray) -> np.ndarray:
        v = np.array(vectors, np.float32, order="C")  # a copy: normalised in place for cosine
        if self.metric == "cosine":
            faiss.normalize_L2(v)
        return v

    def _new_labels(self, ids: np.ndarray) -> np.ndarray:
        labels = np.arange(self._next_label, self._next_label + len(ids), dtype=np.int64)
        self._next_label += len(ids)
        if self._next_label > len(self._label_ids):
            grown = np.full(max(self._next_label, 2 * len(self._label_ids)), -1, np.int64)
            grown[:len(self._label_ids)] = self._label_ids
            self._label_ids = grown
        self._label_ids[labels] = ids
        for i, lab in zip(ids.tolist(), labels.tolist()):
            self._label_of[i] = lab
        return labels

    def _drop_labels(self, labels: np.ndarray) -> None:
        if not len(labels):
            return
        self._label_ids[labels] = -1
        if self._kind == "HNSW":
            self._masked += len(labels)  # faiss's HNSW cannot remove: mask them
        else:
            labels = np.ascontiguousarray(labels, np.int64)
            self._index.remove_ids(faiss.IDSelectorArray(len(labels), faiss.swig_ptr(labels)))

    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if self._buffer is not None:  # IVF-PQ before training: exact buffer
            self._buffer.add(ids, vectors)
            if len(self._buffer) >= int(self.params["train_size"]):
                self._train_from_buffer()
            return
        old = np.array([self._label_of.pop(i) for i in ids.tolist() if i in self._label_of], np.int64)
        self._drop_labels(old)
        labels = self._new_labels(ids)
        if self._kind == "HNSW":  # labels are positions: appended in order
            self._index.add(self._prepared(vectors))
        else:
            self._index.add_with_ids(self._prepared(vectors), labels)
        self._invalidate()

    def _remove(self, ids: np.ndarray) -> None:
        if self._buffer is not None:
            self._buffer.remove(ids)
            return
        self._drop_labels(np.array([self._label_of.pop(i) for i in ids.tolist()], np.int64))
        self._invalidate()

    def _invalidate(self) -> None:
        self._live_sel = None

    def _train_from_buffer(self) -> None:
        ids, vecs = self._buffer.items()
        v = self._prepared(vecs)
        self._index.train(v)
        self._index.set_direct_map_type(faiss.DirectMap.Hashtable)  # vectors by label, and removes
        self._index.add_with_ids(v, self._new_labels(ids))
        self._buffer = None
        self._invalidate()

    def build(self) -> None:
        """IVF-PQ: train now on what the buffer holds, if that is at least ``nlist`` vectors
        and 256 for the codebooks (a smaller ``train_size`` than the default trades quality)."""
        with self._lock.write():
            if self._buffer is not None and len(self._buffer) >= max(int(self.params["nlist"]),
                                                                     2 ** int(self.params["nbits"])):
                self._train_from_buffer()

    # ---------------------------------------------------------------- searching
    def _beam(self, k: int, ef, nprobe, allowed) -> tuple[int | None, int | None]:
        """The (ef, nprobe) a search runs with: at least k for HNSW, wider under a filter."""
        ef = None if ef is None else max(int(ef), k)
        nprobe = None if nprobe is None else int(nprobe)
        if self._kind != "HNSW":
            return None, nprobe
        if ef is None and k > self._ef_default:
            ef = k
        if allowed is not None or self._masked:
            # the filter rejects candidates: widen the beam in proportion (as hnsw does)
            n_ok = len(allowed) if allowed is not None else len(self._label_of)
            base = ef if ef is not None else self._ef_default
            ef = min(max(base, int(base * self._index.ntotal / max(n_ok, 1))), max(self._index.ntotal, k))
        return ef, nprobe

    def _search_params(self, allowed: np.ndarray | None, ef: int | None, nprobe: int | None):
        sel = None
        if allowed is not None:
            labels = np.fromiter((self._label_of[int(i)] for i in allowed), np.int64, len(allowed))
            sel = faiss.IDSelectorBatch(len(labels), faiss.swig_ptr(labels))
        elif self._masked:
            sel = self._live_sel
            if sel is None:
                live = np.flatnonzero(self._label_ids[:self._next_label] >= 0).astype(np.int64)
                sel = self._live_sel = faiss.IDSelectorBatch(len(live), faiss.swig_ptr(live))
        if self._kind == "HNSW":
            params = faiss.SearchParametersHNSW()
            params.efSearch = ef if ef is not None else int(self.params["ef"])
        elif self._kind == "IVFPQ":
            params = faiss.SearchParametersIVF()
            params.nprobe = nprobe if nprobe is not None else int(self.params["nprobe"])
        else:
            params = faiss.SearchParameters()
        if sel is not None:
            params.sel = sel
            params._sel = sel  # SWIG keeps no reference: the selector must outlive the params
        return params

    def _set_knob(self, value: int) -> None:
        """Set the index's own efSearch / nprobe, and leave it set for the queries after."""
        with self._knob_lock:
            if self._kind == "HNSW":
                self._index.hnsw.efSearch = value
            else:
                self._index.nprobe = value
            self._knob = value

    def _search(self, q, k, allowed, **query_params):
        if query_params and not self._type_query_names.issuperset(query_params):
            extra = set(query_params) - self._type_query_names
            raise InvalidInput(f"faiss {self._kind} takes no {', '.join(sorted(extra))} "
                               f"(query parameters: {', '.join(_QUERY_PARAMS[self._kind]) or 'none'})")
        buffer = self._buffer
        if buffer is not None:  # IVF-PQ not trained yet: its buffer answers, exactly
            return buffer._search(q, k, allowed)
        if allowed is None and not self._masked:  # every query's case: the index's own setting, no params
            params = None
            if self._query_name:
                value = query_params.get(self._query_name) if query_params else None
                if self._kind == "HNSW":
                    value = max(self._ef_default if value is None else int(value), k)
                else:
                    value = int(self.params["nprobe"]) if value is None else int(value)
                if value != self._knob:
                    self._set_knob(value)
        else:
            params = self._search_params(allowed, *self._beam(k, query_params.get("ef"), query_params.get("nprobe"),
                                                             allowed))
        n = q.shape[0]
        if self.metric == "cosine":  # a normalised copy: the caller's query is left alone
            q = q.copy()
            _renorm(self.dim, n, _ptr(q))  # in place, in C (a zero row stays zero)
        # search_c: the call faiss's Python search() makes, without its argument checks (done here)
        dist, labels = np.empty((n, k), np.float32), np.empty((n, k), np.int64)
        self._index.search_c(n, _ptr(q), k, _ptr(dist), _ptr(labels), params)
        ids = self._label_ids.take(labels)
        if (labels.item(k - 1) < 0 if n == 1 else labels[:, -1].min() < 0):  # fewer than k (a filter): padded with -1
            missing = labels < 0
            ids[missing], dist[missing] = -1, np.inf
        if self.metric == "l2":
            dist = np.sqrt(np.maximum(dist, 0.0))
        else:  # faiss reports the inner product itself
            np.subtract(1.0, dist, out=dist)
        return ids, dist

    # ---------------------------------------------------------------- reading
    def _vectors(self, ids):
        buffer = self._buffer
        if buffer is not None:
            return buffer._vectors(ids)
        labels = np.fromiter((self._label_of[int(i)] for i in ids), np.int64, len(ids))
        if self._kind == "IVFPQ":  # decoded from the codes: approximate
            return np.stack([self._index.reconstruct(int(lab)) for lab in labels]).astype(np.float32)
        return self._index.reconstruct_batch(labels).astype(np.float32)

    def _contains(self, id_: int) -> bool:
        buffer = self._buffer
        return buffer._contains(id_) if buffer is not None else id_ in self._label_of

    def _all_ids(self) -> np.ndarray:
        buffer = self._buffer
        if buffer is not None:
            return buffer._all_ids()
        return np.fromiter(self._label_of, np.int64, len(self._label_of))

    def _count(self) -> int:
        buffer = self._buffer
        return buffer._count() if buffer is not None else len(self._label_of)

    def nbytes(self) -> int:
        """Bytes of the serialised faiss index (codes, graph or vectors, ids, codebooks)."""
        return int(faiss.serialize_index(self._index).nbytes)

    # ---------------------------------------------------------------- persistence
    def _save_native(self, folder: Path) -> None:
        buffer = self._buffer
        if buffer is not None:
            ids = buffer._all_ids()
            np.save(folder / "buffer_ids.npy", ids)
            np.save(folder / "buffer_vectors.npy", buffer._vectors(ids))
            return
        faiss.write_index(self._index, str(folder / "faiss.index"))
        np.save(folder / "labels.npy", self._label_ids[:self._next_label])

    def _load_native(self, folder: Path) -> None:
        if (folder / "buffer_ids.npy").exists():
            self._buffer = ExactIndex(self.dim, self.metric)
            ids, vecs = np.load(folder / "buffer_ids.npy"), np.load(folder / "buffer_vectors.npy")
            if len(ids):
                self._buffer.add(ids, vecs)
            return
        index = faiss.read_index(str(folder / "faiss.index"))
        labels = np.load(folder / "labels.npy").astype(np.int64)
        live = np.flatnonzero(labels >= 0)
        if self._kind != "HNSW" and index.ntotal != len(live):
            raise ValueError(f"faiss index holds {index.ntotal} vectors for {len(live)} live labels")
        if self._kind == "HNSW":
            index.hnsw.efSearch = int(self.params["ef"])
            if index.ntotal != len(labels):
                raise ValueError(f"faiss graph holds {index.ntotal} nodes for {len(labels)} labels")
        self._index, self._buffer, self._knob = index, None, None
        self._label_ids = labels if len(labels) else np.full(1024, -1, np.int64)
        self._next_label = len(labels)
        self._label_of = {int(labels[lab]): int(lab) for lab in live}
        self._masked = int(len(labels) - len(live)) if self._kind == "HNSW" else 0
        self._invalidate()


def _default_m(dim: int) -> int:
    """PQ sub-quantisers: one per 8 dimensions (16 bytes a vector at 128), else the largest
    divisor of ``dim`` up to dim/4, else 1."""
    if dim % 8 == 0:
        return dim // 8
    for m in range(max(1, dim // 4), 0, -1):
        if dim % m == 0:
            return m
    return 1
