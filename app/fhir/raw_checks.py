"""Raw-JSON checks on a FHIR R4 resource, run before model validation.

fhir.resources accepts JSON `null`, empty objects and arrays, and strings standing in for
booleans and numbers; FHIR JSON forbids all of them. This pass walks the parsed JSON against
each element's JSON type, read from the R4B model fields, and reports:

| found                                      | code    | diagnostics                                   |
| ------------------------------------------ | ------- | --------------------------------------------- |
| `null` (also inside arrays)                | invalid | null is not allowed; omit the element         |
| `{}` / `[]`                                | invalid | empty object / empty array is not allowed ... |
| wrong JSON type for boolean                | value   | expected a JSON boolean                       |
| ... integer, positiveInt, unsignedInt      | value   | expected a JSON number (integer)              |
| ... decimal                                | value   | expected a JSON number                        |
| ... string-typed primitives (code, date..) | value   | expected a JSON string                        |
| ... complex types and resources            | value   | expected a JSON object                        |
| single value for a 0..* element            | value   | expected a JSON array                         |
| array for a 0..1 / 1..1 element            | value   | expected a single value, not a JSON array     |

A `null` inside a repeating primitive (`given`) or its extension array (`_given`) is allowed
where the other array has a value at that index: that is how FHIR JSON aligns the two.
Unknown element names are left to the model layer, as are resources with an unknown
`resourceType`. Diagnostics name what was expected, never the value found (it may be
patient-identifiable).
"""

import contextlib
import decimal
import re
import types
import typing
from functools import cache, lru_cache
from typing import Any, NamedTuple

from pydantic import BaseModel

from app.core.errors import Issue
from app.fhir.resources import Resource, get_fhir_model_class

MAX_ISSUES = 100
MAX_DEPTH = 64

_BOOLEAN, _INTEGER, _DECIMAL, _STRING, _COMPLEX, _RESOURCE = range(6)

_EXPECTED = {
    _BOOLEAN: "expected a JSON boolean",
    _INTEGER: "expected a JSON number (integer)",
    _DECIMAL: "expected a JSON number",
    _STRING: "expected a JSON string",
    _COMPLEX: "expected a JSON object",
    _RESOURCE: "expected a JSON object",
}
# The one JSON type of a primitive's value (decimal takes two, and is checked in full).
_PRIMITIVE_TYPE: dict[int, type] = {_STRING: str, _BOOLEAN: bool, _INTEGER: int}
_NULL = "null is not allowed; omit the element"
_EMPTY_OBJECT = "empty object is not allowed; omit the element"
_NUL_CHARACTER = "NUL characters are not allowed in FHIR strings"
_EMPTY_ARRAY = "empty array is not allowed; omit the element"
_EXPECTED_ARRAY = "expected a JSON array"
_EXPECTED_SINGLE = "expected a single value, not a JSON array"
_TOO_DEEP = f"JSON nested more than {MAX_DEPTH} levels deep; the content below was not checked"
_TOO_MANY = f"more than {MAX_ISSUES} problems; the rest were not reported"

# fhir_core bookkeeping field, not a FHIR element.
_NOT_ELEMENTS = frozenset({"fhir_comments"})
_RESOURCE_NAME = re.compile(r"[A-Z][A-Za-z]{1,63}")


class _Element(NamedTuple):
    kind: int
    is_list: bool
    target: type[BaseModel] | None  # model class of a complex element
    sibling: str | None  # `_given` for `given` and back: the array aligned with this one


class RawScan(NamedTuple):
    issues: list[Issue]  # none: no JSON-level defect was found
    codings: list[tuple[str, str]]  # (expression, code) of the objects of the system asked for


def check_raw_resource(data: object, *, expression: str = "Bundle") -> list[Issue]:
    """Report JSON-level defects in a parsed FHIR resource; an empty list means none were found."""
    return scan_raw_resource(data, expression=expression).issues


def scan_raw_resource(
    data: object, *, expression: str = "Bundle", coding_system: str | None = None
) -> RawScan:
    """`check_raw_resource`, and on the same walk the objects that carry `system` ==
    `coding_system` and a string `code` (codings, and anything shaped like one), in document
    order, for checks of their codes that would otherwise walk the resource again. Only elements
    the model knows are walked: an unknown element fails model validation anyway."""
    walker = _Walker(coding_system)
    with contextlib.suppress(_IssueLimitReached):
        walker.check(_RESOURCE, None, data, expression, 1)
    return RawScan(walker.issues, walker.codings)


class _IssueLimitReached(Exception):
    pass


class _Walker:
    __slots__ = ("coding_system", "codings", "depth_reported", "issues")

    def __init__(self, coding_system: str | None = None) -> None:
        self.issues: list[Issue] = []
        self.depth_reported = False
        self.coding_system = coding_system
        self.codings: list[tuple[str, str]] = []

    def report(self, code: str, diagnostics: str, expression: str) -> None:
        if len(self.issues) == MAX_ISSUES:
            self.issues.append(
                Issue(code="too-costly", diagnostics=_TOO_MANY, severity="information")
            )
            raise _IssueLimitReached
        self.issues.append(Issue(code=code, diagnostics=diagnostics, expression=expression))

    def check(
        self, kind: int, target: type[BaseModel] | None, value: object, path: str, depth: int
    ) -> None:
        """Check one value of a single (non-array) element, or one item of an array."""
        value_type = type(value)
        if kind == _STRING:
            ok = value_type is str
            if isinstance(value, str) and "\x00" in value:
                # FHIR strings exclude control characters, and PostgreSQL text cannot hold NUL.
                self.report("value", _NUL_CHARACTER, path)
                return
        elif kind == _BOOLEAN:
            ok = value_type is bool
        elif kind == _INTEGER:
            ok = value_type is int
        elif kind == _DECIMAL:
            ok = value_type is int or value_type is float
        elif not isinstance(value, dict):
            ok = False
        elif not value:
            self.report("invalid", _EMPTY_OBJECT, path)
            return
        elif depth > MAX_DEPTH:
            if not self.depth_reported:
                self.depth_reported = True
                self.report("too-costly", _TOO_DEEP, path)
            return
        else:
            if kind == _RESOURCE:
                target = self.resource_model(value, path)
            if target is not None:
                self.walk(value, target, path, depth)
            return
        if not ok:
            if value is None:
                self.report("invalid", _NULL, path)
            else:
                self.report("value", _EXPECTED[kind], path)

    def resource_model(self, resource: dict[Any, Any], path: str) -> type[BaseModel] | None:
        resource_type = resource.get("resourceType")
        if type(resource_type) is str:
            return _resource_model(resource_type)
        if resource_type is None and "resourceType" in resource:
            self.report("invalid", _NULL, f"{path}.resourceType")
        return None

    def walk(self, obj: dict[Any, Any], model: type[BaseModel], path: str, depth: int) -> None:
        if self.coding_system is not None and obj.get("system") == self.coding_system:
            code = obj.get("code")
            if type(code) is str:
                self.codings.append((path, code))
        elements = _elements(model)
        for key, value in obj.items():
            element = elements.get(key)
            if element is None:
                continue
            kind, is_list, target, sibling = element
            if value is None:
                self.report("invalid", _NULL, f"{path}.{key}")
            elif not is_list:
                if type(value) is list:
                    self.report("value", _EXPECTED_SINGLE, f"{path}.{key}")
                elif type(value) is _PRIMITIVE_TYPE.get(kind) and (
                    not isinstance(value, str) or "\x00" not in value
                ):
                    continue  # the common case, a well-typed primitive: no path, no call
                else:
                    self.check(kind, target, value, f"{path}.{key}", depth + 1)
            elif type(value) is not list:
                self.report("value", _EXPECTED_ARRAY, f"{path}.{key}")
            elif not value:
                self.report("invalid", _EMPTY_ARRAY, f"{path}.{key}")
            elif kind == _STRING:
                # The common case (profile, given, line): no descent, no path unless reporting.
                for index, item in enumerate(value):
                    if type(item) is not str or "\x00" in item:
                        self.check_item(
                            obj, kind, target, sibling, item, f"{path}.{key}[{index}]", index, depth
                        )
            else:
                for index, item in enumerate(value):
                    self.check_item(
                        obj, kind, target, sibling, item, f"{path}.{key}[{index}]", index, depth
                    )

    def check_item(
        self,
        obj: dict[Any, Any],
        kind: int,
        target: type[BaseModel] | None,
        sibling: str | None,
        item: object,
        path: str,
        index: int,
        depth: int,
    ) -> None:
        if item is not None:
            self.check(kind, target, item, path, depth + 2)
        elif sibling is None or not _has_item(obj.get(sibling), index):
            self.report("invalid", _NULL, path)


def _has_item(aligned: object, index: int) -> bool:
    return type(aligned) is list and index < len(aligned) and aligned[index] is not None


@lru_cache(maxsize=256)
def _resource_model(resource_type: str) -> type[BaseModel] | None:
    """The R4B model for a resourceType, or None (unknown names are the model layer's to report).

    Bounded cache: resourceType comes from the request, and unknown names are cached too.
    """
    if not _RESOURCE_NAME.fullmatch(resource_type):
        return None
    try:
        model: type[BaseModel] = get_fhir_model_class(resource_type)
    except ValueError:
        return None
    return model if issubclass(model, Resource) else None


@cache
def _elements(model: type[BaseModel]) -> dict[str, _Element]:
    """Map each JSON key of a model (by alias: `_birthDate` too) to its element's JSON shape."""
    elements: dict[str, _Element] = {}
    for name, field in model.model_fields.items():
        key = field.alias or name
        if key in _NOT_ELEMENTS:
            continue
        shape = _shape(field.annotation)
        if shape is not None:
            elements[key] = _Element(*shape, sibling=None)
    for key, element in elements.items():
        partner = key[1:] if key.startswith("_") else f"_{key}"
        if element.is_list and partner in elements and elements[partner].is_list:
            elements[key] = element._replace(sibling=partner)
    return elements


def _shape(annotation: object) -> tuple[int, bool, type[BaseModel] | None] | None:
    """Read fhir_core's encoding: `bool | None`, `Optional[Annotated[Decimal, Decimal()]]`,
    `Optional[List[abc.ContactPointType]]`, `abc.ReferenceType | None`, ..."""
    annotation = _without_none(annotation)
    is_list = typing.get_origin(annotation) is list
    if is_list:
        annotation = _without_none(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) is typing.Annotated:
        base = typing.get_args(annotation)[0]
        if base is bool:
            return _BOOLEAN, is_list, None
        if base is int:
            return _INTEGER, is_list, None
        if base is decimal.Decimal:
            return _DECIMAL, is_list, None
        # str, date, datetime, time, bytes (base64Binary), UUID, AnyUrl | str: JSON strings.
        return _STRING, is_list, None
    if annotation is bool:
        return _BOOLEAN, is_list, None
    # fhirtypes' `XType` classes name their model; Resource-typed elements dispatch on resourceType.
    get_model_klass = getattr(annotation, "get_model_klass", None)
    if get_model_klass is None:
        return None
    target: type[BaseModel] = get_model_klass()
    if target is Resource:
        return _RESOURCE, is_list, None
    return _COMPLEX, is_list, target


def _without_none(annotation: object) -> object:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation
