"""The faster fhir_core validation steps (app/fhir/validation_speedups.py) give the same answers
as fhir_core's own, for every list field of every FHIR model pharmref has loaded."""

import contextlib
import json
import types
from collections.abc import Callable, Iterator
from importlib import resources as package_files
from typing import Any

import fhir_core.fhirabstractmodel as fhir_abstract_model
import pytest
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from pydantic import ValidationError

from app.fhir import stu3, validation_speedups
from app.fhir.resources import Bundle, get_fhir_model_class

Check = Callable[[type[FHIRAbstractModel], Any], Any]


def _original() -> Check:
    code = validation_speedups.ORIGINAL_REJECT_NULL_CODE
    function = types.FunctionType(code, vars(fhir_abstract_model))
    return lambda cls, data: function(cls, data)


def _installed() -> Check:
    return lambda cls, data: FHIRAbstractModel.reject_null_complex_elements.__func__(cls, data)


_RESOURCES = (
    "CarePlan",
    "Composition",
    "Condition",
    "Consent",
    "Encounter",
    "Flag",
    "HealthcareService",
    "Location",
    "MedicationStatement",
    "Observation",
    "Organization",
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "QuestionnaireResponse",
    "ServiceRequest",
    "Task",
)


def _models() -> list[type[FHIRAbstractModel]]:
    example = json.loads(
        package_files.files("app.fhir").joinpath("example_bp_referral.json").read_text()
    )
    Bundle.model_validate(example)  # loads every class the BaRS example uses
    for name in _RESOURCES:  # and the resources either release may bring
        get_fhir_model_class(name)
        with contextlib.suppress(ValueError):  # not every one is in STU3
            stu3.get_fhir_model_class(name)
    found: list[type[FHIRAbstractModel]] = []
    pending = [FHIRAbstractModel]
    while pending:
        cls = pending.pop()
        for sub in cls.__subclasses__():
            if sub not in found:
                found.append(sub)
                pending.append(sub)
    return found


def _inputs(cls: type[FHIRAbstractModel]) -> Iterator[Any]:
    yield "not a dict"
    yield {}
    every_null: dict[str, Any] = {}
    for name, field in cls.model_fields.items():
        keys = {name, field.alias or name}
        for key in keys:
            yield {key: [None]}
            yield {key: [{}, None]}
            yield {key: [{}]}
            yield {key: None}
            yield {key: "text"}
            every_null[key] = [None]
    yield every_null


def _outcome(check: Check, cls: type[FHIRAbstractModel], data: Any) -> Any:
    try:
        return ("returned", check(cls, data) is data)
    except ValidationError as exc:
        return ("refused", exc.title, exc.errors(include_url=False))


def test_the_faster_check_is_installed_on_the_checked_fhir_core_release() -> None:
    assert validation_speedups.fhir_core_checked(), (
        "fhir_core changed: compare its reject_null_complex_elements with the replacement in "
        "app/fhir/validation_speedups.py, then add the release to CHECKED_FHIR_CORE"
    )
    installed = FHIRAbstractModel.reject_null_complex_elements.__func__.__code__
    assert installed is not validation_speedups.ORIGINAL_REJECT_NULL_CODE


def test_null_check_answers_as_fhir_core_for_every_field_of_every_model() -> None:
    original, installed = _original(), _installed()
    models = _models()
    compared = 0
    for cls in models:
        for data in _inputs(cls):
            assert _outcome(installed, cls, data) == _outcome(original, cls, data), (cls, data)
            compared += 1
    assert len(models) > 100
    assert compared > 1000


@pytest.mark.parametrize("name", ["Bundle", "Patient", "ServiceRequest", "Observation"])
def test_null_in_a_complex_list_is_still_refused_through_the_model(name: str) -> None:
    cls = get_fhir_model_class(name)
    field = next(
        (f.alias or n)
        for n, f in cls.model_fields.items()
        if n in ("identifier", "entry", "link", "category")
    )
    body: dict[str, Any] = {"resourceType": name, field: [None]}
    if name in ("Bundle",):
        body["type"] = "collection"

    with pytest.raises(ValidationError, match="None is not allowed"):
        cls.model_validate(body)


def _original_after() -> Callable[[FHIRAbstractModel], Any]:
    code = validation_speedups.ORIGINAL_AFTER_CODE
    return types.FunctionType(code, vars(fhir_abstract_model))


def test_the_faster_after_validator_is_installed_on_the_checked_fhir_core_release() -> None:
    installed = FHIRAbstractModel.validate_after_model_construction.__code__
    assert installed is not validation_speedups.ORIGINAL_AFTER_CODE


def test_after_validator_answers_as_fhir_core_for_every_model() -> None:
    """For each model: an instance missing each required primitive, and one with two values of a
    choice type, get the same outcome (returned, or the same error) from both versions."""
    original = _original_after()
    installed: Callable[[FHIRAbstractModel], Any] = vars(FHIRAbstractModel)[
        "validate_after_model_construction"
    ]
    compared = 0
    for cls in _models():
        instance = cls.model_construct()
        cases = [instance]
        for fields in cls().get_one_of_many_fields().values() if _constructible(cls) else []:
            both = cls.model_construct()
            for name in fields[:2]:
                object.__setattr__(both, name, "x")
            cases.append(both)
        for case in cases:
            assert _after_outcome(installed, case) == _after_outcome(original, case), cls
            compared += 1
    assert compared > 100


def _constructible(cls: type[FHIRAbstractModel]) -> bool:
    try:
        cls()
    except ValidationError:
        return False
    return True


def _after_outcome(check: Callable[[FHIRAbstractModel], Any], instance: FHIRAbstractModel) -> Any:
    try:
        return ("returned", check(instance) is instance)
    except ValidationError as exc:
        return ("refused", exc.title, exc.errors(include_url=False))
    except ValueError as exc:
        return ("refused", str(exc))


def test_a_missing_required_primitive_is_still_refused_through_the_model() -> None:
    with pytest.raises(ValidationError, match="status"):
        get_fhir_model_class("ServiceRequest").model_validate(
            {"resourceType": "ServiceRequest", "intent": "order", "subject": {"reference": "x"}}
        )


def test_two_values_of_one_choice_type_are_still_refused_through_the_model() -> None:
    with pytest.raises(ValidationError, match="one field value"):
        get_fhir_model_class("Observation").model_validate(
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "x"},
                "valueString": "a",
                "valueBoolean": True,
            }
        )
