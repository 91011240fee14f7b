import json
from typing import Any

import pytest

from app.cli import OPENAPI_PATH
from app.main import app

NO_ERROR_RESPONSES = {"/healthz", "/readyz", "/fhir/metadata"}
METHODS = {"get", "put", "post", "patch", "delete"}


def operations() -> dict[str, dict[str, Any]]:
    return {
        f"{method.upper()} {path}": operation
        for path, item in app.openapi()["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


def request_bodies() -> dict[str, dict[str, Any]]:
    """Each media type of each POST request body, keyed "POST /path media/type"."""
    return {
        f"{name} {media_type}": content
        for name, operation in operations().items()
        if name.startswith("POST ")
        for media_type, content in operation.get("requestBody", {}).get("content", {}).items()
    }


OPERATIONS = operations()
REQUEST_BODIES = request_bodies()


def test_openapi_matches_exported_document() -> None:
    exported = json.loads(OPENAPI_PATH.read_text())

    current = json.loads(json.dumps(app.openapi()))

    assert current == exported, "openapi/openapi.json is out of date: run `pharmref export-openapi`"


def test_operation_ids_are_unique() -> None:
    ids = [operation["operationId"] for operation in OPERATIONS.values()]

    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("name", OPERATIONS)
def test_operation_is_documented(name: str) -> None:
    operation = OPERATIONS[name]

    assert operation.get("summary") or operation.get("description"), f"{name} has no summary"


@pytest.mark.parametrize(
    "name", [n for n in OPERATIONS if n.split(" ", 1)[1] not in NO_ERROR_RESPONSES]
)
def test_operation_documents_a_client_error(name: str) -> None:
    codes = OPERATIONS[name]["responses"]

    assert any(str(code).startswith("4") for code in codes), f"{name} lists no 4xx response"


# Commands on an existing resource whose path says everything (no body to send).
BODYLESS_POSTS = {"POST /api/v1/deliveries/{delivery_id}/retry"}


def test_every_post_operation_has_a_request_body() -> None:
    posts = [name for name in OPERATIONS if name.startswith("POST ") and name not in BODYLESS_POSTS]

    assert posts
    for name in posts:
        assert OPERATIONS[name].get("requestBody", {}).get("content"), f"{name} has no body"


def _schema_example(schema: dict[str, Any]) -> object:
    """An example on the body's own schema, or on the component it references (also via anyOf)."""
    components = app.openapi()["components"]["schemas"]
    for candidate in [schema, *schema.get("anyOf", [])]:
        ref = candidate.get("$ref")
        if ref and components[ref.rsplit("/", 1)[1]].get("example"):
            return components[ref.rsplit("/", 1)[1]]["example"]
    return schema.get("example")


@pytest.mark.parametrize("name", REQUEST_BODIES)
def test_post_request_body_has_example(name: str) -> None:
    content = REQUEST_BODIES[name]

    assert (
        content.get("example")
        or content.get("examples")
        or _schema_example(content.get("schema", {}))
    ), f"{name} has no example"


@pytest.mark.parametrize("name", OPERATIONS)
def test_success_response_has_example(name: str) -> None:
    responses = OPERATIONS[name]["responses"]
    success = next(content for code, content in responses.items() if str(code).startswith("2"))
    schemas = app.openapi()["components"]["schemas"]

    for media in success.get("content", {}).values():
        ref = media.get("schema", {}).get("$ref", "")
        example = media.get("example") or media.get("examples")
        if ref:
            example = example or schemas[ref.rsplit("/", 1)[1]].get("example")
        assert example, f"{name} has no success response example"
