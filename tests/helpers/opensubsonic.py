"""The OpenSubsonic specification's own OpenAPI schemas (``tests/fixtures/opensubsonic``, Apache-2.0,
unchanged from the upstream repository named in its SOURCE.txt), to validate answers against."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

SPEC = Path(__file__).resolve().parent.parent / "fixtures" / "opensubsonic" / "openapi"


@lru_cache(maxsize=None)
def _registry():
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    def retrieve(uri: str):
        path = Path(uri.removeprefix("file://"))
        return Resource.from_contents(json.loads(path.read_text()), default_specification=DRAFT202012)

    return Registry(retrieve=retrieve)


@lru_cache(maxsize=None)
def _validator(method: str):
    from jsonschema import Draft202012Validator

    where = SPEC / "endpoints" / f"{method}.json"
    response = json.loads(where.read_text())["get"]["responses"]["200"]
    while "$ref" in response:  # a shared response object (EmptySubsonicResponse) in a file of its own
        where = (where.parent / response["$ref"]).resolve()
        response = json.loads(where.read_text())
    json_answer = response["content"].get("application/json")
    if json_answer is None:  # a media method (stream, getCoverArt): its JSON answers are errors
        uri = (SPEC / "schemas" / "SubsonicResponse.json").resolve().as_uri()
    else:
        uri = (where.parent / json_answer["schema"]["$ref"]).resolve().as_uri()
    return Draft202012Validator({"$ref": uri}, registry=_registry())


def validate(method: str, body: dict) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``body`` is a valid JSON answer of ``method``."""
    errors = sorted(_validator(method).iter_errors(body), key=lambda e: e.path)
    if errors:
        best = min(errors, key=lambda e: len(list(e.absolute_path)))
        raise AssertionError(f"{method}: not an answer the OpenSubsonic schemas allow: {best.message} "
                             f"at {list(best.absolute_path)}")
