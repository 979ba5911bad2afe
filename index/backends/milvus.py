"""Milvus collections (pymilvus), for catalogs whose vectors outgrow one machine.

The vectors live in a Milvus collection, not in this process. ``uri`` says which:

- ``http://host:19530`` (or ``SONICSORT_MILVUS_URI``): a Milvus server or cluster, shared by
  every API node; a node holds no vectors of its own, only this pointer;
- a path ending in ``.db``: milvus-lite, Milvus in this process on a local data folder (one
  process at a time may open it: milvus-lite takes a lock; several processes share one
  through ``milvus-lite server --data-dir PATH`` and its ``http://`` address);
- ``None``: a private milvus-lite folder in a temporary directory (tests, ``bench ann``).
  Saving such an index writes its ids and vectors into the saved folder, and loading it
  fills a new private collection, so it behaves like the in-process backends.

With a ``uri``, the collection is shared: saving writes only the pointer (the header), and
loading attaches to the collection as it is now (other nodes may have changed it since), so
the saved count is not checked. Adds are upserts and removes are deletes by primary key, so
several nodes applying the same change feed agree.

Distances follow the project's convention (smaller is closer): Milvus reports cosine and inner
product as similarities and L2 as the squared distance; they are converted here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..base import VectorIndex
from ..errors import BackendUnavailable, IndexMismatch

_METRIC = {"cosine": "COSINE", "l2": "L2", "ip": "IP"}
_MAX_LIMIT = 16384  # Milvus caps topk and query limits at this
_ID_CHUNK = 4096  # ids per `id in [...]` expression


def _client(uri: str):
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    try:
        return MilvusClient(uri=uri, timeout=10)
    except MilvusException as exc:
        raise BackendUnavailable(f"cannot reach Milvus at {uri}: {exc.message}") from None
    except Exception as exc:  # a lock held by another process, a refused connection
        raise BackendUnavailable(f"cannot open Milvus at {uri}: {exc}") from None


class MilvusIndex(VectorIndex):
    name = "milvus"
    default_params = {"uri": None, "collection": None, "index_type": "HNSW", "M": 16,
                      "efConstruction": 200, "ef": 64, "nlist": 128, "nprobe": 16}
    query_param_names = ("ef", "nprobe")
    remote = True  # counting and membership cost a round trip: the base class asks less

    def __init__(self, dim: int, metric: str = "cosine", **params: Any) -> None:
        super().__init__(dim, metric, **params)
        if self.params["index_type"] not in ("HNSW", "FLAT", "IVF_FLAT"):
            from ..errors import InvalidInput

            raise InvalidInput(f"milvus index_type must be HNSW, FLAT or IVF_FLAT, not {self.params['index_type']!r}")
        self._tmp: str | None = None
        uri = self.params["uri"]
        if uri is None:
            self._tmp = tempfile.mkdtemp(prefix="sonicsort-milvus-")
            uri = os.path.join(self._tmp, "vectors.db")
        self._uri = str(uri)
        self.collection = self.params["collection"] or f"sonicsort_{metric}_{self.dim}"
        self._c = _client(self._uri)
        self._ensure_collection()

    @property
    def shared(self) -> bool:
        """True when the vectors live in a collection others may use (``uri`` given)."""
        return self._tmp is None

    def _ensure_collection(self) -> None:
        from pymilvus import DataType

        c, name = self._c, self.collection
        if c.has_collection(name):
            desc = c.describe_collection(name)
            dims = [f.get("params", {}).get("dim") for f in desc["fields"] if f["name"] == "vec"]
            if not dims or int(dims[0]) != self.dim:
                raise IndexMismatch(f"Milvus collection {name!r} at {self._uri} holds vectors of dimension "
                                    f"{dims[0] if dims else '?'}, not {self.dim}")
            have = c.describe_index(name, "vec").get("metric_type")
            if have and have != _METRIC[self.metric]:
                raise IndexMismatch(f"Milvus collection {name!r} at {self._uri} uses metric {have}, not "
                                    f"{_METRIC[self.metric]}")
        else:
            schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("vec", DataType.FLOAT_VECTOR, dim=self.dim)
            index_params = c.prepare_index_params()
            kind = self.params["index_type"]
            build = ({"M": int(self.params["M"]), "efConstruction": int(self.params["efConstruction"])}
                     if kind == "HNSW" else {"nlist": int(self.params["nlist"])} if kind == "IVF_FLAT" else {})
            index_params.add_index(field_name="vec", index_type=kind, metric_type=_METRIC[self.metric],
                                   params=build)
            c.create_collection(name, schema=schema, index_params=index_params, consistency_level="Strong")
        c.load_collection(name)

    def _call(self, what: str, fn, *args, **kwargs):
        from pymilvus.exceptions import MilvusException

        try:
            return fn(*args, **kwargs)
        except MilvusException as exc:
            raise BackendUnavailable(f"Milvus at {self._uri} failed to {what}: {exc.message}") from None

    def build(self, timeout_s: float = 600.0) -> None:
        """Flush what was added and wait until Milvus has indexed it, so that searches run on
        the index, not on a brute-force scan of a growing segment (and ``bench ann``'s build
        time includes indexing)."""
        import time

        self._call("flush", self._c.flush, self.collection)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            info = self._call("describe the index", self._c.describe_index, self.collection, "vec")
            if not info.get("pending_index_rows") and info.get("state", "Finished") == "Finished":
                return
            time.sleep(0.05)

    # ---------------------------------------------------------------- hooks
    def _add(self, ids, vectors) -> None:
        rows = [{"id": int(i), "vec": v} for i, v in zip(ids.tolist(), vectors)]
        for s in range(0, len(rows), 2000):
            self._call("add vectors", self._c.upsert, self.collection, rows[s:s + 2000])

    def _remove(self, ids) -> None:
        for s in range(0, len(ids), _ID_CHUNK):
            self._call("remove vectors", self._c.delete, self.collection, ids=ids[s:s + _ID_CHUNK].tolist())

    def _search(self, q, k, allowed, **query_params):
        kind = self.params["index_type"]
        if kind == "HNSW":
            sp = {"ef": max(int(query_params.get("ef", self.params["ef"])), k)}
        elif kind == "IVF_FLAT":
            sp = {"nprobe": int(query_params.get("nprobe", self.params["nprobe"]))}
        else:
            sp = {}
        filt = f"id in [{','.join(map(str, allowed.tolist()))}]" if allowed is not None else ""
        k = min(k, _MAX_LIMIT)
        hits = self._call("search", self._c.search, self.collection, list(q), limit=k, filter=filt,
                          search_params={"params": sp}, output_fields=[])
        out_ids = np.full((len(q), k), -1, np.int64)
        out_dist = np.full((len(q), k), np.inf, np.float32)
        for row, found in enumerate(hits):
            n = min(k, len(found))
            out_ids[row, :n] = [h["id"] for h in found[:n]]
            out_dist[row, :n] = self._to_distance(np.array([h["distance"] for h in found[:n]], np.float32))
        return out_ids, out_dist

    def _to_distance(self, d: np.ndarray) -> np.ndarray:
        if self.metric == "l2":
            return np.sqrt(np.maximum(d, 0.0))
        return 1.0 - d  # cosine and inner product come back as similarities

    def _vectors(self, ids):
        got: dict[int, list] = {}
        for s in range(0, len(ids), _ID_CHUNK):
            rows = self._call("read vectors", self._c.get, self.collection, ids=ids[s:s + _ID_CHUNK].tolist(),
                              output_fields=["vec"])
            got.update((int(r["id"]), r["vec"]) for r in rows)
        return np.array([got[int(i)] for i in ids], np.float32).reshape(len(ids), self.dim)

    def _contains_many(self, ids: np.ndarray) -> np.ndarray:
        found: set[int] = set()
        for s in range(0, len(ids), _ID_CHUNK):
            chunk = ids[s:s + _ID_CHUNK].tolist()
            rows = self._call("look up ids", self._c.get, self.collection, ids=chunk, output_fields=["id"])
            found.update(int(r["id"]) for r in rows)
        return np.fromiter((int(i) in found for i in ids), bool, len(ids))

    def _contains(self, id_: int) -> bool:
        return bool(self._contains_many(np.array([id_], np.int64))[0])

    def _count(self) -> int:
        rows = self._call("count", self._c.query, self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def _all_ids(self) -> np.ndarray:
        it = self._call("list ids", self._c.query_iterator, self.collection, batch_size=_MAX_LIMIT,
                        output_fields=["id"])
        out: list[int] = []
        try:
            while True:
                batch = it.next()
                if not batch:
                    break
                out.extend(int(r["id"]) for r in batch)
        finally:
            it.close()
        return np.array(out, np.int64)

    def _save_native(self, folder: Path) -> None:
        self._call("flush", self._c.flush, self.collection)
        if not self.shared:  # a private collection: the saved folder holds the vectors
            ids = self._all_ids()
            np.save(folder / "ids.npy", ids)
            np.save(folder / "vectors.npy", self._vectors(ids) if len(ids) else np.zeros((0, self.dim), np.float32))

    def _load_native(self, folder: Path) -> None:
        if self.shared:
            return  # attached to the collection as it is now (in __init__)
        ids, vecs = np.load(folder / "ids.npy"), np.load(folder / "vectors.npy")
        if len(ids) != len(vecs):
            raise ValueError(f"{len(ids)} ids for {len(vecs)} vectors")
        if len(ids):
            self._add(ids.astype(np.int64), vecs.astype(np.float32))

    def disk_bytes(self) -> int | None:
        """Bytes of a private milvus-lite folder once flushed (None for a server's collection)."""
        if self._tmp is None:
            return None
        self._call("flush", self._c.flush, self.collection)
        return sum(f.stat().st_size for f in Path(self._tmp).rglob("*") if f.is_file())

    def close(self) -> None:
        try:
            self._c.close()
        except Exception:
            pass
        if self._tmp is not None:
            try:  # stop the in-process server of the private folder before deleting it
                from milvus_lite.server_manager import server_manager_instance

                server_manager_instance.release_server(self._uri)
            except ImportError:
                pass
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __del__(self) -> None:
        if getattr(self, "_tmp", None) is not None:
            self.close()
