"""Reads the rich error details of a failed call (``google.rpc.Status`` in the trailing
metadata ``grpc-status-details-bin``) with protobuf alone.

The server packs a ``google.rpc.BadRequest`` into the status of an INVALID_ARGUMENT
error. Its Python classes live in ``googleapis-common-protos``, a dependency this
distribution does not take: instead, this module builds wire-compatible message types
in a private descriptor pool. Each embedded message (``Status.details``,
``BadRequest.field_violations``) is declared as ``bytes``, which has the same encoding
as a nested message, and is parsed in a second step (``details`` with protobuf's own
``google.protobuf.Any``). Nothing is registered in protobuf's default pool, so this
coexists with ``googleapis-common-protos`` when a program has it too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

__all__ = ["STATUS_DETAILS_KEY", "FieldViolation", "field_violations"]

STATUS_DETAILS_KEY = "grpc-status-details-bin"
_BAD_REQUEST_TYPE = "google.rpc.BadRequest"

_FD = descriptor_pb2.FieldDescriptorProto


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One problem with a request: where (``field``, a manifest location such as
    ``repositories[2].scenarios[0]``) and what (``description``)."""

    field: str
    description: str

    def __str__(self) -> str:
        return f"{self.field}: {self.description}" if self.field else self.description


def _message_types() -> tuple[type[Message], type[Message], type[Message]]:
    """``Status``, ``BadRequest`` and ``BadRequest.FieldViolation`` look-alikes."""
    file = descriptor_pb2.FileDescriptorProto(
        name="fleetbench_client/rpc_status_wire.proto", package="fleetbench_client.wire",
        syntax="proto3")

    def message(name: str, *fields: tuple[str, int, _FD.Type.ValueType,
                                          _FD.Label.ValueType]) -> None:
        file.message_type.add(name=name, field=[
            _FD(name=n, number=number, type=kind, label=label)
            for n, number, kind, label in fields])

    optional, repeated = _FD.LABEL_OPTIONAL, _FD.LABEL_REPEATED
    message("Status", ("code", 1, _FD.TYPE_INT32, optional),
            ("message", 2, _FD.TYPE_STRING, optional),
            ("details", 3, _FD.TYPE_BYTES, repeated))  # google.protobuf.Any
    message("BadRequest", ("field_violations", 1, _FD.TYPE_BYTES, repeated))
    message("FieldViolation", ("field", 1, _FD.TYPE_STRING, optional),
            ("description", 2, _FD.TYPE_STRING, optional))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return tuple(  # type: ignore[return-value]
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"fleetbench_client.wire.{n}"))
        for n in ("Status", "BadRequest", "FieldViolation"))


_Status, _BadRequest, _FieldViolation = _message_types()


def _parse(kind: type[Message], data: bytes) -> Any:
    message = kind()
    message.ParseFromString(data)
    return message


def field_violations(trailing_metadata: Iterable[tuple[str, str | bytes]] | None,
                     ) -> tuple[FieldViolation, ...] | None:
    """The violations of the ``google.rpc.BadRequest`` detail of a call's status, or
    ``None`` when the status carries no such detail (or cannot be read)."""
    found: list[FieldViolation] | None = None
    for key, value in trailing_metadata or ():
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = _parse(_Status, value)
            for raw in status.details:
                detail = any_pb2.Any.FromString(raw)
                if detail.type_url.rsplit("/", 1)[-1] != _BAD_REQUEST_TYPE:
                    continue
                bad = _parse(_BadRequest, detail.value)
                found = (found or []) + [
                    FieldViolation(v.field, v.description)
                    for v in (_parse(_FieldViolation, item) for item in bad.field_violations)]
        except DecodeError:
            return None
    return None if found is None else tuple(found)
