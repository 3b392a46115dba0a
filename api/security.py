"""API keys: ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``, compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Sequence

__all__ = ["Unauthorized", "check_api_key"]


class Unauthorized(Exception):
    """The request carries no API key, or one the server does not accept."""


def check_api_key(accepted: Sequence[str], x_api_key: str | None, authorization: str | None) -> None:
    """Accept the request when no keys are configured, or when it presents one of ``accepted``.

    Args:
        accepted: the server's keys; empty disables authentication.
        x_api_key: the ``X-API-Key`` header, if any.
        authorization: the ``Authorization`` header, if any (``Bearer <key>``).

    Raises:
        Unauthorized: no key, or a wrong one.
    """
    if not accepted:
        return
    # an empty or blank X-API-Key header counts as absent: a Bearer token beside it still authenticates
    presented = x_api_key.strip() if x_api_key and x_api_key.strip() else None
    if presented is None and authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            presented = token.strip()
    if not presented:
        raise Unauthorized("missing API key: send it as 'X-API-Key: <key>' or 'Authorization: Bearer <key>'")
    # compare with every key (no early exit) so the timing does not tell which prefix matched
    matches = [hmac.compare_digest(presented.encode(), key.encode()) for key in accepted]
    if not any(matches):
        raise Unauthorized("invalid API key: check the key, or ask the server's operator for one")
