"""sonicsort's behaviour: settings, the catalog, ingest, genre-aware recommendations and
playlists, the Redis prediction cache and the RQ queue, behind one facade
(``recommender.service.Service``) that both front doors in ``api`` call."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sonicsort")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
