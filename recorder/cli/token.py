"""``recorder token [CONFIG] [--write FILE]``: fetch a WebSocket token with the configured key.

The token goes to stdout (that is the command's job) or, with ``--write``, to a file only its
owner can read, in the form Kraken's sample command-line client reads (``WS_Token``). The
API secret is never printed; errors are one line without a traceback, since a traceback
could show the values of local variables.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

from recorder.cli.usage import fail
from recorder.core.secrets import write_private

EXIT_FIX_INPUT = 2  # config or credentials wrong: retrying will not help
EXIT_TRY_LATER = 1  # network, rate limit, the exchange's trouble


def token(
    config: Path | None = typer.Argument(None, help="Config file (TOML) whose exchange, "
                                         "[credentials] and rest_url to use. Without it: "
                                         "Kraken, with the environment variables "
                                         "KRAKEN_API_KEY and KRAKEN_API_SECRET."),
    write: Path | None = typer.Option(None, "--write", help="Write the token to this file "
                                      "(mode 0600) instead of printing it, e.g. WS_Token for "
                                      "Kraken's sample client."),
    rest_url: str | None = typer.Option(None, "--rest-url", help="REST endpoint (default: the "
                                        "config's, else the exchange's); e.g. the "
                                        "simulator's."),
    timeout: float = typer.Option(10.0, "--timeout", min=0.1, help="HTTP timeout, seconds."),
    retries: int = typer.Option(3, "--retries", min=0, help="Retries on rate limits and "
                                "network errors."),
) -> None:
    """Fetch a WebSocket token with the configured API key (Kraken GetWebSocketsToken,
    KuCoin bullet-private)."""
    from recorder import exchanges
    from recorder.core import secrets
    from recorder.core.config import ConfigError, load_config
    from recorder.exchanges.base import ExchangeError

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                            format="%(levelname)s %(name)s: %(message)s")
    try:
        if config is not None:
            cfg = load_config(config, check_env=False)
            spec = cfg.spec
            url = rest_url or cfg.rest_url
        else:
            cfg, spec = None, exchanges.get(exchanges.DEFAULT_EXCHANGE)
            url = rest_url or spec.default_rest_url
        if not url.startswith(("http://", "https://")):
            fail(f"--rest-url {url!r} is not an http:// or https:// URL", EXIT_FIX_INPUT)
        if spec.fetch_token is None:
            fail(f"{spec.name} has no private WebSocket token", EXIT_FIX_INPUT)
        value, ttl = spec.fetch_token(cfg, url, timeout, retries)
    except typer.Exit:
        raise
    except (ConfigError, secrets.CredentialError) as e:
        fail(str(e), EXIT_FIX_INPUT)
    except ExchangeError as e:
        fail(str(e), EXIT_TRY_LATER)
    except Exception as e:  # noqa: BLE001 - one line, never a traceback with locals
        fail(f"{type(e).__name__}: {e}", EXIT_TRY_LATER)
    lifetime = f" (use it within {ttl:.0f} s)" if ttl is not None else ""
    if write is None:
        typer.echo(value)
        return
    try:
        # No newline: a client that reads the file whole gets exactly the token.
        write_private(write, value)
    except OSError as e:
        fail(f"cannot write {write}: {e.strerror or e}", EXIT_TRY_LATER)
    typer.echo(f"wrote a WebSocket token to {write}{lifetime}", err=True)
