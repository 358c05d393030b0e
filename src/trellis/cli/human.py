"""``trellis approve RUN STEP`` and ``trellis reply RUN STEP --input JSON``: answer a run
that waits for a person, and resume it.

A step that calls ``human.approve(...)`` or ``human.ask(...)`` parks its run (status
``waiting``, exit code 3); nothing stays in memory. These commands load the run's recorded
``meta`` as ``trellis resume`` does (flow file, configuration, model bindings), hand the
answer to :meth:`Engine.reply`, which records it and resumes the run, and print the
resumed result as ``trellis run`` does. The answer is validated against the type the step
asked for; an invalid one is one ``error:`` line (exit 2) and the run keeps waiting.

An item of a batch (``BATCH.3``) resumes as a single run. When it was the last item the
batch waited for and every item is now done, the batch is finished through the
``trellis resume`` path (nothing runs again): its output file, if it had one, is
rewritten complete and the batch is marked done.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from trellis.cli.errors import CliError, command
from trellis.cli.options import QuietOption, StoreOption, json_flag, model_option

__all__ = ["approve", "reply"]

RunArgument = Annotated[
    str,
    typer.Argument(
        metavar="RUN",
        help=(
            "The waiting run's id, or a batch item's (`BATCH.3`), as listed by "
            "`trellis runs --status waiting`."
        ),
        show_default=False,
    ),
]
StepArgument = Annotated[
    str,
    typer.Argument(
        metavar="STEP",
        help=(
            "The step that waits (shown by `trellis show RUN`); inside a sub-flow, its path "
            "from the run: `review/approve`, `reviews[2]/approve` for a mapped one."
        ),
        show_default=False,
    ),
]
ModelsOption = Annotated[
    list[str] | None,
    model_option(
        "Bind a model role on top of the recorded bindings for the steps that run after "
        "the answer; repeatable (give again an option that was not recorded: keys never are)."
    ),
]
JsonOption = Annotated[
    bool,
    json_flag("Print the resumed run's result as JSON (RunResult.to_dict())."),
]


@command
def approve(
    run: RunArgument,
    step: StepArgument,
    reject: Annotated[
        bool,
        typer.Option("--reject", help="Reject instead of approving (approved: false)."),
    ] = False,
    comment: Annotated[
        str | None,
        typer.Option(
            "--comment",
            metavar="TEXT",
            help="A comment that goes with the decision (the step gets it as Approval.comment).",
            show_default=False,
        ),
    ] = None,
    store: StoreOption = None,
    models: ModelsOption = None,
    quiet: QuietOption = False,
    as_json: JsonOption = False,
) -> int:
    """Approve (or `--reject`) what a waiting step asks, and resume its run.

    For a step that called `human.approve(...)`: sends `{"approved": true, "comment": TEXT}`
    (`--reject`: false), then resumes the run from where it stopped — from any process,
    any time later — and prints the result as `trellis run` does. An item of a batch
    (`BATCH.3`) finishes as a single run; answering the batch's last waiting item
    finishes the batch and rewrites its output file complete.

    Exit code: 0 the run is done, 1 it failed after the answer, 3 it waits again (for
    another question), 2 the answer was not taken — unknown run, run or step not waiting,
    a step that asks for something other than an approval — and the run keeps waiting.

    Example: `trellis approve 20250101-120000-1a2b3c4d review --reject --comment "too vague"`
    """
    from trellis.cli.answering import answer_from_cli

    answer = {"approved": not reject, "comment": comment}
    return answer_from_cli(
        run,
        step,
        answer,
        approval=True,
        store=store,
        models=models or [],
        quiet=quiet,
        as_json=as_json,
    )


@command
def reply(
    run: RunArgument,
    step: StepArgument,
    input_json: Annotated[
        str,
        typer.Option(
            "--input",
            "-i",
            metavar="JSON",
            help=(
                "The answer, as JSON of the type the step asks for (`trellis show RUN` says "
                """which): --input '{"priority": "high"}', --input 42, --input '"yes"'."""
            ),
            show_default=False,
        ),
    ],
    store: StoreOption = None,
    models: ModelsOption = None,
    quiet: QuietOption = False,
    as_json: JsonOption = False,
) -> int:
    """Answer what a waiting step asks (`human.ask(...)`) with typed input, and resume its run.

    The answer is validated against the step's declared type; a wrong one is one
    `error:` line with the validation message, and the run keeps waiting. Then the run
    resumes from where it stopped — from any process, any time later — and its result is
    printed as `trellis run` does. An item of a batch (`BATCH.3`) finishes as a single
    run; answering the batch's last waiting item finishes the batch and rewrites its
    output file complete.

    Exit code: 0 the run is done, 1 it failed after the answer, 3 it waits again (for
    another question), 2 the answer was not taken — unknown run, run or step not waiting,
    an answer of the wrong type, bad JSON — and the run keeps waiting.

    Example: `trellis reply 20250101-120000-1a2b3c4d triage --input '{"priority": "high"}'`
    """
    from trellis.cli.inputs import load_json

    try:
        answer = load_json(input_json, "--input")
    except json.JSONDecodeError as exc:
        raise CliError(f"--input is not valid JSON: {exc}") from None
    from trellis.cli.answering import answer_from_cli

    return answer_from_cli(
        run,
        step,
        answer,
        approval=False,
        store=store,
        models=models or [],
        quiet=quiet,
        as_json=as_json,
    )
