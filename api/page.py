"""The web page at ``/``: static HTML, CSS and JavaScript (``api/web/``) on the ``/v1`` API.

Everything it loads comes from this app (no CDN, no web fonts), and its Content-Security-Policy
says so to the browser: a page that tried to reach elsewhere would be stopped.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, send_from_directory

WEB_DIR = Path(__file__).with_name("web")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")

bp = Blueprint("page", __name__, static_folder="web", static_url_path="/ui")


@bp.get("/")
def home():
    return send_from_directory(WEB_DIR, "index.html", max_age=0)


@bp.after_app_request
def _security_headers(resp):
    """Every answer of the app says its type is meant (nosniff: JSON, audio and static files
    are never run as something else); every HTML answer, ``/ui/index.html`` as much as ``/``,
    carries the page's Content-Security-Policy."""
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    if resp.mimetype == "text/html":
        resp.headers.setdefault("Content-Security-Policy", CSP)
    return resp
