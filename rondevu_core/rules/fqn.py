"""Service names, versions and fully qualified names (docs/protocol.md §6).

An FQN is ``service:version@username`` (publishing, direct lookup) or ``service:version``
(discovery).  Parsing takes the *last* ``@`` (only when it is not the first character)
and splits ``service:version`` at the *first* colon, exactly like the 0.5.4 server, so
both sides agree on every string.  ``chat:1.0.0@`` parses with an empty username, which
means "no username".

Matching is exact at 0.5.4: the server compares versions and FQN strings for equality.
`is_version_compatible` is the semver rule the original documents but never applies; we
keep it as a documented helper (S6), not as the lookup rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from rondevu_core.errors import ValidationError
from rondevu_core.rules.usernames import js_length, validate_username

__all__ = [
    "SERVICE_NAME_MAX_LENGTH",
    "VERSION_MAX_LENGTH",
    "DiscoveryMode",
    "ServiceFqn",
    "Version",
    "connect_target",
    "discovery_mode",
    "is_version_compatible",
    "parse_service_fqn",
    "parse_version",
    "validate_service_fqn",
]

SERVICE_NAME_MAX_LENGTH = 128
VERSION_MAX_LENGTH = 128
"""Ours (the original has none): a version is stored and indexed with its service, and
PostgreSQL cannot index a text of a few KB, so an unbounded one was a way to fail every
publish of it with an internal error, or to store megabytes per service."""

_SERVICE_RE = re.compile(r"[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?\Z")
_VERSION_RE = re.compile(r"([0-9]+)\.([0-9]+)\.([0-9]+)(?:-([a-z0-9.-]+))?\Z")

ERR_FQN_NOT_STRING = "Service FQN must be a string"
ERR_FQN_FORMAT = "Service FQN must be in format: service:version[@username]"
ERR_SERVICE_CHARS = "Service name must be lowercase alphanumeric with optional dots/dashes"
ERR_SERVICE_LENGTH = "Service name must be 1-128 characters"
ERR_VERSION = "Version must be semantic versioning (e.g., 1.0.0, 2.1.3-beta)"
ERR_VERSION_LENGTH = "Version must be 1-128 characters"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceFqn:
    """A parsed FQN.  ``username`` is None when the FQN names no user."""

    service: str
    version: str
    username: str | None = None

    @property
    def base(self) -> str:
        """``service:version``, the part discovery matches on."""
        return f"{self.service}:{self.version}"

    def with_username(self, username: str | None) -> ServiceFqn:
        """The same service and version, owned by ``username``."""
        return ServiceFqn(service=self.service, version=self.version, username=username)

    def __str__(self) -> str:
        return self.base if self.username is None else f"{self.base}@{self.username}"


def parse_service_fqn(value: str) -> ServiceFqn | None:
    """Split ``value`` the way the 0.5.4 server does; None when it has no valid shape.

    This checks only the shape, not the character rules: see `validate_service_fqn`.
    """
    at = value.rfind("@")
    if at > 0:
        service_version, username = value[:at], value[at + 1 :]
    else:
        service_version, username = value, ""
    colon = service_version.find(":")
    if colon <= 0:
        return None
    service, version = service_version[:colon], service_version[colon + 1 :]
    if not service or not version:
        return None
    return ServiceFqn(service=service, version=version, username=username or None)


def validate_service_fqn(value: object) -> ServiceFqn:
    """Parse and validate an FQN, raising `ValidationError` with the server's texts."""
    if not isinstance(value, str):
        raise ValidationError(ERR_FQN_NOT_STRING)
    fqn = parse_service_fqn(value)
    if fqn is None:
        raise ValidationError(ERR_FQN_FORMAT)
    if not _SERVICE_RE.match(fqn.service):
        raise ValidationError(ERR_SERVICE_CHARS)
    if not 1 <= js_length(fqn.service) <= SERVICE_NAME_MAX_LENGTH:
        raise ValidationError(ERR_SERVICE_LENGTH)
    if js_length(fqn.version) > VERSION_MAX_LENGTH:
        raise ValidationError(ERR_VERSION_LENGTH)
    parse_version(fqn.version)
    if fqn.username is not None:
        validate_username(fqn.username)
    return fqn


def _numeric_key(digits: str) -> tuple[int, str]:
    """Order decimal digit strings numerically without int() (no 4300-digit limit)."""
    significant = digits.lstrip("0")
    return (len(significant), significant)


@dataclass(frozen=True, slots=True, kw_only=True)
class Version:
    """A semantic version as the protocol's grammar allows it.

    The numeric parts stay digit strings: versions have no length limit on the wire and
    Python refuses to convert very long digit strings to ``int``.
    """

    major: str
    minor: str
    patch: str
    prerelease: str | None = None

    def __str__(self) -> str:
        core = f"{self.major}.{self.minor}.{self.patch}"
        return core if self.prerelease is None else f"{core}-{self.prerelease}"


def parse_version(value: str) -> Version:
    """Parse ``MAJOR.MINOR.PATCH[-prerelease]`` or raise `ValidationError`."""
    match = _VERSION_RE.match(value)
    if match is None:
        raise ValidationError(ERR_VERSION)
    major, minor, patch, pre = match.groups()
    return Version(major=major, minor=minor, patch=patch, prerelease=pre)


def is_version_compatible(requested: str, available: str) -> bool:
    """The semver rule the original documents (§6) but never applies to lookups.

    Same major; same minor too when the major is 0; available >= requested on
    (minor, patch); prerelease tags equal when the request has one.
    """
    want, have = parse_version(requested), parse_version(available)
    if _numeric_key(want.major) != _numeric_key(have.major):
        return False
    if _numeric_key(want.major) == (0, "") and _numeric_key(want.minor) != _numeric_key(have.minor):
        return False
    have_key = (_numeric_key(have.minor), _numeric_key(have.patch))
    if have_key < (_numeric_key(want.minor), _numeric_key(want.patch)):
        return False
    return want.prerelease is None or want.prerelease == have.prerelease


DiscoveryMode = Literal["direct", "random", "paginated"]


def discovery_mode(fqn: str) -> DiscoveryMode:
    """The lookup mode the 0.18.9 client picks for ``findService(fqn)`` without an
    explicit mode (§7.3): ``direct`` when the FQN names a user, else ``random``."""
    return "direct" if "@" in fqn else "random"


def connect_target(
    service_fqn: str | None, service: str | None, username: str | None
) -> ServiceFqn:
    """The FQN ``connectToService`` aims at, with the 0.18.9 client's input errors.

    Either a whole ``service_fqn`` (``chat:1.0.0@alice``, or ``chat:1.0.0`` for a random
    provider) or a ``service`` with an optional ``username``.
    """
    if service_fqn is not None:
        if not service_fqn.strip():
            raise ValidationError("serviceFqn cannot be empty")
        return validate_service_fqn(service_fqn)
    if service is None:
        raise ValidationError("Either serviceFqn or service must be provided")
    if not service.strip():
        raise ValidationError("service cannot be empty")
    if username is not None and not username.strip():
        raise ValidationError("username cannot be empty")
    return validate_service_fqn(service if username is None else f"{service}@{username}")
