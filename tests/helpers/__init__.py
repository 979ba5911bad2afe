"""What the tests share besides fixtures (those live in ``tests/conftest.py``)."""

from .audio import SR, GENRES, synth, set_flac_length, write_clip, music
from .models import TINY_HEAD, CountingBundle
from .catalogs import ingest_tagged_library, agree, postgres_schema, POSTGRES_ADMIN_URL, UNDO_SCHEMA_6, UNDO_SCHEMA_7
from .servers import (REDIS_URL, PrivatePostgres, PrivateRedis, Server, free_port, fresh_get, launch,
                      make_server, serve_catalog)
from .cli import CLI, run_cli

__all__ = ['SR', 'GENRES', 'synth', 'set_flac_length', 'write_clip', 'music', 'TINY_HEAD', 'CountingBundle', 'ingest_tagged_library', 'UNDO_SCHEMA_6', 'UNDO_SCHEMA_7', 'agree', 'postgres_schema', 'POSTGRES_ADMIN_URL', 'REDIS_URL', 'PrivateRedis', 'PrivatePostgres', 'Server', 'make_server', 'serve_catalog', 'free_port', 'fresh_get', 'launch', 'CLI', 'run_cli']
