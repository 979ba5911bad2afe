"""Operations: liveness, readiness, Prometheus metrics, the OpenAPI document and its docs page."""

from __future__ import annotations

import functools
from pathlib import Path

from flask import Blueprint, Response, current_app, jsonify, send_from_directory

bp = Blueprint("ops", __name__)

OPENAPI_FILE = Path(__file__).with_name("openapi.yaml")


@functools.lru_cache(maxsize=1)
def openapi_document() -> dict:
    import yaml

    from recommender import __version__
    from recommender.config import backend_names

    doc = yaml.safe_load(OPENAPI_FILE.read_text())
    doc["info"]["version"] = __version__
    doc["components"]["parameters"]["backend"]["schema"]["enum"] = list(backend_names())  # the registry's
    return doc


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "alive"})


@bp.get("/readyz")
def readyz():
    report = current_app.extensions["sonicsort"].readiness()
    resp = jsonify(report)
    if report["status"] not in ("ready", "degraded"):
        resp.status_code = 503
        resp.headers["Retry-After"] = "2"
    return resp


@bp.get("/metrics")
def metrics():
    body, ctype = current_app.extensions["sonicsort_metrics"].exposition(current_app.extensions["sonicsort"])
    return Response(body, content_type=ctype)


@bp.get("/openapi.json")
def openapi_json():
    import copy

    from recommender.config import usable_backends

    service = current_app.extensions["sonicsort"]
    doc = copy.deepcopy(openapi_document())
    doc["components"]["parameters"]["backend"]["schema"]["enum"] = list(usable_backends(service.settings))
    if service.state == "ready":  # the loaded model's genres and tags, so clients (and fuzzers) know them
        genres = list(service.bundle.genres)
        doc["components"]["parameters"]["genre"]["schema"]["enum"] = genres
        body = doc["paths"]["/v1/playlists"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        body["properties"]["genres"]["items"]["enum"] = genres
        if service.bundle.tag_names:
            for param in doc["paths"]["/v1/tracks"]["get"]["parameters"]:
                if param.get("name") == "tag":
                    param["schema"]["enum"] = list(service.bundle.tag_names)
    return jsonify(doc)


_DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sonicsort API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/docs/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui", deepLinking: true});</script>
</body></html>
"""


@bp.get("/docs")
@bp.get("/docs/")
def docs():
    # Swagger UI from the swagger-ui-bundle package: served by us, no CDN, works offline
    return Response(_DOCS_PAGE, mimetype="text/html")


@bp.get("/docs/<path:filename>")
def docs_asset(filename: str):
    from swagger_ui_bundle import swagger_ui_path

    return send_from_directory(swagger_ui_path, filename, max_age=86400)
