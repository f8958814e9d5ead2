"""Which local addresses ICE offers: a setting, loopback by default.

aioice gathers host candidates from every interface except loopback, and aiortc exposes no
option for it, so the address list is replaced for the whole process (one media worker per
process: its peer connections all share the setting). In production, list the addresses to
listen on and, behind 1:1 NAT, set the announced address that the answer advertises instead
(``sdp.announce_address``), as mediasoup's listen infos do.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import aioice.ice


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
