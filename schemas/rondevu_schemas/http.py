"""The bodies of the HTTP routes around ``POST /rpc`` (docs/protocol.md §2).

``GET /`` and ``GET /health`` describe the server; any other route gets the 404 body; a
``POST /rpc`` body that cannot be used as a request gets one of three 400 bodies.  Their
texts are fixed, so each is both a constant (for the server to send) and a ``Literal``
field (so a client, or the JSON Schema, recognises exactly that body).  Two of the 400
bodies have no ``success`` key, exactly as the original sends them.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import Field

from rondevu_schemas._base import Timestamp, WireModel

__all__ = [
    "BATCH_TOO_LARGE_ERROR",
    "DEFAULT_VERSION",
    "EMPTY_BATCH_ERROR",
    "INVALID_REQUEST_FORMAT_ERROR",
    "NOT_FOUND_ERROR",
    "SERVER_DESCRIPTION",
    "SERVER_NAME",
    "BatchTooLargeBody",
    "EmptyBatchBody",
    "HealthStatus",
    "InvalidRequestBody",
    "LongPollExtension",
    "NotFoundBody",
    "ServerExtensions",
    "ServerInfo",
    "StateExtension",
]

SERVER_NAME: Final = "Rondevu"
SERVER_DESCRIPTION: Final = "WebRTC signaling with RPC interface and Ed25519 authentication"
DEFAULT_VERSION: Final = "unknown"
"""The version ``GET /`` and ``GET /health`` report when none is configured."""

NOT_FOUND_ERROR: Final = "Not found. Use POST /rpc for all API calls."
INVALID_REQUEST_FORMAT_ERROR: Final = "Invalid request format"
EMPTY_BATCH_ERROR: Final = "Empty request array"
BATCH_TOO_LARGE_ERROR: Final = "Too many requests in batch (max 100)"


class LongPollExtension(WireModel):
    """``extensions.longPoll`` of ``GET /`` (ours): ``poll`` and ``getIceCandidates``
    accept ``waitMs`` and hold the call until there is news (docs/long-polling.md)."""

    max_wait_ms: Annotated[int, Field(ge=1)]
    """The longest this server holds a call; a longer ``waitMs`` is held this long."""


class StateExtension(WireModel):
    """``extensions.state`` of ``GET /`` (ours): a read-only overview of the live
    services and answered offers, with names, times and counts only (docs/live-page.md)."""

    path: str
    """Where the overview is served (``GET``), e.g. ``/state``."""
    max_limit: Annotated[int, Field(ge=1)]
    """The largest page (``limit``) the server returns."""


class ServerExtensions(WireModel):
    """``extensions`` of ``GET /`` (ours): each extension the server has on, by name.
    A name a client does not know is ignored, like any unknown field."""

    long_poll: LongPollExtension | None = None
    state: StateExtension | None = None


class ServerInfo(WireModel):
    """``GET /`` (200)."""

    version: str
    """The server's ``VERSION`` setting, or ``"unknown"``."""
    name: Literal["Rondevu"]
    description: Literal["WebRTC signaling with RPC interface and Ed25519 authentication"]
    extensions: ServerExtensions | None = None
    """Ours, after the 0.5.4 fields: absent when the server has no extension on (and
    from the 0.5.4 server)."""


class HealthStatus(WireModel):
    """``GET /health`` (200)."""

    status: Literal["ok"]
    timestamp: Timestamp
    """The server's clock when it answered, in Unix milliseconds."""
    version: str
    """The server's ``VERSION`` setting, or ``"unknown"``."""


class NotFoundBody(WireModel):
    """Any route other than ``/``, ``/health``, ``POST /rpc`` and ``OPTIONS`` (404)."""

    error: Literal["Not found. Use POST /rpc for all API calls."]


class InvalidRequestBody(WireModel):
    """``POST /rpc`` whose body is not JSON (400)."""

    success: Literal[False]
    error: Literal["Invalid request format"]


class EmptyBatchBody(WireModel):
    """``POST /rpc`` whose body is ``[]`` (400); note there is no ``success`` key."""

    error: Literal["Empty request array"]


class BatchTooLargeBody(WireModel):
    """``POST /rpc`` whose body is an array of more than 100 calls (400)."""

    error: Literal["Too many requests in batch (max 100)"]
