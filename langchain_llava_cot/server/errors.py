"""Errors as OpenAI sends them: a status and ``{"error": {"message", "type", "param", "code"}}``.

The server's own checks raise :class:`APIError` with their status; :func:`api_error` turns
whatever else a request met into one, so no reply ever carries a stack trace:

======  =====================================================  ===========================================
status  when                                                   from
======  =====================================================  ===========================================
400     a malformed request, a bad search option or picture    ``APIError``, ``ValueError``, ``TypeError``
401     a missing or wrong API key                             ``APIError``
404     a model or a path the server does not serve            ``APIError``
413     a body, a picture or a prompt over the limits          ``APIError``, ``ImageTooLargeError``,
                                                               ``PromptTooLongError``
502     the model behind answered with an error                ``ServerError``
503     the model behind cannot be reached, or lacks the model ``ServerUnreachableError``,
                                                               ``ModelNotServedError``
504     the model behind did not answer in time                ``ServerTimeoutError``
500     anything else: logged with its traceback, the reply says only where to look
======  =====================================================  ===========================================
"""

from __future__ import annotations

import logging
from typing import Any

from langchain_llava_cot.backends.base import PromptTooLongError
from langchain_llava_cot.cli import one_line
from langchain_llava_cot.images import ImageTooLargeError

__all__ = ["APIError", "api_error"]

logger = logging.getLogger("langchain_llava_cot.server")

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error"}


class APIError(Exception):
    """A reply in OpenAI's error shape: ``status`` and what the client should change."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param

    @property
    def kind(self) -> str:
        """OpenAI's error ``type``."""
        if self.status in _TYPES:
            return _TYPES[self.status]
        return "invalid_request_error" if self.status < 500 else "server_error"

    def body(self) -> dict[str, Any]:
        """The reply's JSON body."""
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def api_error(error: BaseException) -> APIError:
    """The :class:`APIError` a request that raised ``error`` is answered with."""
    if isinstance(error, APIError):
        return error
    if isinstance(error, ImageTooLargeError):
        return APIError(413, one_line(error), code="image_too_large")
    if isinstance(error, PromptTooLongError):
        return APIError(413, one_line(error), code="context_length_exceeded")
    if upstream := _upstream_error(error):
        return upstream
    if isinstance(error, (ValueError, TypeError)):  # the chat model's and the images' checks
        return APIError(400, one_line(error), code="invalid_value")
    logger.error("A request failed", exc_info=error)
    return APIError(500, "The server failed to answer; its log has the details.", code="internal_error")


def _upstream_error(error: BaseException) -> APIError | None:
    """The reply for an error of an OpenAI-compatible model server behind this one."""
    try:
        from langchain_llava_cot.backends.openai import errors
    except ImportError:  # no httpx: no such backend either
        return None
    if isinstance(error, (errors.ServerUnreachableError, errors.ModelNotServedError)):
        return APIError(503, one_line(error), code="model_unavailable")
    if isinstance(error, errors.ServerTimeoutError):
        return APIError(504, one_line(error), code="model_timeout")
    if isinstance(error, errors.ServerError):
        return APIError(502, one_line(error), code="model_error")
    return None
