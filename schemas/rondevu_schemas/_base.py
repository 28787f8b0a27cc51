"""The base classes every wire model shares, and the field types they are built from.

Invariants of every model in this package:

- Python field names are snake_case; the wire names are their camelCase aliases
  (``service_fqn`` <-> ``serviceFqn``).  Python code may construct a model by either
  name; `WireModel.from_wire` accepts **only** the wire names, like the original server,
  which never looks at ``service_fqn``.
- Unknown fields are ignored (the original destructures what it needs and drops the
  rest), types are strict (no ``"5"`` -> 5, no ``true`` -> 1): every conforming client
  sends JSON numbers and strings, and the original's JavaScript coercions of garbage are
  the server's business, decided on the raw params before a model sees them.
- "Absent" and ``null`` are different on the wire (JavaScript drops ``undefined`` keys,
  keeps ``null``), so `WireModel.to_wire` dumps only the fields that were set
  (``exclude_unset``).  A model therefore round-trips a wire object exactly, and a field
  left out when building a reply is left out of the reply.  Fields that must always be on
  the wire have no default, so they cannot be forgotten.
- Field order is the original's key order: pydantic dumps in declaration order, and the
  original sends keys in insertion order (docs/protocol.md §2).
- Models are frozen: a parsed message is a value, not a buffer.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Self, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, RootModel, WithJsonSchema
from pydantic.alias_generators import to_camel

from rondevu_core.rules.fqn import validate_service_fqn
from rondevu_core.rules.usernames import validate_username

__all__ = [
    "IceCandidate",
    "NonEmptyStr",
    "OfferId",
    "OwnedServiceFqnStr",
    "ServiceFqnStr",
    "ServiceId",
    "Timestamp",
    "UsernameStr",
    "WireModel",
    "WireRootModel",
]

_T = TypeVar("_T")


class WireModel(BaseModel):
    """Base of every JSON object on the wire (see the module docstring for its rules)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="ignore",
        strict=True,
        frozen=True,
        use_attribute_docstrings=True,
        # JSON Schema titles name the wire field ("offerId"), not "Offerid".
        field_title_generator=lambda name, _info: to_camel(name),
    )

    @classmethod
    def from_wire(cls, data: object) -> Self:
        """Validate a decoded JSON value by its wire (camelCase) names only.

        Raises `pydantic.ValidationError` when ``data`` does not have this shape.
        """
        return cls.model_validate(data, by_alias=True, by_name=False)

    def to_wire(self) -> Any:
        """The JSON value to send: wire names, only the fields that were set."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)

    def to_json(self) -> str:
        """`to_wire` as compact JSON text (what ``JSON.stringify`` would send)."""
        return self.model_dump_json(by_alias=True, exclude_unset=True)


class WireRootModel(RootModel[_T], Generic[_T]):
    """Base of the wire values that are not plain objects (arrays, unions of shapes).

    Same rules and methods as `WireModel`; the value lives in ``root``.
    """

    model_config = ConfigDict(strict=True, frozen=True)

    @classmethod
    def from_wire(cls, data: object) -> Self:
        """Validate a decoded JSON value by its wire (camelCase) names only."""
        return cls.model_validate(data, by_alias=True, by_name=False)

    def to_wire(self) -> Any:
        """The JSON value to send: wire names, only the fields that were set."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)

    def to_json(self) -> str:
        """`to_wire` as compact JSON text (what ``JSON.stringify`` would send)."""
        return self.model_dump_json(by_alias=True, exclude_unset=True)


def _username(value: str) -> str:
    return validate_username(value)


def _service_fqn(value: str) -> str:
    validate_service_fqn(value)
    return value


def _owned_service_fqn(value: str) -> str:
    if validate_service_fqn(value).username is None:
        raise ValueError("Service FQN must include username")
    return value


NonEmptyStr = Annotated[str, Field(min_length=1)]
"""A string the original tests with ``!value``: present, a string, not empty."""

Timestamp = Annotated[int, Field(ge=0)]
"""A Unix time in milliseconds (JavaScript ``Date.now()``), always an integer."""

UsernameStr = Annotated[
    str,
    AfterValidator(_username),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^[a-z0-9][a-z0-9.-]*[a-z0-9]$",
            "minLength": 3,
            "maxLength": 32,
        }
    ),
]
"""A claimed username (§5), checked by `rondevu_core.validate_username`."""

ServiceFqnStr = Annotated[
    str,
    AfterValidator(_service_fqn),
    WithJsonSchema(
        {
            "type": "string",
            "description": "service:version[@username] (docs/protocol.md §6)",
            "pattern": (
                r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?:[0-9]+\.[0-9]+\.[0-9]+(-[a-z0-9.-]+)?"
                r"(@([a-z0-9][a-z0-9.-]*[a-z0-9])?)?$"
            ),
        }
    ),
]
"""A service FQN, with or without ``@username``, checked by `validate_service_fqn`."""

OwnedServiceFqnStr = Annotated[
    str,
    AfterValidator(_owned_service_fqn),
    WithJsonSchema(
        {
            "type": "string",
            "description": "service:version@username (docs/protocol.md §6)",
            "pattern": (
                r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?:[0-9]+\.[0-9]+\.[0-9]+(-[a-z0-9.-]+)?"
                r"@[a-z0-9][a-z0-9.-]*[a-z0-9]$"
            ),
        }
    ),
]
"""A valid service FQN that names its owner (publishing, and every FQN a reply carries)."""

OfferId = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
"""An offer ID: lowercase hex SHA-256 of the offer's ``{"sdp":…}`` JSON (§7.2)."""

ServiceId = Annotated[
    str, Field(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
]
"""A service ID: a lowercase UUID (version 4 from the original server)."""

IceCandidate = dict[str, Any] | list[Any]
"""An ICE candidate as the server relays it: any JSON object or array, never inspected.

The original refuses ``null`` and primitives but accepts arrays (§7.8); the 0.18.9 client
sends ``{"candidate":"candidate:…","sdpMLineIndex":0,"sdpMid":"0"}``.
"""
