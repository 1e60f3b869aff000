"""Parity with the installed official `openai` SDK: every image parameter, every value it enumerates and
every image model it names must be known to the gateway. A new SDK release that adds one makes this
fail here, instead of a user's request failing with a 400 or a 404.

Run with `-s` to see the lists this was checked against.
"""

from __future__ import annotations

import types
import typing
from typing import Any

import openai
import pytest
from openai.types import image_edit_params, image_generate_params
from openai.types.image_model import ImageModel

from imagegate.catalog.loader import load_catalog
from imagegate.core.sizes import build_size_request
from imagegate.schemas import SVG_EFFORTS, EditParams, GenerateParams
from imagegate.web.images import IMAGE_FIELDS

CATALOG = load_catalog()
GENERATE = typing.get_type_hints(image_generate_params.ImageGenerateParamsNonStreaming)
EDIT = typing.get_type_hints(image_edit_params.ImageEditParamsNonStreaming)
# The edit's `image` is read from the multipart parts (`image`, `image[]`) or, in JSON, from `images`.
EDIT_KNOWN = set(EditParams.model_fields) | {name.removesuffix("[]") for name in IMAGE_FIELDS}


def _literals(annotation: Any) -> set[str]:
    """The string values a (possibly Optional / Union / Required-wrapped) Literal annotation allows."""
    found: set[str] = set()
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return {value for value in typing.get_args(annotation) if isinstance(value, str)}
    if origin in (typing.Union, types.UnionType) or origin is not None:
        for arg in typing.get_args(annotation):
            found |= _literals(arg)
    return found


def _offerings() -> list[Any]:
    return [offering for model in CATALOG.models() for offering in model.offerings]


def _rule_values(name: str) -> set[str]:
    values: set[str] = set()
    for offering in _offerings():
        rule = offering.caps.params.get(name)
        if rule is not None and rule.handling not in ("unsupported", "dropped"):
            values |= set(rule.values) | set(rule.map)
    return values


def test_the_installed_sdk_is_the_one_the_tests_pin() -> None:
    assert openai.__version__ == "3.57.0"


def test_every_generation_parameter_is_known() -> None:
    unknown = sorted(set(GENERATE) - set(GenerateParams.model_fields))
    print(f"\nopenai {openai.__version__} ImageGenerateParams: {', '.join(sorted(GENERATE))}")
    assert not unknown, f"generation parameters the gateway does not know: {unknown}"


def test_every_edit_parameter_is_known() -> None:
    unknown = sorted(set(EDIT) - EDIT_KNOWN)
    print(f"\nopenai {openai.__version__} ImageEditParams: {', '.join(sorted(EDIT))}")
    assert not unknown, f"edit parameters the gateway does not know: {unknown}"


def test_every_image_model_resolves_in_the_catalog() -> None:
    models = typing.get_args(ImageModel)
    print(f"\nopenai {openai.__version__} ImageModel: {', '.join(models)}")
    resolved = {name: CATALOG.get(name) for name in models}
    assert not [name for name, model in resolved.items() if model is None]
    print("  resolved: " + ", ".join(f"{name} -> {model.id}" for name, model in resolved.items() if model))


@pytest.mark.parametrize("params", [GENERATE, EDIT], ids=["generate", "edit"])
def test_every_enumerated_value_is_accepted_somewhere(params: dict[str, Any]) -> None:
    """A value the SDK lists must be one that some catalog model accepts (or the gateway itself)."""
    ours = {
        "output_format": _literals(GenerateParams.model_fields["output_format"].annotation),
        "background": _literals(GenerateParams.model_fields["background"].annotation),
        "response_format": _literals(GenerateParams.model_fields["response_format"].annotation),
        "complexity": _literals(GenerateParams.model_fields["complexity"].annotation),
        "quality": {q for offering in _offerings() for q in offering.caps.qualities} | _rule_values("quality"),
        "moderation": _rule_values("moderation"),
        "input_fidelity": _rule_values("input_fidelity"),
        "style": _rule_values("style"),
    }
    missing: dict[str, list[str]] = {}
    for name, annotation in params.items():
        values = _literals(annotation)
        if not values or name in ("model", "size", "stream"):
            continue
        assert name in ours, f"{name} enumerates {sorted(values)}: say which of them the gateway accepts"
        if values - ours[name]:
            missing[name] = sorted(values - ours[name])
    assert not missing, f"values the SDK lists that no catalog model accepts: {missing}"


def test_every_listed_size_parses_and_svg_efforts_match() -> None:
    sizes = _literals(GENERATE["size"]) | _literals(EDIT["size"])
    for size in sizes:
        build_size_request(size, None, None)  # raises ParamError when the gateway cannot read it
    efforts = _literals(typing.get_type_hints(image_generate_params.SvgReasoning)["effort"])
    assert efforts == set(SVG_EFFORTS)
