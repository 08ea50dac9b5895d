"""``llava-cot serve``: start the OpenAI-compatible server from the command line.

The model and the search defaults take the same flags as ``llava-cot ask`` (the CLI adds them,
one per search option); this module adds the server's own (:func:`add_serve_options`) and runs
it (:func:`serve`)::

    llava-cot serve --port 8000 --strategy stage_beam --candidates 4
    llava-cot serve --base-url http://127.0.0.1:9000/v1 --model llava-cot --api-key-env LLAVA_COT_KEY
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from langchain_llava_cot.images import DEFAULT_MAX_PIXELS
from langchain_llava_cot.server.settings import DEFAULT_MAX_REQUEST_BYTES, ServerSettings

__all__ = ["add_serve_options", "serve", "settings_of"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_serve_options(parser: argparse.ArgumentParser) -> None:
    """Add the server's own options to ``parser`` (the model's and the search's are the CLI's)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="environment variable holding the key clients must send as 'Authorization: Bearer KEY'; "
        "none: no key",
    )
    parser.add_argument(
        "--served-model-name",
        help="the model name clients send; default: llava-cot-demo, the model folder's name, or --model "
        "with --base-url",
    )
    parser.add_argument(
        "--max-image-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help="largest picture, in pixels (413 above)",
    )
    parser.add_argument(
        "--max-request-mb",
        type=float,
        default=DEFAULT_MAX_REQUEST_BYTES / 2**20,
        help="largest request body, pictures included, in MiB (413 above)",
    )
    parser.add_argument(
        "--allow-image-urls",
        action="store_true",
        help="fetch pictures sent as http(s) URLs (the server then requests the URLs its clients name)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's",
    )


def serve(args: argparse.Namespace, search_options: Mapping[str, Any]) -> int:
    """Load the model, then serve until interrupted (Ctrl-C).

    ``search_options`` are the search flags given (the requests' defaults; ``max_candidates`` is
    also the cap no request can raise).
    """
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as e:
        msg = f"llava-cot serve needs starlette and uvicorn ({e}): pip install 'langchain-llava-cot[serve]'."
        raise ImportError(msg) from e
    from rich.console import Console

    from langchain_llava_cot.server.app import create_app

    settings = settings_of(args)
    llm = _chat_model(args, search_options)
    console = Console(stderr=True, highlight=False)
    with console.status("loading the model..."):
        llm.get_backend()
    if args.host not in _LOOPBACK and settings.api_key is None:
        console.print(
            f"[yellow]Listening on {args.host} with no API key: anyone who reaches it may use it.[/]"
        )
    console.print(
        f"Serving [bold]{settings.served_model_name}[/] ({llm.strategy}, {llm.candidates} candidates, "
        f"{llm.judge} judge) at http://{args.host}:{args.port}/v1"
    )
    uvicorn.run(create_app(llm, settings), host=args.host, port=args.port, log_level=args.log_level)
    return 0


def settings_of(args: argparse.Namespace) -> ServerSettings:
    """The server settings the command line asks for (the API key read from its variable)."""
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env, "").strip()
        if not api_key:
            variable = args.api_key_env
            msg = f"--api-key-env names {variable}, which is not set: export {variable}=<key> first."
            raise ValueError(msg)
    if args.max_request_mb <= 0:
        msg = f"--max-request-mb must be above 0, got {args.max_request_mb}."
        raise ValueError(msg)
    return ServerSettings(
        served_model_name=args.served_model_name or _default_name(args),
        api_key=api_key,
        allow_image_urls=args.allow_image_urls,
        max_request_bytes=int(args.max_request_mb * 2**20),
    )


def _default_name(args: argparse.Namespace) -> str:
    if args.model is None:
        return "llava-cot-demo"
    if args.base_url:
        return str(args.model)
    return Path(args.model).expanduser().resolve().name or "llava-cot"


def _chat_model(args: argparse.Namespace, search_options: Mapping[str, Any]) -> Any:
    from langchain_llava_cot.chat_models import ChatLlavaCoT

    return ChatLlavaCoT(
        model=args.model,
        base_url=args.base_url,
        device=args.device,
        max_image_pixels=args.max_image_pixels,
        **search_options,
    )
