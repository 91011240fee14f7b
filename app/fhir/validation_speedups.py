"""Faster, equivalent versions of three of fhir_core's per-element validation steps.

fhir_core validates every nested element of a resource through Python hooks. For a 20 KB BaRS
message (about 170 elements) these cost more than half of `Bundle.model_validate`:

1. The class of every nested resource is looked up by dotted name through pydantic's
   `import_string`, whose first attempt is a failing `import_module("package.module.Class")`.
   A name always names the same class within a process, so the answer is remembered.
2. `FHIRAbstractModel.reject_null_complex_elements` (a `mode="before"` model validator: a null
   inside a list of complex elements is an error) decides afresh, for every element, which of
   its class's fields are lists of complex types, walking all of the class's fields. Which
   fields those are is fixed per class, so they are worked out once per class; the check of the
   element's data is the same, field for field and error for error.

3. `FHIRAbstractModel.validate_after_model_construction` (a `mode="after"` model validator, which
   pydantic runs twice for every element: once for fhir_core's own `__init__` and once around it)
   calls the required-primitive and choice-type checks of the element's class, which for most
   classes have nothing to check (their lists of such fields are fixed per class). Which of the
   two a class needs is worked out once; the checks run, in the same order, for the classes that
   have something to check.

pydantic keeps a reference to the validator functions in every model's compiled schema, so (2)
and (3) replace those functions' code in place. It is done only for the fhir_core releases whose
function it was checked against (`tests/fhir/test_validation_speedups.py` runs both versions
over every field of every model and fails when fhir_core moves on, so the check is repeated).
"""

import functools
import importlib.metadata
from typing import Any

import fhir_core.fhirabstractmodel
import fhir_core.types

CHECKED_FHIR_CORE = frozenset({"1.1.12"})

# Names in fhir_core.fhirabstractmodel's namespace, where the replacement code runs.
_FIELDS_CACHE = "_pharmref_complex_list_fields"
_CHECKS_CACHE = "_pharmref_after_checks"


def _reject_null_complex_elements(cls: Any, data: Any) -> Any:
    """Refuse a JSON null as an item of a list of complex elements, per class field list
    worked out once (lists of primitives may hold nulls that pair values with `_field`
    extensions, so they are left alone, as fhir_core does)."""
    if not isinstance(data, dict):
        return data
    fields = _pharmref_complex_list_fields.get(cls)  # type: ignore[name-defined]  # noqa: F821
    if fields is None:
        fields = tuple(
            (name, field.alias)
            for name, field in cls.model_fields.items()
            if is_list_type(field)  # type: ignore[name-defined]  # noqa: F821
            and not is_primitive_type(field)  # type: ignore[name-defined]  # noqa: F821
            and not name.endswith("__ext")
        )
        _pharmref_complex_list_fields[cls] = fields  # type: ignore[name-defined]  # noqa: F821
    errors = []
    for name, alias in fields:
        key = alias if alias and alias in data else name
        value = data.get(key)
        if isinstance(value, list) and any(item is None for item in value):
            errors.append(
                {
                    "type": PydanticCustomError(  # type: ignore[name-defined]  # noqa: F821
                        "list_type",
                        "None is not allowed as an element of {field}",
                        {"field": key},
                    ),
                    "loc": (key,),
                    "input": value,
                }
            )
    if errors:
        raise ValidationError.from_exception_data(cls.__name__, errors)  # type: ignore[name-defined]  # noqa: F821
    return data


def _validate_after_model_construction(self: Any) -> Any:
    """fhir_core's after-validator, with the checks the element's class has nothing for skipped
    (which ones is worked out once per class)."""
    cls = type(self)
    checks = _pharmref_after_checks.get(cls)  # type: ignore[name-defined]  # noqa: F821
    if checks is None:
        checks = (len(self.get_required_fields()) > 0, len(self.get_one_of_many_fields()) > 0)
        _pharmref_after_checks[cls] = checks  # type: ignore[name-defined]  # noqa: F821
    if checks[0]:
        self._validate_required_primitive_elements()
    if checks[1]:
        self._validate_one_of_many()
    return self


def _validator_function() -> Any:
    return fhir_core.fhirabstractmodel.FHIRAbstractModel.reject_null_complex_elements.__func__


def _after_validator_function() -> Any:
    return fhir_core.fhirabstractmodel.FHIRAbstractModel.validate_after_model_construction


ORIGINAL_REJECT_NULL_CODE = _validator_function().__code__
ORIGINAL_AFTER_CODE = _after_validator_function().__code__


def fhir_core_checked() -> bool:
    return importlib.metadata.version("fhir_core") in CHECKED_FHIR_CORE


def install() -> None:
    """Apply all three (once; (2) and (3) only on the fhir_core release they were checked
    against)."""
    lookup = fhir_core.types.import_string  # type: ignore[attr-defined]
    if not hasattr(lookup, "cache_info"):
        fhir_core.types.import_string = functools.cache(lookup)  # type: ignore[attr-defined]
    if fhir_core_checked():
        vars(fhir_core.fhirabstractmodel).setdefault(_FIELDS_CACHE, {})
        vars(fhir_core.fhirabstractmodel).setdefault(_CHECKS_CACHE, {})
        _validator_function().__code__ = _reject_null_complex_elements.__code__
        _after_validator_function().__code__ = _validate_after_model_construction.__code__


install()
