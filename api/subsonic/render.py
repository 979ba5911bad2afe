"""``subsonic-response`` documents in JSON and XML, as the Subsonic API and OpenSubsonic write them.

One answer is built once as a dict in the JSON shape; XML is derived from it: a scalar is
an attribute, a dict an element, a list repeated elements of the key's name, and a
``value`` key the element's text (``genre``), as in Subsonic's XML schema.
"""

from __future__ import annotations

import json
from typing import Any
from xml.sax.saxutils import escape, quoteattr

API_VERSION = "1.16.1"
SERVER_TYPE = "sonicsort"
XMLNS = "http://subsonic.org/restapi"


def envelope(payload: dict[str, Any], *, failed: bool = False) -> dict[str, Any]:
    from recommender import __version__

    return {"subsonic-response": {"status": "failed" if failed else "ok", "version": API_VERSION,
                                  "type": SERVER_TYPE, "serverVersion": __version__, "openSubsonic": True,
                                  **payload}}


def error_payload(code: int, message: str) -> dict[str, Any]:
    return {"error": {"code": int(code), "message": message}}


def to_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def _attr(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _element(name: str, value: Any, out: list[str]) -> None:
    if isinstance(value, list):
        for item in value:
            _element(name, item, out)
        return
    if not isinstance(value, dict):
        out.append(f"<{name}>{escape(_attr(value))}</{name}>")
        return
    attrs = "".join(f" {k}={quoteattr(_attr(v))}" for k, v in value.items()
                    if v is not None and not isinstance(v, (dict, list)) and k != "value")
    children: list[str] = []
    for k, v in value.items():
        if isinstance(v, (dict, list)):
            _element(k, v, children)
    text = escape(_attr(value["value"])) if value.get("value") is not None else ""
    if children or text:
        out.append(f"<{name}{attrs}>{text}{''.join(children)}</{name}>")
    else:
        out.append(f"<{name}{attrs}/>")


def to_xml(doc: dict[str, Any]) -> str:
    body = dict(doc["subsonic-response"])
    out: list[str] = []
    _element("subsonic-response", body, out)
    first = out[0].replace("<subsonic-response", f'<subsonic-response xmlns="{XMLNS}"', 1)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + first
