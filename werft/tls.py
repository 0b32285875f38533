"""The TLS contexts werft hands to httpx, each built once per process.

Given ``verify=True``, httpx loads the whole CA bundle into a new context for every
client it makes (~25 ms of CPU), and werft makes clients per BMC origin and per cluster
it verifies. A context can be shared by any number of clients and threads, so
werft builds each kind once and hands it to all of them.
"""

from __future__ import annotations

import functools
import os
import ssl

import httpx


@functools.cache
def plain_http() -> ssl.SSLContext:
    """For an http:// endpoint: a context httpx never uses. Should a redirect lead to
    https, it trusts no CA at all."""
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


@functools.cache
def system_trust() -> ssl.SSLContext:
    """What httpx trusts by default (certifi's bundle; ``SSL_CERT_FILE`` when set)."""
    return httpx.create_ssl_context()


@functools.cache
def no_verification() -> ssl.SSLContext:
    """For an endpoint whose certificate the inventory says not to check."""
    return httpx.create_ssl_context(verify=False)


def ca_bundle(path: str) -> ssl.SSLContext:
    """Trusting the CAs of the file at ``path``; read again once the file changes (a
    rotated bundle). Raises ``OSError`` / ``ssl.SSLError`` for a missing or unreadable
    file."""
    stat = os.stat(path)
    return _ca_bundle(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _ca_bundle(path: str, _mtime_ns: int, _size: int) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=path)
