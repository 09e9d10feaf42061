"""The rules a spec field can carry, each stated once: its check, its message, its JSON Schema.

A field is declared with its type and its rule, e.g. ``Annotated[int,
Number("keyed.max_models_per_worker")]`` (:mod:`crossinfer.spec.nodes`). pydantic
reads the rule twice: to validate (the rule's :meth:`Rule.check`, whose refusal
becomes a field-path error, see :mod:`crossinfer.spec.codec`) and to write the
JSON Schema (the rule's :meth:`Rule.schema`, see :mod:`crossinfer.spec.schema`).
Numbers and sizes come from the bounds table (:mod:`crossinfer.spec.limits`).

Checks never coerce: a string is not a number, ``true`` is not ``1``, a float
is not an integer, NaN and infinities are refused, and a huge integer is
compared as it is (no ``OverflowError``).
"""

from __future__ import annotations

import json
import keyword
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

from crossinfer.spec.limits import DERIVED_BOUNDS, FIELD_BOUNDS, Bound, dtype_problem

#: The pydantic error type of every refusal a rule raises.
REFUSED = "crossinfer"

#: A node's name: what field paths, output rows and metrics show.
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}"
#: A class named by import path: ``package.module:ClassName``.
IMPORT_PATH_PATTERN = r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*"
#: A keyword argument's name (``inference_args``).
KEYWORD_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*"

#: The validation context that reads a document without the fields' rules: the
#: declared types and structure still hold, any value passes its rule. Used only
#: to find the problems between fields of a document some of whose fields broke
#: their rules (:mod:`crossinfer.spec.codec`), never to accept a spec.
LENIENT: dict[str, Any] = {"lenient": True}

_TEXT_LENGTH = DERIVED_BOUNDS["ab_test.salt, keyed.routes[].keys[] (length)"].maximum


def refuse(message: str, at: str = "") -> NoReturn:
    """Refuse the value being checked; ``at`` extends the field path (``.kind``, ``.a[0]``)."""
    refuse_all([(at, message)])


def refuse_all(problems: Sequence[tuple[str, str]]) -> NoReturn:
    """Refuse with several ``(path suffix, message)`` problems at once."""
    raise PydanticCustomError(REFUSED, "{message}", {
        "problems": tuple(problems), "message": "; ".join(m for _, m in problems)})


class Rule:
    """A field's rule. ``check`` returns the value (unchanged) or calls :func:`refuse`;
    ``schema`` is its JSON Schema. A rule that ``wraps`` runs after the declared
    type validated the value (a tuple's items, a dict), and adds its keywords to
    that type's schema; any other rule checks the raw value itself."""

    wraps = False

    def check(self, value: Any) -> Any:
        raise NotImplementedError

    def schema(self, generated: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def __get_pydantic_core_schema__(self, source: Any,
                                     handler: GetCoreSchemaHandler) -> CoreSchema:
        if self.wraps:
            return core_schema.with_info_after_validator_function(self._run, handler(source))
        return core_schema.with_info_plain_validator_function(self._run)

    def _run(self, value: Any, info: core_schema.ValidationInfo) -> Any:
        if info.context and info.context.get("lenient"):  # see LENIENT
            return value
        return self.check(value)

    def __get_pydantic_json_schema__(self, schema: CoreSchema,
                                     handler: GetJsonSchemaHandler) -> dict[str, Any]:
        return self.schema(handler(schema) if self.wraps else {})


class Number(Rule):
    """A number within its row of the bounds table (integers refuse fractions)."""

    def __init__(self, bound: str) -> None:
        self.bound: Bound = FIELD_BOUNDS[bound]

    def check(self, value: Any) -> Any:
        problem = self.bound.problem(value)
        if problem:
            refuse(problem)
        return value

    def schema(self, generated: dict[str, Any]) -> dict[str, Any]:
        return number_schema(self.bound)


def number_schema(bound: Bound) -> dict[str, Any]:
    """The JSON Schema of a number within ``bound``."""
    low = "exclusiveMinimum" if bound.exclusive_minimum else "minimum"
    minimum = int(bound.minimum) if bound.integer else bound.minimum
    maximum = int(bound.maximum) if bound.integer else bound.maximum
    return {"type": "integer" if bound.integer else "number", low: minimum, "maximum": maximum}


class OneOf(Rule):
    """One of a fixed set of strings."""

    def __init__(self, *values: str) -> None:
        self.values = values

    def check(self, value: Any) -> Any:
        if not isinstance(value, str) or value not in self.values:
            refuse(f"expected one of {', '.join(map(repr, self.values))}, got {short(value)}")
        return value

    def schema(self, generated: dict[str, Any]) -> dict[str, Any]:
        return {"enum": list(self.values)}


class Name(Rule):
    """A node's or an arm's name."""

    def check(self, value: Any) -> Any:
        if not isinstance(value, str) or not re.fullmatch(NAME_PATTERN, value):
            refuse(f"{short(value)} is not a valid name: use 1-100 letters, digits, '_', '-' "
                   "or '.', starting with a letter or digit")
        return value

    def schema(self, generated: dict[str, Any]) -> dict[str, Any]:
        return {"type": "string", "pattern": f"^{NAME_PATTERN}$"}


class Text(Rule):
    """A string of at most ``most`` characters (a row of the bounds table)."""

    def __init__(self, bound: str) -> None:
        self.most = DERIVED_BOUNDS[bound].maximum

    def check(self, value: Any) -> Any:
        if not isinstance(value, str):
            refuse(f"expected a string, got {describe(value)}")
        if len(value) > self.most:
            refuse(f"longer than {self.most} characters")
        return value

    def schema(self, generated: dict[str, Any]) -> dict[str, Any]:
        return {"type": "string", "maxLength": self.most}


class Pattern(Rule):
    """A string matching ``pattern`` (checked only when ``checked``; the JSON Schema
    states it either way), refused with ``message``."""

    def __init__(self, pattern: str, message: str, checked: bool = True) -> None:
        self.pattern, self.message, self.checked = pattern, message, checked

    def check(self, value: Any) -> Any:
        if not isinstance(value, str):
            refuse(f"expected a string, got {describe(value)}")
        if self.checked and not re.fullmatch(self.pattern, value):
            refuse(self.message)
        return value

    def schema(self, generated: dict[str, Any]) -> dict[str, Any]:
        return {"type": "string", "pattern": f"^{self.pattern}$"}


class Dtype(Rule):
    """A numeric numpy dtype name (``float32``), at most 8 bytes per value."""

    def check(self, value: Any) -> Any:
        problem = dtype_problem(value)
        if problem:
            refuse(problem)
        return value

    def schema(self, generated: dict[str, Any]) -> dict[str, Any]:
        return {"type": "string"}


class Items(Rule):
    """A list with at least ``least`` items; ``message`` says so (``{n}``: the count)."""

    wraps = True

    def __init__(self, least: int, message: str) -> None:
        self.least, self.message = least, message

    def check(self, value: Any) -> Any:
        if len(value) < self.least:
            refuse(self.message.format(n=len(value)))
        return value

    def schema(self, generated: dict[str, Any]) -> dict[str, Any]:
        return {**generated, "minItems": self.least}


class Dimensions(Rule):
    """A row's shape: 1 to 8 dimensions, their product bounded too."""

    wraps = True
    most = DERIVED_BOUNDS["model.input_shape (dimensions)"].maximum
    values = DERIVED_BOUNDS["model.input_shape (product)"].maximum

    def check(self, value: Any) -> Any:
        if not 1 <= len(value) <= self.most:
            refuse(f"needs 1 to {self.most} dimensions, got {len(value)}")
        if math.prod(value) > self.values:
            refuse(f"describes {math.prod(value):,} values per row; at most {self.values:,} "
                   "are allowed")
        return value

    def schema(self, generated: dict[str, Any]) -> dict[str, Any]:
        return {**generated, "minItems": 1, "maxItems": self.most}


class Keys(Rule):
    """A route's keys: at least one, each at most 256 characters."""

    wraps = True

    def check(self, value: Any) -> Any:
        if not value:
            refuse("needs at least one key")
        if any(len(key) > _TEXT_LENGTH for key in value):
            refuse(f"a key is longer than {_TEXT_LENGTH} characters")
        return value

    def schema(self, generated: dict[str, Any]) -> dict[str, Any]:
        return {**generated, "minItems": 1,
                "items": {**generated["items"], "maxLength": _TEXT_LENGTH}}


class Params(Rule):
    """A params object (``model_params``, ``handler_params``, ``inference_args``):
    plain JSON with finite numbers, bounded in nesting, size and text; with
    ``keywords``, its keys are keyword argument names."""

    wraps = True
    deepest = DERIVED_BOUNDS["model.{model_params,handler_params,inference_args} (nesting)"].maximum
    most = DERIVED_BOUNDS["model.{model_params,handler_params,inference_args} (items)"].maximum
    longest = DERIVED_BOUNDS["model.uri (length)"].maximum
    number = FIELD_BOUNDS["model.{model_params,handler_params,inference_args}.**"]

    def __init__(self, keywords: bool = False) -> None:
        self.keywords = keywords

    def check(self, value: Any) -> Any:
        problems = self.problems(value)
        if self.keywords:
            problems += [(f".{key}", "is not a keyword argument name (a Python identifier, "
                                     "not a keyword)")
                         for key in value if not key.isidentifier() or keyword.iskeyword(key)]
        if problems:
            refuse_all(problems)
        return value

    def problems(self, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        """``(path suffix, message)`` for each value that is not bounded plain JSON."""
        problems: list[tuple[str, str]] = []
        count = 0
        stack: list[tuple[Any, str, int]] = [(params, "", 1)]
        while stack:
            value, at, depth = stack.pop()
            count += 1
            if count > self.most:
                return [("", f"holds more than {self.most} values")]
            if isinstance(value, (dict, list)):
                if depth > self.deepest:
                    problems.append((at, f"nested deeper than {self.deepest} levels"))
                    continue
                items = value.items() if isinstance(value, dict) else enumerate(value)
                for key, item in items:
                    if isinstance(key, str) and len(key) > _TEXT_LENGTH:
                        problems.append((at, f"a key is longer than {_TEXT_LENGTH} characters"))
                        continue
                    child = f"{at}.{key}" if isinstance(value, dict) else f"{at}[{key}]"
                    stack.append((item, child, depth + 1))
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                problem = self.number.problem(value)
                if problem:
                    problems.append((at, problem))
            elif isinstance(value, str):
                if len(value) > self.longest:
                    problems.append((at, f"a string longer than {self.longest} characters"))
            elif value is not None and not isinstance(value, bool):
                problems.append((at, f"expected a JSON value, got {type(value).__name__}"))
        return problems

    def schema(self, generated: dict[str, Any]) -> dict[str, Any]:
        if self.keywords:
            return {"type": "object", "propertyNames": {"pattern": f"^{KEYWORD_PATTERN}$"}}
        return {"type": "object"}


class Output(Rule):
    """Which output of several: a name (a dict key, an ONNX output) or an index."""

    index = FIELD_BOUNDS["model.output"]
    longest = DERIVED_BOUNDS["model.output (length)"].maximum

    def check(self, value: Any) -> Any:
        if isinstance(value, str):
            if not value.strip():
                refuse("an output name must not be empty")
            if len(value) > self.longest:
                refuse(f"an output name is at most {self.longest} characters")
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return Number("model.output").check(value)
        refuse(f"expected a string (an output's name) or an integer (its index), got "
               f"{describe(value)}")

    def schema(self, generated: dict[str, Any]) -> dict[str, Any]:
        return {"oneOf": [{"type": "string", "minLength": 1, "maxLength": self.longest},
                          number_schema(self.index)]}


class Version(Rule):
    """The spec format's version: the one this library reads."""

    def __init__(self, version: int) -> None:
        self.version = version

    def check(self, value: Any) -> Any:
        if type(value) is not int or value != self.version:
            refuse(f"unsupported spec version {short(value)}; this library reads version "
                   f"{self.version}")
        return value

    def schema(self, generated: dict[str, Any]) -> dict[str, Any]:
        return {"const": self.version}


# ---------------------------------------------------------------- message helpers


def type_name(value: Any) -> str:
    """``an object``, ``an array``, ``a string``, ``an integer``, ..., ``null``, or the type."""
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", tuple: "an array", str: "a string",
            bool: "a boolean", int: "an integer", float: "a number"}.get(
        type(value), type(value).__name__)


def describe(value: Any) -> str:
    """A value for a type error: its type, and for a scalar the value (clipped)."""
    if isinstance(value, (dict, list, tuple)) or value is None:
        return type_name(value)
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return f"{type_name(value)} {clip(text, 40)}"


def short(value: Any) -> str:
    """A client-controlled value, bounded for an error message."""
    return clip(repr(value), 60)


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."
