"""A media asset's config model as a Dagster config schema, through Dagster's public config API
(``dagster.Field``, ``Shape``, ``Noneable``, ``Enum``), so the launchpad shows and checks each field.

Dagster turns its own ``Config`` classes into a schema with ``to_config_schema()``, which is not
documented and returns a type from Dagster's private modules; a plain pydantic model has no such
method at all. The schema here carries each field's type, default and description; the model
itself still validates the values (ranges, custom validators) when a run builds it.

Supported field types: ``bool``, ``int``, ``float``, ``str``, ``Literal[...]`` of strings,
``list[...]`` of those, an ``X | None`` of any of them, and nested pydantic models. Anything
else is refused when the code location loads, naming the field.
"""

import enum
import inspect
import types
import typing
from typing import Any

import dagster as dg
import pydantic
from pydantic_core import PydanticUndefined

_SCALARS: dict[Any, Any] = {bool: bool, int: int, float: float, str: str}


def config_field(model: type[pydantic.BaseModel], where: str) -> dg.Field:
    """The Dagster config field for ``model``: optional when every field has a default."""
    return dg.Field(_shape(model, where), is_required=any(f.is_required() for f in model.model_fields.values()))


def _shape(model: type[pydantic.BaseModel], where: str) -> dg.Shape:
    fields = {}
    for name, info in model.model_fields.items():
        dagster_type = _dagster_type(info.annotation, f"{where} config field '{name}'")
        if info.is_required():
            fields[name] = dg.Field(dagster_type, is_required=True, description=info.description)
            continue
        default = info.get_default(call_default_factory=True)
        if default is PydanticUndefined:
            default = None
        if isinstance(default, pydantic.BaseModel):
            default = default.model_dump(mode="json")
        if isinstance(default, enum.Enum):
            default = default.value
        if isinstance(dagster_type, dg.Shape):
            fields[name] = dg.Field(dagster_type, is_required=False, description=info.description)
            continue
        try:
            fields[name] = dg.Field(dagster_type, is_required=False, default_value=default,
                                    description=info.description)
        except dg.DagsterInvalidConfigError:
            raise TypeError(f"{where} config field '{name}': its default {default!r} is not a "
                            f"{_type_name(info.annotation)}") from None
    return dg.Shape(fields)


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation)


def _dagster_type(annotation: Any, where: str) -> Any:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return dg.Noneable(_dagster_type(rest[0], where))
    if origin is typing.Literal and all(isinstance(a, str) for a in args):
        return dg.Enum(where.split("'")[-2], [dg.EnumValue(a) for a in args])
    if origin is list and len(args) == 1:
        return [_dagster_type(args[0], where)]
    if inspect.isclass(annotation) and issubclass(annotation, pydantic.BaseModel):
        return _shape(annotation, where)
    raise TypeError(f"{where} is annotated {annotation!r}; media asset config fields must be bool, int, float, "
                    "str, a Literal of strings, a list of those, X | None, or a nested pydantic model")
