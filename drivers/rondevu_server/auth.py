"""Authentication of one call: the signed ``message`` and implicit claiming (§4, §5).

The checks run in the 0.5.4 server's order, so every error text comes out exactly where
the original's would, with two hardenings that honest clients never notice:

- S2: an unclaimed username is claimed only after the timestamp (and everything else)
  has passed, never by a stale or mismatched request.
- S1 (in part): the method and context in the signed message must be those of the call
  (`check_call_binding`).  There is still no nonce: a captured call can be replayed for
  up to 5 minutes, but only as itself.

A claim stores the key in its canonical form (`canonical_public_key`), so one key is one
key however it was spelled, and nothing longer than a key is ever stored.

Claimed keys are cached in memory until the claim's own expiry: before then the name
cannot change hands (only its key may renew it, and cleanup removes only expired
names), so the cache is exact even with several server processes on one database.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rondevu_core.errors import ValidationError
from rondevu_core.rules.server_params import check_call_binding
from rondevu_core.rules.signing import canonical_public_key, check_timestamp, parse_auth_message
from rondevu_core.rules.usernames import is_valid_username, validate_username
from rondevu_server import messages
from rondevu_server.storage import USERNAME_TTL_MS, ClaimOutcome, Storage
from rondevu_server.verifier import SignatureVerifier

__all__ = ["Authenticator", "Call"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Call:
    """One envelope of §3 after its shape was checked."""

    method: str
    message: str
    signature: str
    public_key: Any
    """As sent: only a non-empty string can be used; any other truthy value fails."""
    params: Mapping[str, Any]


class Authenticator:
    """Checks signatures against stored (or, for a first call, provided) keys."""

    def __init__(
        self, storage: Storage, *, cache_size: int, verifier: SignatureVerifier | None = None
    ) -> None:
        self._storage = storage
        self._verifier = verifier if verifier is not None else SignatureVerifier(threads=0)
        self._cache_size = max(1, cache_size)
        self._keys: OrderedDict[str, tuple[str, int]] = OrderedDict()

    async def stored_key(self, username: str, now: int) -> str | None:
        """The key holding ``username`` now, from the cache or the database."""
        cached = self._keys.get(username)
        if cached is not None:
            if cached[1] > now:
                return cached[0]
            del self._keys[username]
        if not is_valid_username(username):
            return None  # such a name can never be stored; skip the database
        record = await self._storage.get_user(username, now)
        if record is None:
            return None
        self._remember(username, record.public_key, record.expires_at)
        return record.public_key

    def _remember(self, username: str, public_key: str, expires_at: int) -> None:
        if len(self._keys) >= self._cache_size:
            self._keys.popitem(last=False)
        self._keys[username] = (public_key, expires_at)

    async def authenticate(self, call: Call, now: int) -> str:
        """The authenticated username of ``call``, or `ValidationError` with the wire text."""
        parts = call.message.split(":")
        if len(parts) < 2 or not parts[1]:
            raise ValidationError(
                messages.USERNAME_REQUIRED_PUBLISH
                if call.method == "publishService"
                else messages.USERNAME_REQUIRED
            )
        username = parts[1]
        key = await self.stored_key(username, now)
        claim_with: str | None = None
        if key is None:
            if not call.public_key:
                raise ValidationError(messages.NOT_CLAIMED.format(username=username))
            validate_username(username)
            offered = (
                canonical_public_key(call.public_key) if isinstance(call.public_key, str) else None
            )
            if offered is None or not await self._verifier.verify(
                offered, call.message, call.signature
            ):
                raise ValidationError(messages.INVALID_SIGNATURE_CLAIM)
            claim_with = offered
        elif not await self._verifier.verify(key, call.message, call.signature):
            raise ValidationError(messages.INVALID_SIGNATURE)
        signed = parse_auth_message(call.message)
        check_timestamp(signed.timestamp_ms, now)
        check_call_binding(signed, call.method, call.params)
        if claim_with is not None:
            outcome = await self._storage.claim_username(username, claim_with, now)
            if outcome is ClaimOutcome.OTHER_KEY:
                raise ValidationError(messages.CLAIMED_BY_OTHER_KEY)
            if outcome is ClaimOutcome.KEY_TAKEN:
                raise ValidationError(messages.KEY_HAS_OTHER_NAME)
            self._remember(username, claim_with, now + USERNAME_TTL_MS)
        return username
