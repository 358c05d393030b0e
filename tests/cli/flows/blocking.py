"""A two-step plain flow for the fencing tests: ``block`` blocks the event loop (plain
``time.sleep``) the first time it runs, that is while the file ``$TRELLIS_TEST_MARKER``
does not exist yet (it creates it): until the file ``$TRELLIS_TEST_RELEASE`` exists (at most
30 s) when that is set, else for ``$TRELLIS_TEST_BLOCK_S`` seconds. Later runs of it return
at once. Its output says which run it was."""

import os
import time

import trellis as tl

flow = tl.Flow("blocking", inputs={"item": str})


@flow.step
def block(item: str) -> str:
    marker = os.environ.get("TRELLIS_TEST_MARKER")
    if marker and not os.path.exists(marker):
        with open(marker, "w", encoding="utf-8") as f:
            f.write(str(os.getpid()))
        release = os.environ.get("TRELLIS_TEST_RELEASE")
        if release:
            deadline = time.monotonic() + 30
            while not os.path.exists(release) and time.monotonic() < deadline:
                time.sleep(0.05)
        else:
            time.sleep(float(os.environ.get("TRELLIS_TEST_BLOCK_S", "3")))
        return f"{item}: the first process"
    return f"{item}: a later process"


@flow.step
def after(block: str) -> str:
    return block + "!"
