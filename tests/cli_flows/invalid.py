"""A flow whose definition is wrong: a step reads an input that does not exist."""

import trellis as tl

flow = tl.Flow("invalid", inputs={"text": str})


@flow.step
def echo(txt: str) -> str:
    return txt
