"""The front doors of sonicsort: HTTP and the command line.

HTTP: ``create_app(config)`` builds the Flask app; routes live in blueprints (``v1`` for the
JSON API, ``subsonic`` for the OpenSubsonic API at ``/rest``, ``ops`` for health, metrics and the OpenAPI document), beside the answer cache of
repeated uploads (``answers``, ``fastpath``). The command line is ``api.cli`` (the
``sonicsort`` command). Both call ``recommender.service.Service``, where all behaviour is.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from flask import Flask


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app.

    ``config`` (all optional) holds Flask settings plus:

    - ``SETTINGS``: a ``recommender.config.Settings`` (default: from ``SONICSORT_*``)
    - ``SERVICE``: a ``Service`` to use as it is (tests share one between apps)
    - ``BUNDLE`` / ``CACHE``: a loaded model bundle / prediction cache for a new Service
    - ``START``: ``"background"`` (default: load the model and index in a thread, answer
      ``/readyz`` with 503 until done), ``"now"`` (before returning) or ``"no"``
    - ``PERSIST_INDEX``: save the reconciled index when opening it (default True)
    """
    from recommender.config import Settings
    from recommender.service import Service

    from . import answers, errors, ops, page, subsonic, v1
    from .fastpath import PredictFastPath
    from .metrics import Metrics

    config = dict(config or {})
    _one_blas_thread_per_call()
    app = Flask(__name__)
    service = config.pop("SERVICE", None)
    settings = config.pop("SETTINGS", None) or (service.settings if service else Settings.from_env())
    app.config.update(MAX_CONTENT_LENGTH=int(settings.max_upload_mb * 1_000_000), JSON_SORT_KEYS=False)
    start = config.pop("START", "background")
    bundle, cache = config.pop("BUNDLE", None), config.pop("CACHE", None)
    persist = config.pop("PERSIST_INDEX", True)
    app.config.update(config)
    app.json.sort_keys = False

    if service is None:
        service = Service(settings, bundle=bundle, cache=cache, persist_index=persist)
        if start != "no":
            service.start(background=start != "now")
    app.extensions["sonicsort"] = service

    Metrics().init_app(app)
    answers.init_app(app, int(settings.answer_cache_mb * 1_000_000))
    errors.init_app(app)
    app.register_blueprint(v1.bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(page.bp)  # the web page at /
    app.register_blueprint(subsonic.bp)  # OpenSubsonic at /rest
    subsonic.init_app(app, int(settings.answer_cache_mb * 1_000_000))
    app.wsgi_app = PredictFastPath(app)  # repeated /v1/predict uploads, before Flask
    app.wsgi_app = _one_catalog_check_per_request(app.wsgi_app)
    app.wsgi_app = errors.last_resort(app.wsgi_app)

    return app


__all__ = ["create_app"]


def _one_blas_thread_per_call() -> None:
    """Requests run in many threads at once, and each numpy product (scoring a catalog for a
    queue, a playlist, alchemy) would otherwise start as many BLAS threads as there are cores:
    eight requests on two cores then fight over sixteen threads. One BLAS thread a call
    (``threadpoolctl``) lets the request threads share the cores instead."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def _one_catalog_check_per_request(inner):
    """A request asks each catalog whether another process wrote once, not at every read
    (``recommender.catalog.one_check_per_thread``): one round trip on PostgreSQL."""
    from recommender.catalog import one_check_per_thread

    def wsgi(environ, start_response):
        with one_check_per_thread():
            return inner(environ, start_response)

    return wsgi
