"""The daemon's HTTP client (part of host): artifacts downloaded, webhooks posted.

The one module that imports aiohttp for the client side (the server side has its
own module: serving and fetching are two jobs). Both calls are bounded: a total
timeout, a byte limit on what is read, no retries (the caller records a failure
and moves on), redirects followed only to http(s). Errors are
:class:`errors.OperationFailed` naming the URL and what went wrong, never a
traceback.

aiohttp is imported by each call, not with the module: the daemon imports this module
at start (through deploys and hooks) and most daemons never fetch anything; importing
aiohttp's client costs about 0.2 s of start-up and 25 MiB of RSS (with the HTTP API
off nothing else loads it).
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import OperationFailed

_CHUNK = 1 << 16
_MAX_REDIRECTS = 5


def is_http(url: str) -> bool:
    return url.startswith(("http://", "https://"))


async def download(
    url: str,
    sink: Callable[[bytes], None],
    max_bytes: int,
    timeout: float,
    progress: Callable[[int, int | None], None],
) -> int:
    """GET ``url`` and hand its body to ``sink`` chunk by chunk; the byte count.

    ``progress(bytes so far, Content-Length or None)`` is called after each chunk.
    More than ``max_bytes`` (announced or read) is refused before it is all read.
    """
    import aiohttp

    limits = aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, 30.0))
    try:
        async with (
            aiohttp.ClientSession(timeout=limits, trust_env=False) as session,
            session.get(url, max_redirects=_MAX_REDIRECTS) as response,
        ):
            if response.status != 200:
                raise OperationFailed(f"{url}: HTTP {response.status} {response.reason or ''}")
            announced = response.content_length
            if announced is not None and announced > max_bytes:
                raise OperationFailed(
                    f"{url}: {announced} bytes, over the limit of {max_bytes} bytes"
                )
            size = 0
            async for chunk in response.content.iter_chunked(_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise OperationFailed(f"{url}: over the limit of {max_bytes} bytes")
                sink(chunk)
                progress(size, announced)
            return size
    except TimeoutError:
        raise OperationFailed(f"{url}: not downloaded within {timeout:g}s") from None
    except aiohttp.ClientError as exc:
        raise OperationFailed(f"{url}: {exc.__class__.__name__}: {exc}") from None


async def post_json(url: str, body: bytes, timeout: float) -> int:
    """POST ``body`` (JSON) to ``url``; the HTTP status. OperationFailed on a network
    error, a timeout or a status that is not 2xx."""
    import aiohttp

    limits = aiohttp.ClientTimeout(total=timeout)
    headers = {"Content-Type": "application/json", "User-Agent": "supervisord-lite"}
    try:
        async with (
            aiohttp.ClientSession(timeout=limits, trust_env=False) as session,
            session.post(url, data=body, headers=headers, max_redirects=0) as response,
        ):
            await response.content.read(_CHUNK)  # a bounded look at the answer, then close
            if not 200 <= response.status < 300:
                raise OperationFailed(f"{url}: HTTP {response.status} {response.reason or ''}")
            return response.status
    except TimeoutError:
        raise OperationFailed(f"{url}: no answer within {timeout:g}s") from None
    except aiohttp.ClientError as exc:
        raise OperationFailed(f"{url}: {exc.__class__.__name__}: {exc}") from None
