"""sonicsort's behaviour: configuration, the command line, and (as it grows) the catalog,
recommendations, playlists and the Redis prediction cache."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sonicsort")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
