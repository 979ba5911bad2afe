"""sonicsort's behaviour: configuration, the command line, and (as it grows) the catalog,
recommendations, playlists and the Redis prediction cache."""
