"""Every error text the server puts on the wire, in one place (docs/protocol.md §2-§7).

Texts the 0.5.4 server also sends are copied exactly, because 0.18.x clients match on
substrings (``not yet answered`` becomes ``null``).  Texts for our own bounds and for
the hardening (docs/compatibility.md) are new; each says which limit was hit so an
honest developer can fix the call.  Texts from the pure rules (usernames, FQNs, signed
messages) stay in ``rondevu_core`` and reach the wire through ``str(ValidationError)``;
the fixed HTTP bodies (and the server's name and description) come from
``rondevu_schemas.http``, the single source the client and the JSON Schemas also use.
"""

from __future__ import annotations

# HTTP-level replies of POST /rpc (§2): the texts of `rondevu_schemas.http`
# (INVALID_REQUEST_FORMAT_ERROR, EMPTY_BATCH_ERROR, BATCH_TOO_LARGE_ERROR, NOT_FOUND_ERROR).
NULL_CALL = "Cannot destructure property 'method' of 'request' as it is null."

# Envelope (§3).
MISSING_METHOD = "Missing or invalid method"
MISSING_MESSAGE = "Missing or invalid message"
MISSING_SIGNATURE = "Missing or invalid signature"
UNKNOWN_METHOD = "Unknown method: {method}"
INTERNAL_ERROR = "Internal server error"

# Authentication and usernames (§4, §5).
USERNAME_REQUIRED = "Username required"
USERNAME_REQUIRED_PUBLISH = "Username required for service publishing"
NOT_CLAIMED = 'Username "{username}" is not claimed and no public key provided for auto-claim.'
INVALID_SIGNATURE_CLAIM = "Invalid signature for auto-claim"
INVALID_SIGNATURE = "Invalid signature"
CLAIMED_BY_OTHER_KEY = "Username already claimed by different public key"
KEY_HAS_OTHER_NAME = "This public key has already claimed a different username"

# publishService / getService / deleteService (§7.2-§7.4).
FQN_NEEDS_USERNAME = "Service FQN must include username"
FQN_USERNAME_MISMATCH = "Service FQN username must match authenticated username"
NO_OFFERS = "Must provide at least one offer"
TOO_MANY_OFFERS = "Too many offers (max {limit})"
OFFER_NOT_OBJECT = "Invalid offer at index {index}: must be an object"
OFFER_BAD_SDP = "Invalid offer at index {index}: missing or invalid SDP"
OFFER_EMPTY_SDP = "Invalid offer at index {index}: SDP cannot be empty"
OFFER_SDP_TOO_LARGE = "Invalid offer at index {index}: SDP too large (max {limit} characters)"
OFFER_DUPLICATE_SDP = "Invalid offer at index {index}: duplicate SDP in this request"
OFFER_EXISTS = "An offer with an identical SDP already exists"
USER_OFFER_LIMIT = "Too many offers for this username (max {limit})"
TOTAL_OFFER_LIMIT = "Server offer capacity reached, try again later"
SERVICE_NOT_FOUND = "Service not found"
SERVICE_NOT_OWNED = "Service not found or not owned by this username"
NO_AVAILABLE_OFFERS = "Service has no available offers"
NO_SERVICES_FOUND = "No services found"

# Offers and answers (§7.5, §7.6).
INVALID_SDP = "Invalid SDP"
SDP_TOO_LARGE = "SDP too large (max 64KB)"
OFFER_NOT_FOUND = "Offer not found"
OFFER_ALREADY_ANSWERED = "Offer already answered"
NOT_AUTHORIZED_OFFER = "Not authorized to access this offer"
OFFER_NOT_ANSWERED = "Offer not yet answered"

# ICE candidates (§7.8, §7.9).
CANDIDATES_REQUIRED = "Missing or invalid required parameter: candidates"
CANDIDATE_NOT_OBJECT = "Invalid candidate at index {index}: must be an object"
CANDIDATE_TOO_LARGE = "Invalid candidate at index {index}: too large (max {limit} bytes)"
CANDIDATE_TOO_DEEP = "Invalid candidate at index {index}: nested too deeply (max depth {limit})"
TOO_MANY_CANDIDATES = "Too many candidates in one request (max {limit})"
OFFER_CANDIDATE_LIMIT = "Too many ICE candidates for this offer (max {limit})"

# Long polling (our extension).
INVALID_WAIT_MS = (
    "Invalid waitMs: must be a whole number of milliseconds, 0 or more (held at most {limit})"
)

# Transport bounds (our additions; §11 says the original has none).
BODY_TOO_LARGE = "Request body too large (max {limit} bytes)"
RATE_LIMITED = "Rate limit exceeded, slow down"
BATCH_REPLY_TOO_LARGE = "Batch response too large (max {limit} bytes): call not run"
