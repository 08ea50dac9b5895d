"""What whoever starts the server decides, which no request can change.

The trust boundary: :class:`ServerSettings` and the :class:`~langchain_llava_cot.ChatLlavaCoT`
given to :func:`~langchain_llava_cot.server.create_app` (the model, the search defaults, the cap
on ``candidates``, the picture size limit) belong to the deployer; a request chooses only search
options within them. The server never reads a file a client names, and fetches a picture's
``http(s)`` URL only when ``allow_image_urls`` is on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DEFAULT_MAX_REQUEST_BYTES", "ServerSettings"]

DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
"""Largest request body accepted (pictures travel base64 in it): 32 MiB."""


@dataclass(frozen=True)
class ServerSettings:
    """The deployer's side of the server."""

    served_model_name: str = "llava-cot"
    """The name clients send as ``model`` (and under which ``SEARCH@`` names are listed)."""
    api_key: str | None = field(default=None, repr=False)
    """When set, every ``/v1`` request must send ``Authorization: Bearer <api_key>``."""
    allow_image_urls: bool = False
    """Fetch pictures given as ``http(s)`` URLs (off: only data URLs). On, the server makes the
    requests its clients name: allow it only where they may reach what the server reaches."""
    image_url_timeout: float = 10.0
    """Seconds to fetch one picture's URL."""
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    """Largest request body; also the largest picture fetched from a URL."""

    def __post_init__(self) -> None:
        if not self.served_model_name or "@" in self.served_model_name:
            msg = f"served_model_name must be a non-empty name without '@', got {self.served_model_name!r}."
            raise ValueError(msg)
        if self.api_key is not None and not self.api_key.strip():
            msg = "api_key is empty: set a key, or None for a server without one."
            raise ValueError(msg)
        if self.max_request_bytes < 1 or self.image_url_timeout <= 0:
            msg = "max_request_bytes and image_url_timeout must be above 0."
            raise ValueError(msg)
