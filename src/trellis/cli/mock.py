"""``trellis mock-server``: a local OpenAI- and Anthropic-compatible server for testing."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from trellis.cli.errors import CliError, command
from trellis.errors import ConfigurationError

if TYPE_CHECKING:
    from trellis.mockserver import MockServer

__all__ = ["mock_server"]

INSTALL_HINT = "the mock server needs aiohttp: pip install 'trellis-flows[mock]'"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _server(script: Path | None, faults: list[str], **kwargs: Any) -> MockServer:
    """The configured server; ``CliError`` for a bad option or a missing aiohttp."""
    try:
        from trellis.mockserver import MockServer
        from trellis.mockserver.faults import load_script, parse_rates
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] == "aiohttp":
            raise CliError(INSTALL_HINT) from None
        raise
    try:
        steps = None if script is None else load_script(script)
        return MockServer(faults=parse_rates(faults), script=steps, **kwargs)
    except OSError as exc:
        raise CliError(f"cannot read {script}: {exc.strerror or exc}") from None
    except (ValueError, ConfigurationError) as exc:
        raise CliError(str(exc)) from None


async def _serve(server: MockServer) -> None:
    import asyncio  # not at start-up of every command
    import contextlib
    import signal

    try:
        await server.start()
    except OSError as exc:
        raise CliError(
            f"cannot listen on {server.host}:{server.port}: {exc.strerror or exc}"
        ) from None
    typer.echo(f"Trellis mock server on {server.base_url} (Ctrl-C to stop)")
    typer.echo(f"OPENAI_BASE_URL={server.openai_base_url}")
    typer.echo(f"ANTHROPIC_BASE_URL={server.anthropic_base_url}")
    if server.state.profile is not None:
        typer.echo(f"profile: {server.state.profile} (every model)")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.close()
        stats = server.stats
        faults = ", ".join(f"{k}={v}" for k, v in sorted(stats.faults.items())) or "none"
        typer.echo(
            f"served {stats.requests} requests; 429s: {stats.responses_429} "
            f"(rate limiter: {stats.rate_limited}); faults: {faults}",
            err=True,
        )


@command
def mock_server(
    port: Annotated[
        int, typer.Option("--port", "-p", min=0, max=65535, help="Port to listen on; 0 picks one.")
    ] = 8000,
    host: Annotated[
        str, typer.Option("--host", help="Address to bind. Keep it on loopback unless you mean it.")
    ] = "127.0.0.1",
    latency_ms: Annotated[
        str,
        typer.Option(
            "--latency-ms",
            metavar="MS|LOW-HIGH",
            help="Delay of every reply: fixed ('200') or uniform in a range ('50-400').",
        ),
    ] = "0",
    rpm: Annotated[
        int | None,
        typer.Option("--rpm", min=1, metavar="N", help="Requests per minute before 429s."),
    ] = None,
    tpm: Annotated[
        int | None,
        typer.Option("--tpm", min=1, metavar="N", help="Tokens (input + output) per minute."),
    ] = None,
    burst_s: Annotated[
        float,
        typer.Option(
            "--burst-s",
            min=0.001,
            metavar="S",
            help=(
                "Shortest period the limits are enforced over, as providers do: with 1, "
                "--rpm 60 admits one request per second. 60 allows a whole minute's burst."
            ),
        ),
    ] = 1.0,
    per_model: Annotated[
        bool, typer.Option("--per-model", help="Separate rate limits for each model name.")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Selects replies, faults, latencies.")] = 0,
    faults: Annotated[
        list[str] | None,
        typer.Option(
            "--fault",
            metavar="MODE=RATE",
            help=(
                "Inject a fault into this share of requests; repeatable. Modes: rate_limit, "
                "quota, overloaded, server_error, timeout, context_length, refusal, "
                "truncation, malformed_json, invalid_json, stream_error, stream_cut, auth."
            ),
            show_default=False,
        ),
    ] = None,
    script: Annotated[
        Path | None,
        typer.Option(
            "--script",
            metavar="FILE.json",
            help=(
                "A JSON list of responses to give first, in order, e.g. "
                '[{"fault": "rate_limit", "retry_after": 0.5}, {"status": 413, "body": '
                '"Payload Too Large"}, {"ok": true}]; then normal behaviour.'
            ),
            show_default=False,
        ),
    ] = None,
    hang_s: Annotated[
        float,
        typer.Option("--hang-s", min=0, metavar="S", help="How long a timeout fault hangs."),
    ] = 30.0,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            metavar="KEY",
            help="Require this key (Authorization: Bearer / x-api-key); default: any.",
            show_default=False,
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            metavar="NAME",
            help=(
                "Behave like one real server for every model: gpt-5 (rejects max_tokens and "
                "a non-default temperature), claude-5 (rejects temperature; signed thinking "
                "blocks, forced tools refused with thinking on), mistral (422 "
                "for stream_options / max_completion_tokens), ollama (index-0 tool-call "
                "chunks, api_error labels), no-done (streams end without [DONE]). "
                "Default: chosen by model name (gpt-5-mini, claude-opus-5, mistral-small)."
            ),
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve an OpenAI- and Anthropic-compatible API backed by the simulator.

    `POST /v1/chat/completions`, `POST /v1/messages` and `GET /v1/models`, with
    structured output, tool calls and streaming; control API for tests at `/_mock/script`,
    `/_mock/faults`, `/_mock/outage` (every request 503 / 529 for a while), `/_mock/reset`
    and `/_mock/stats`.

    Example: `trellis mock-server --port 8000 --latency-ms 50-400 --rpm 600
    --fault rate_limit=0.1`, then `OPENAI_BASE_URL=http://127.0.0.1:8000/v1`.
    """
    try:
        server = _server(
            script,
            faults or [],
            host=host,
            port=port,
            latency_ms=latency_ms,
            rpm=rpm,
            tpm=tpm,
            burst_s=burst_s,
            per_model=per_model,
            seed=seed,
            hang_s=hang_s,
            api_key=api_key,
            profile=profile,
        )
        if host not in _LOOPBACK:
            typer.echo(f"warning: listening on {host}, reachable beyond this machine", err=True)
        import asyncio

        asyncio.run(_serve(server))
    except KeyboardInterrupt:
        return None
