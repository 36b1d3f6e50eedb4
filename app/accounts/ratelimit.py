"""The login attempt limit, kept in Redis so every ASGI process shares it (docs/security.md).

Two fixed-window counters, keyed on the normalised username:

- per (client address, username): ``LOGIN_RATE_LIMIT`` attempts per ``LOGIN_RATE_WINDOW`` seconds;
- per username from all addresses together: ``LOGIN_RATE_LIMIT_PER_USERNAME`` per window, which bounds
  guessing spread over many addresses.

An attempt is *reserved* on both counters, by one Lua script, before the password is checked, so N
concurrent wrong passwords get at most the limit checked; a successful login gives its reservation back,
so only failures count. A refused attempt counts nothing and does not extend the window.

The client address is Django's ``REMOTE_ADDR``: the TCP peer under `make run` (uvicorn started without
proxy headers), the address nginx saw under `make run-prod`. IPv6 clients are counted per /64, the
block one subscriber usually holds. Only Redis 6.2 commands are used (the embedded server is 6.2).
"""

from __future__ import annotations

import hashlib
import ipaddress
import unicodedata
from dataclasses import dataclass

from django.conf import settings

from app.core.errors import RateLimited
from app.core.redis import get_redis

# KEYS: the (address, username) counter, the username counter. ARGV: their limits, the window.
# Returns 0 when the attempt was reserved, else the seconds until the blocking counter's window ends.
_RESERVE_LUA = """
for i = 1, 2 do
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  if used >= tonumber(ARGV[i]) then
    local ttl = redis.call('TTL', KEYS[i])
    if ttl < 0 then
      redis.call('EXPIRE', KEYS[i], ARGV[3])
      ttl = tonumber(ARGV[3])
    end
    return math.max(ttl, 1)
  end
end
for i = 1, 2 do
  redis.call('INCR', KEYS[i])
  if redis.call('TTL', KEYS[i]) < 0 then
    redis.call('EXPIRE', KEYS[i], ARGV[3])
  end
end
return 0
"""

# Gives a reservation back; a counter whose window ended meanwhile is left alone.
_RELEASE_LUA = """
for i = 1, 2 do
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  if used > 0 then
    redis.call('DECR', KEYS[i])
  end
end
return 0
"""


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    """A reserved attempt: the Redis keys it counted on."""

    keys: tuple[str, str]


def username_normalise(username: str) -> str:
    """NFKC (as Django normalises usernames) and case-folded: ``Admin``, ``ADMIN`` and the full-width
    spelling of ``admin`` share a count."""
    return unicodedata.normalize("NFKC", username).casefold()


def client_address_key(client_ip: str) -> str:
    """The address a counter is kept for: IPv4 as is, IPv6 by its /64."""
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return client_ip  # no usable address (a unix socket without a proxy): one shared bucket
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _keys(client_ip: str, username: str) -> tuple[str, str]:
    # One hash tag per username, so both keys of an attempt live on one Redis Cluster slot.
    user = _digest(username_normalise(username))
    return f"tw:login:{{{user}}}:addr:{_digest(client_address_key(client_ip))}", f"tw:login:{{{user}}}:all"


async def login_attempt_reserve(*, client_ip: str, username: str) -> LoginAttempt:
    """Counts one attempt before the password is checked; raises `RateLimited` (429 with Retry-After)
    when the address or the username has used up its window."""
    keys = _keys(client_ip, username)
    limits = (settings.LOGIN_RATE_LIMIT, settings.LOGIN_RATE_LIMIT_PER_USERNAME)
    retry = int(await get_redis().register_script(_RESERVE_LUA)(keys=keys, args=[*limits,
                                                                                  settings.LOGIN_RATE_WINDOW]))
    if retry > 0:
        raise RateLimited(
            "too many failed login attempts; try again later",
            details={"retry_after": retry},
            headers={"Retry-After": str(retry)},
        )
    return LoginAttempt(keys=keys)


async def login_attempt_release(*, attempt: LoginAttempt) -> None:
    """A successful login: its attempt does not count against the limit."""
    await get_redis().register_script(_RELEASE_LUA)(keys=attempt.keys, args=[])
