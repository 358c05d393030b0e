"""The local web UI (``trellis ui``): recorded runs, batches, one run's graph, timeline and
steps, two runs compared, and waiting steps answered from the page.

Server-rendered (Starlette, Jinja2 templates, vendored htmx), with a JSON API behind every
page. Everything is read through the read model :mod:`trellis.engine.records`; answers go
through the callback the CLI gives (the path of ``trellis approve`` / ``reply``). Needs
the ``[ui]`` extra.
"""

from __future__ import annotations

from trellis.ui.app import Answerer, UiSettings, create_app

__all__ = ["Answerer", "UiSettings", "create_app"]
