"""``trellis ui``: the local web UI over a store (needs the ``[ui]`` extra)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from trellis.cli.errors import CliError, command
from trellis.cli.options import StoreOption
from trellis.errors import ConfigurationError, InputError

__all__ = ["ui"]

INSTALL_HINT = "the web UI needs its extra: pip install 'trellis-flows[ui]'"


def make_answerer(url: str | None) -> Any:
    """The UI's answer callback: ``trellis approve`` / ``reply``'s path, its CliError
    (an answer not taken) as an InputError for the page."""

    def answer(run: str, step: str, value: Any, approval: bool) -> str:
        from trellis.cli.answering import answer_waiting_step  # loads the engine
        from trellis.cli.stores import open_existing_store, store_url

        opened = open_existing_store(url)
        if opened is None:
            raise InputError(f"no run {run!r} in {store_url(url)}")
        try:
            result = answer_waiting_step(
                opened, run, step, value, approval=approval, models=[], quiet=True, as_json=True
            )
        except CliError as exc:
            raise InputError(exc.message) from None
        finally:
            opened.close()
        return result.status

    return answer


@command
def ui(
    store: StoreOption = None,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Address to listen on. Beyond 127.0.0.1 / localhost every page needs the token.",
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8765,
) -> int:
    """Browse recorded runs in a local web UI: runs, batches, each run's graph, timeline
    and steps, two runs compared; answer waiting steps from the page.

    It prints its URL with a per-server token (as Jupyter does): answering a waiting
    step needs the token, and on a non-loopback --host every page does. API keys are
    never shown (they are never recorded).

    Example: `trellis ui --store .trellis/runs.db`
    """
    try:
        from trellis.ui import UiSettings
        from trellis.ui.security import new_token
        from trellis.ui.server import serve
    except (ImportError, ConfigurationError) as exc:
        raise CliError(INSTALL_HINT) from exc
    from trellis.cli.stores import open_existing_store, store_url

    url = store_url(store)
    token = new_token()
    settings = UiSettings(
        open_store=lambda: open_existing_store(store),
        store_url=url,
        token=token,
        host=host,
        answer=make_answerer(store),
    )
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"Trellis UI for {url}")
    typer.echo(f"  http://{shown}:{port}/?token={token}")
    typer.echo("Ctrl-C stops it.")
    serve(settings, port)
    return 0
