"""ICE: which local addresses the server offers, and which TURN servers the pages may use.

The TURN credentials are coturn's REST-API scheme (``use-auth-secret``): the username is
``<expiry unix time>:<subject>``, the password base64(HMAC-SHA1(static-auth-secret, username)),
so coturn checks them with no call to Earpiece, and refuses them once expired.

Which local addresses ICE offers: a setting, loopback by default.

aioice gathers host candidates from every interface except loopback, and aiortc exposes no
option for it, so the address list is replaced for the whole process (one media worker per
process: its peer connections all share the setting). In production, list the addresses to
listen on and, behind 1:1 NAT, set the announced address that the answer advertises instead
(``sdp.announce_address``), as mediasoup's listen infos do.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
from collections.abc import Sequence

import aioice.ice
import msgspec

from services.settings import Settings


class IceServer(msgspec.Struct, frozen=True):
    """One entry of a page's ``RTCConfiguration.iceServers``."""

    urls: tuple[str, ...]
    username: str
    credential: str


def turn_credential(secret: str, subject: str, expires_at: int) -> tuple[str, str]:
    """coturn's ``use-auth-secret`` username and password for ``subject`` until ``expires_at``."""
    username = f"{expires_at}:{subject}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers_for(settings: Settings, subject: str, now: float) -> tuple[IceServer, ...]:
    """The TURN servers ``subject``'s page may use, with a credential minted for them now."""
    if not settings.turn_urls or settings.turn_secret is None:
        return ()
    expires_at = int(now + settings.turn_ttl_s)
    username, credential = turn_credential(settings.turn_secret, subject, expires_at)
    return (IceServer(settings.turn_urls, username, credential),)


def gather_on(addresses: Sequence[str]) -> None:
    """Make every ICE agent in this process offer host candidates on exactly ``addresses``."""
    parsed = [ipaddress.ip_address(address) for address in addresses]

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [
            str(address)
            for address in parsed
            if (address.version == 4 and use_ipv4) or (address.version == 6 and use_ipv6)
        ]

    aioice.ice.get_host_addresses = host_addresses
