"""Messages as plain JSON-ready data, for printing and for programs that prefer dicts.

Unlike protobuf's ``json_format``, 64-bit integers stay numbers and every field is
present: a field that is unset (an ``optional`` number, a message such as
``finished_at``) is ``None``, so a reader can tell "absent" from zero. Field names are
the ``.proto``'s (snake_case); enums are their names (``RUN_STATUS_COMPLETED``);
timestamps are RFC 3339 strings in UTC.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

__all__ = ["to_dict"]

_TIMESTAMP = "google.protobuf.Timestamp"


def to_dict(message: Message) -> dict[str, Any]:
    """``message`` as a dict of JSON-ready values (see the module docstring)."""
    fields: list[FieldDescriptor] = list(message.DESCRIPTOR.fields)  # type: ignore[arg-type]
    return {field.name: _field(message, field) for field in fields}


def _field(message: Message, field: FieldDescriptor) -> Any:
    value = getattr(message, field.name)
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        return {key: _value(item, value_field) for key, item in sorted(value.items())}
    if field.is_repeated:
        return [_value(item, field) for item in value]
    if field.has_presence and not message.HasField(field.name):
        return None
    return _value(value, field)


def _value(value: Any, field: FieldDescriptor) -> Any:
    if field.message_type is not None:
        if field.message_type.full_name == _TIMESTAMP:
            return value.ToJsonString()
        return to_dict(value)
    if field.enum_type is not None:
        known = field.enum_type.values_by_number.get(value)
        return known.name if known is not None else value
    if field.type == FieldDescriptor.TYPE_BYTES:
        return value.hex()
    return value
