"""``WebhookClient``: the ``corral.ports.WebhookPoster``, POSTs from corral's host.

A webhook URL is a tenant's: the request leaves corral's host, where loopback, the
sandboxes' bridge, the site's private networks and cloud metadata (169.254.169.254)
are reachable. So, unless ``allow_private``, the client resolves the URL's host
itself, keeps only globally routable unicast addresses, and connects to the first of
them (the ``Host`` header and TLS name stay the URL's): an answer that changes between
the check and the connection (DNS rebinding) cannot move the request inside. Redirects
are not followed; proxy settings of the environment are not used.

Contract: ``post`` returns the answer's status (its body is not read) or raises
Unavailable: a refused destination, no address, a connection or TLS failure, or no
answer within ``timeout`` seconds (name resolution included).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import httpx

from corral.errors import Unavailable


class WebhookClient:
    def __init__(self, *, allow_private: bool = False) -> None:
        self.allow_private = allow_private

    async def post(self, url: str, body: bytes, timeout: float) -> int:
        try:
            async with asyncio.timeout(timeout):
                target = httpx.URL(url)
                request = await self._address(target)
                async with (
                    httpx.AsyncClient(follow_redirects=False, trust_env=False) as client,
                    client.stream(
                        "POST",
                        request,
                        content=body,
                        headers={"Host": target.netloc.decode("ascii"), "Content-Type": "application/json"},
                        extensions={"sni_hostname": target.host},
                        timeout=timeout,
                    ) as answer,
                ):
                    return answer.status_code
        except TimeoutError as exc:
            raise Unavailable(f"no answer in {timeout:g}s") from exc
        except httpx.HTTPError as exc:
            raise Unavailable(f"could not be delivered: {type(exc).__name__}: {exc}") from exc

    async def _address(self, target: httpx.URL) -> httpx.URL:
        """``target`` with its host replaced by the address to connect to."""
        if self.allow_private:
            return target
        port = target.port or (443 if target.scheme == "https" else 80)
        try:
            found = await asyncio.get_running_loop().getaddrinfo(target.host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise Unavailable(f"the host {target.host} could not be resolved: {exc}") from exc
        for _family, _type, _proto, _name, sockaddr in found:
            try:
                address = ipaddress.ip_address(sockaddr[0])
            except ValueError:  # a scoped IPv6 address: link-local
                continue
            if address.is_global and not address.is_multicast:
                return target.copy_with(host=str(address))
        raise Unavailable(f"the host {target.host} has no public address (private destinations are refused)")
