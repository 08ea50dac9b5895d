"""Pictures given as ``http(s)`` URLs, fetched only when the server was started to allow it.

:func:`image_fetcher` gives the fetcher :func:`~.requests.call_of` uses, or None (the default),
which refuses every picture URL. A fetched picture becomes a data URL and is then checked like
any other (:mod:`langchain_llava_cot.images`).
"""

from __future__ import annotations

import base64

from langchain_llava_cot.server.errors import APIError
from langchain_llava_cot.server.requests import ImageFetcher
from langchain_llava_cot.server.settings import ServerSettings

__all__ = ["image_fetcher"]


def image_fetcher(settings: ServerSettings) -> ImageFetcher | None:
    """How this server fetches picture URLs: None unless ``settings.allow_image_urls``."""
    if not settings.allow_image_urls:
        return None

    async def fetch(url: str) -> str:
        return await _fetch(url, timeout=settings.image_url_timeout, max_bytes=settings.max_request_bytes)

    return fetch


async def _fetch(url: str, *, timeout: float, max_bytes: int) -> str:
    """The picture at ``url`` as a data URL; at most ``max_bytes`` are read."""
    import httpx

    data = bytearray()
    try:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=True) as client:
            async with client.stream("GET", url) as response:
                if response.status_code != 200:
                    msg = (
                        f"The picture URL {url} answered HTTP {response.status_code}; send a URL that works."
                    )
                    raise APIError(400, msg, code="image_url_failed")
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > max_bytes:
                        msg = f"The picture at {url} is over the server's limit of {max_bytes:,} bytes."
                        raise APIError(413, msg, code="image_too_large")
                mime = response.headers.get("content-type", "image/png").split(";")[0].strip()
    except httpx.HTTPError as e:
        msg = f"Could not fetch the picture URL {url} ({type(e).__name__}: {e}); send it as a data URL."
        raise APIError(400, msg, code="image_url_failed") from e
    return f"data:{mime or 'image/png'};base64,{base64.b64encode(bytes(data)).decode()}"
