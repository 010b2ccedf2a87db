"""Spec files (paper tables, search studies): YAML validated into typed dataclasses, each mistake one line.

A spec module declares its file format as dataclasses decorated with ``spec_dataclass``: the fields
are the YAML keys, typed with the annotated types below (``Number``, ``Count``, ``Name``, ...).
``load_yaml`` reads a file and ``validate`` checks a mapping against a dataclass with pydantic
(types, defaults, unknown and missing keys) and turns pydantic's first error into one line that
names the key path and says what is wrong: ``rows.h2.paper.final.value: expected a number, got
'high'``. What types cannot say (one entry naming another) the spec module checks after, raising
its own ``SpecError`` subclass with the same kind of line.

A list item is named by its ``name`` when it has one (``plots.bars``, ``checks[0] (deeper is
better)``: see ``item_where``); a field made by the loader rather than read from the file (an
entry's name taken from its key, the file's path) is declared with ``computed`` and may not be
stated in the file. YAML 1.1 reads ``1e-4`` (no dot) as a string: a ``Number`` takes it as 1e-4.
"""
from __future__ import annotations

import dataclasses
import re
import string
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Callable, TypeVar, Union

import typing_extensions
import yaml
from pydantic import (
    AfterValidator, BeforeValidator, ConfigDict, StrictBool, TypeAdapter, ValidationError, ValidationInfo, model_validator, with_config,
)

__all__ = [
    "SpecError", "Schema", "spec_dataclass", "computed", "load_yaml", "validate", "item_where", "check", "ref", "named", "config_files",
    "template_fields", "Template", "Number", "Integer", "Count", "Flag", "Name", "Identifier", "ConfigKey", "OverrideKey", "Overrides",
    "Mapping", "Keyed", "Items", "OneOrMore", "shorthand", "NAME", "KEY", "CONFIG",
]

T = TypeVar("T")
K = TypeVar("K")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
EXAMPLE_KEY = "such as model.init_args.optimizer.init_args.lr"
# Unknown keys are errors, NaN and inf are not numbers, a number where text is expected is that text.
CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False, coerce_numbers_to_str=True, str_strip_whitespace=True)


class SpecError(ValueError):
    """A spec the user has to fix; the message is one line that names the entry."""


class Schema:
    """Base of the spec dataclasses: rejects the ``computed`` fields when the file states them."""

    @model_validator(mode="before")
    @classmethod
    def _not_computed(cls, raw: Any) -> Any:
        stated = [f.name for f in dataclasses.fields(cls) if f.metadata.get("computed") and isinstance(raw, dict) and f.name in raw]
        if stated:
            raise ValueError(f"{stated[0]!r} is set by the loader (from the entry's key or the file), not in the file")
        return raw


def spec_dataclass(cls: type[T] | None = None, *, frozen: bool = False) -> Any:
    """``@dataclass`` whose pydantic validation forbids unknown keys (see ``CONFIG``)."""
    wrap = lambda c: with_config(CONFIG)(dataclasses.dataclass(frozen=frozen)(c))  # noqa: E731
    return wrap(cls) if cls is not None else wrap


def computed(default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING) -> Any:
    """A field the loader fills in (not read from the file)."""
    return dataclasses.field(default=default, default_factory=factory, metadata={"computed": True})


def check(test: Callable[[Any], bool], message: str) -> AfterValidator:
    """A validator that raises ``message`` (``{value!r}`` may name the value) where ``test`` fails."""
    def run(value: Any) -> Any:
        if not test(value):
            raise ValueError(message.format(value=value))
        return value
    return AfterValidator(run)


def named(value: Any, info: ValidationInfo, section: str, message: str) -> Any:
    """``value`` when it is a key of the document's ``section`` (``validate``'s context is the document),
    else ``ValueError(message)``; ``message`` may name the value and the ``{known}`` keys."""
    known = (info.context or {}).get(section)
    known = known if isinstance(known, dict) else {}
    if value not in known:
        raise ValueError(message.format(value=value, known=", ".join(map(str, known)) or "none defined"))
    return value


def ref(section: str, message: str) -> AfterValidator:
    """The type of a name of an entry of the document's ``section`` (see ``named``); a value that is
    not text (an entry stated inline, where the type allows one) is not looked up."""
    return AfterValidator(lambda value, info: named(value, info, section, message) if isinstance(value, str) else value)


def config_files(resolve: Callable[[str], Path]) -> Any:
    """The type of ``base:``, one config file or a list of them, each found at ``resolve(path)``."""
    def exist(paths: list[str]) -> list[str]:
        missing = [p for p in paths if not resolve(p).is_file()]
        if missing:
            raise ValueError(f"config file {missing[0]} not found")
        return paths
    return Annotated[OneOrMore[str], check(lambda v: bool(v) and all(v), "give a config file or a list of config files"),
                     AfterValidator(exist)]


def template_fields(template: str) -> set[str]:
    """The ``{name}`` fields of a format string."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def _template(text: str) -> str:
    try:
        template_fields(text)
    except ValueError as error:
        raise ValueError(f"bad template {text!r}: {error}") from None
    return text


def _named(entries: dict[str, Any]) -> dict[str, Any]:
    for key, entry in entries.items():
        entry.name = key
    return entries


def _not_bool(what: str) -> BeforeValidator:
    def run(value: Any) -> Any:
        if isinstance(value, bool):  # pydantic would read true as 1
            raise ValueError(f"expected {what}, got {value!r}")
        return value
    return BeforeValidator(run)


def shorthand(key: str) -> BeforeValidator:
    """Read a bare value ``v`` as the mapping ``{key: v}`` (``final: 87.4`` for ``final: {value: 87.4}``)."""
    return BeforeValidator(lambda v: v if v is None or isinstance(v, dict) else {key: v})


Number = Annotated[float, _not_bool("a number")]
Integer = Annotated[int, _not_bool("an integer")]
Count = Annotated[Integer, check(lambda v: v >= 1, "expected an integer >= 1, got {value!r}")]
Flag = StrictBool
Name = Annotated[str, check(lambda v: bool(NAME.match(v)), "{value!r} is not a valid name (letters, digits, '_', '-', '.')")]
Identifier = Annotated[str, check(str.isidentifier, "not a variable name")]
ConfigKey = Annotated[str, check(lambda v: bool(KEY.match(v)), "{value!r} is not a dotted config key (" + EXAMPLE_KEY + ")")]
Mapping = Annotated[dict[K, T], BeforeValidator(lambda v: {} if v is None else v)]  # an empty `key:` is an empty mapping
Keyed = Annotated[Mapping[K, T], AfterValidator(_named)]  # entries named by their keys (``rows.h2``: the row h2)
Items = Annotated[list[T], BeforeValidator(lambda v: [] if v is None else v)]
OneOrMore = Annotated[list[T], BeforeValidator(lambda v: v if isinstance(v, list) else [v])]  # x or [x, ...]
OverrideKey = Annotated[str, check(lambda v: bool(KEY.match(v)), "not a dotted config key (" + EXAMPLE_KEY + ")")]
Overrides = Mapping[OverrideKey, Any]
Template = Annotated[str, AfterValidator(_template)]  # a format string such as val/acc_head{heads}


def load_yaml(path: Path, error: type[Exception] = SpecError) -> Any:
    """The YAML document at ``path``; a syntax error becomes ``error('<path> line N: not valid YAML: ...')``."""
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as problem:
        mark = getattr(problem, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise error(f"{path}{line}: not valid YAML: {getattr(problem, 'problem', None) or problem}") from None


def validate(kind: type[T], raw: Any, error: type[Exception] = SpecError, where: str = "", context: Any = None) -> T:
    """``raw`` checked and converted into ``kind`` (a ``spec_dataclass``); the first problem raises
    ``error`` with one line ``<where.key path>: <what is wrong>``. ``ref`` looks names up in
    ``context`` (default: ``raw``, the whole document)."""
    try:
        return _adapter(kind).validate_python(raw, context=raw if context is None else context)
    except ValidationError as problem:
        first = problem.errors(include_url=False)[0]
        loc = [p for p in first["loc"] if p != "[key]"]  # a bad mapping key is named by the key itself
        text = _where(where, loc, raw)
        raise error(f"{text}: {_describe(first, kind, loc)}" if text else _describe(first, kind, loc)) from None


_ADAPTERS: dict[Any, TypeAdapter] = {}


def _adapter(kind: Any) -> TypeAdapter:
    if kind not in _ADAPTERS:
        _ADAPTERS[kind] = TypeAdapter(kind)
    return _ADAPTERS[kind]


def item_where(section: str, index: int, name: Any) -> str:
    """How a message names item ``index`` of the list ``section``: by its name when that is a valid
    name (``plots.bars``), else by its index and name (``checks[0] (deeper is better)``)."""
    if isinstance(name, str) and NAME.match(name):
        return f"{section}.{name}"
    return f"{section}[{index}]" + (f" ({name})" if name else "")


def _where(where: str, loc: list[Any], raw: Any) -> str:
    text, node = where, raw
    for part in loc:
        if isinstance(part, int):
            item = node[part] if isinstance(node, list) and part < len(node) else None
            text = item_where(text, part, item.get("name") if isinstance(item, dict) else None)
            node = item
        else:
            text = f"{text}.{part}" if text else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return text


_WORDS = {
    "missing": "missing", "float_parsing": "expected a number", "float_type": "expected a number",
    "int_parsing": "expected an integer", "int_type": "expected an integer", "int_from_float": "expected an integer",
    "finite_number": "expected a finite number", "bool_type": "expected true or false", "bool_parsing": "expected true or false",
}
_TYPES = {"string_type": "text", "dict_type": "a mapping", "dataclass_type": "a mapping", "list_type": "a list"}


def _describe(error: dict[str, Any], kind: Any, loc: list[Any]) -> str:
    """Pydantic's error in the words of the spec files."""
    kind_of_error, value, ctx = error["type"], error["input"], error.get("ctx") or {}
    is_key = error["loc"][-1:] == ("[key]",)  # a mapping's key, where a Literal lists the keys allowed
    if kind_of_error in ("unexpected_keyword_argument", "extra_forbidden"):
        return f"unknown field (allowed: {', '.join(_fields(kind, loc[:-1]))})"
    if kind_of_error == "missing":
        return "missing"
    if kind_of_error in _WORDS:
        return f"{_WORDS[kind_of_error]}, got {value!r}"
    if kind_of_error in _TYPES:
        return f"expected {_TYPES[kind_of_error]}, got {type(value).__name__}"
    if kind_of_error == "literal_error":
        expected = ctx["expected"].replace("'", "")
        if is_key:
            return f"unknown field (allowed: {expected.replace(' or ', ', ')})"
        return f"must be {'one of ' + expected.replace(' or ', ', ') if ',' in expected else expected}, got {value!r}"
    if kind_of_error in ("greater_than_equal", "greater_than"):
        return f"must be {'>=' if 'ge' in ctx else '>'} {ctx.get('ge', ctx.get('gt'))}, got {value!r}"
    if kind_of_error == "value_error":
        return str(ctx["error"])
    return error["msg"]


def _fields(kind: Any, loc: list[Any]) -> list[str]:
    """The keys the file may state at ``loc`` below ``kind`` (for 'unknown field' messages)."""
    for part in [*loc, None]:
        while typing.get_origin(kind) in (Annotated, Union, types.UnionType):
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        if part is None:
            break
        if dataclasses.is_dataclass(kind) or typing_extensions.is_typeddict(kind):
            kind = typing.get_type_hints(kind, include_extras=True)[part]
        else:  # a dict's values or a list's items
            kind = typing.get_args(kind)[-1]
    if typing_extensions.is_typeddict(kind):
        return sorted(typing.get_type_hints(kind))
    return sorted(f.name for f in dataclasses.fields(kind) if not f.metadata.get("computed"))
