"""The service's JWTs, read with their claims type-checked before anything uses them.

ninja-jwt checks the signature, ``aud``, ``iss``, ``exp`` and ``token_type``, but not what type each claim
is: a correctly signed token whose ``user_id`` is a list, or whose ``exp`` lies past year 9999, would
reach a query or ``datetime`` and raise something other than `TokenError` (a 500). Every place that
reads a token (bearer auth over HTTP, websockets and SSE, refresh, revoke) goes through these classes,
so such a token is refused like any other invalid one.
"""

from __future__ import annotations

from typing import Any

from ninja_jwt.exceptions import TokenError
from ninja_jwt.tokens import AccessToken, RefreshToken

# Primary keys are bigint; epochs must fit a datetime (year 9999).
_MAX_ID = 2**63 - 1
_MAX_EPOCH = 253_402_300_799
# OutstandingToken.jti is a CharField(max_length=255).
_MAX_JTI = 255


def _int_within(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def claims_check(payload: dict[str, Any]) -> None:
    """Raises `TokenError` unless every claim the service reads has the type and range it issues."""
    if not _int_within(payload.get("user_id"), 1, _MAX_ID):
        raise TokenError("token has an invalid user_id claim")
    if not isinstance(payload.get("token_type"), str):
        raise TokenError("token has an invalid token_type claim")
    jti = payload.get("jti")
    if not isinstance(jti, str) or not 1 <= len(jti) <= _MAX_JTI:
        raise TokenError("token has an invalid jti claim")
    for claim, required in (("exp", True), ("iat", False)):
        value = payload.get(claim)
        if value is None and not required:
            continue
        if not _int_within(value, 0, _MAX_EPOCH):
            raise TokenError(f"token has an invalid {claim} claim")


class _CheckedClaims:
    """Mixed in first, so the claims are checked before ninja-jwt's own verify (its ``exp`` check, the
    blacklist query) touches them."""

    payload: dict[str, Any]

    def verify(self) -> Any:
        claims_check(self.payload)
        return super().verify()  # type: ignore[misc]


class CheckedAccessToken(_CheckedClaims, AccessToken):
    pass


class CheckedRefreshToken(_CheckedClaims, RefreshToken):
    access_token_class = CheckedAccessToken
