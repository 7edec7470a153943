"""The command line: one subcommand = one api function, no logic (DESIGN.md §5)."""

from __future__ import annotations

import functools
import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from tensorsmith.errors import (
    GateFailed,
    ModelNotFoundError,
    RecipeError,
    TensorsmithError,
    did_you_mean,
)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="tensorsmith: from data to a trained, evaluated, stored neural network.",
)


def consoles() -> tuple[Console, Console]:
    """The stdout and stderr consoles for this process's streams and environment.

    soft_wrap: a long line (a path, a note) is never broken in two, so piped logs stay
    greppable; piped, a table row stays one line (rich would fit it to 80 columns).
    """
    piped = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 200
    return (
        Console(highlight=False, soft_wrap=True, width=piped),
        Console(stderr=True, highlight=False, soft_wrap=True),
    )


out, err = consoles()  # the tests' in-process runner rebuilds them for its own streams
F = TypeVar("F", bound=Callable[..., Any])


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        out.print(f"tensorsmith {version('tensorsmith')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="print the version"),
    ] = False,
) -> None:
    """tensorsmith: from data to a trained, evaluated, stored neural network."""


Store = Annotated[
    Path | None,
    typer.Option("--store", help="model store (default ./models, or $TENSORSMITH_STORE)"),
]
Debug = Annotated[bool, typer.Option("--debug", help="show the traceback of errors")]
Sets = Annotated[list[str] | None, typer.Option("--set", help="override a recipe key: a.b=c")]
Nproc = Annotated[
    int | None,
    typer.Option("--nproc-per-node", help="train as N processes on this machine (torchrun)"),
]
Restarts = Annotated[int, typer.Option(help="restart every rank up to N times when one fails")]
MasterPort = Annotated[int | None, typer.Option(help="the ranks' rendezvous port (default: free)")]


def _guarded(fn: F) -> F:
    """User mistakes print one message and exit 2 (usage) or 1 (run time); --debug shows more."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = kwargs.get("debug", False) or os.environ.get("TENSORSMITH_DEBUG") == "1"
        try:
            return fn(*args, **kwargs)
        except TensorsmithError as exc:
            if debug:
                traceback.print_exc()
            err.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print(
                "interrupted; `tensorsmith train RECIPE --resume` continues from the last "
                "checkpoint"
            )
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as exc:
            if debug:
                traceback.print_exc()
            err.print(
                f"[bold red]error:[/] {type(exc).__name__}: {escape(str(exc))} "
                "(run with --debug for the traceback)",
                markup=True,
                soft_wrap=True,
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


@app.command()
@_guarded
def init(
    datafile: Path,
    target: Annotated[str | None, typer.Option(help="the column to predict (tables)")] = None,
    time: Annotated[str | None, typer.Option(help="the time column of a time series")] = None,
    out_file: Annotated[Path | None, typer.Option("--out", help="write here")] = None,
    debug: Debug = False,
) -> None:
    """Write a starter recipe for DATAFILE: a table, a time series or an image folder."""
    from tensorsmith import api

    text = api.init_recipe(datafile, target, out_file, time)
    if out_file is None:
        sys.stdout.write(text)
    else:
        out.print(f"wrote {out_file}")


@app.command()
@_guarded
def validate(recipe: Path, set_: Sets = None, debug: Debug = False) -> None:
    """Print the fully resolved recipe, or what is wrong with it."""
    from tensorsmith import api
    from tensorsmith.recipe import recipe_to_yaml

    sys.stdout.write(recipe_to_yaml(api.validate(recipe, set_)))


@app.command()
@_guarded
def train(
    recipe: Path,
    set_: Sets = None,
    store: Store = None,
    resume: Annotated[
        bool,
        typer.Option(
            help="continue the newest interrupted run of the recipe's name; "
            "`--resume RUN_ID` continues that run"
        ),
    ] = False,
    run_id: Annotated[str | None, typer.Option("--run-id", hidden=True)] = None,
    nproc_per_node: Nproc = None,
    max_restarts: Restarts = 0,
    master_port: MasterPort = None,
    debug: Debug = False,
) -> None:
    """Train RECIPE and store the model as a new version."""
    from tensorsmith import api
    from tensorsmith.api.distributed import Launch

    ranks = Launch.of(nproc_per_node, max_restarts, master_port)
    model = api.train(recipe, set_, store, run_id or resume, out, ranks)
    _exit_on_failed_gate(model)


def _exit_on_failed_gate(model: Any) -> None:
    gate = model.run.get("gate")
    if gate and not gate["passed"] and not os.environ.get("TENSORSMITH_RESULT"):  # the
        # launcher of the ranks (--nproc-per-node) judges the gate, not each rank
        failed = [c for c in gate["conditions"] if not c["passed"]]
        shown = "; ".join(c["reason"] or c["metric"] for c in failed)
        raise GateFailed(
            f"the quality gate did not hold ({shown}); {model.name} is stored, marked as "
            "failed; exit code 3"
        )


@app.command()
@_guarded
def finetune(
    recipe: Path,
    source: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="the starting model: NAME, NAME@N, NAME@alias, a version folder, or a Hugging "
            "Face checkpoint folder (default: finetune.from)",
        ),
    ] = None,
    set_: Sets = None,
    store: Store = None,
    resume: Annotated[bool, typer.Option(help="continue an interrupted fine-tune")] = False,
    run_id: Annotated[str | None, typer.Option("--run-id", hidden=True)] = None,
    nproc_per_node: Nproc = None,
    max_restarts: Restarts = 0,
    master_port: MasterPort = None,
    debug: Debug = False,
) -> None:
    """Fine-tune from --from in rounds until the recipe's gate holds (exit 3 when it never does)."""
    from tensorsmith import api
    from tensorsmith.api.distributed import Launch

    ranks = Launch.of(nproc_per_node, max_restarts, master_port)
    model = api.finetune(recipe, source, set_, store, run_id or resume, out, ranks)
    _exit_on_failed_gate(model)


@app.command()
@_guarded
def evaluate(
    model: str,
    data: Annotated[Path | None, typer.Option(help="a table with the target column")] = None,
    store: Store = None,
    debug: Debug = False,
) -> None:
    """Metrics of MODEL on --data, or on the valid and test splits of its own data."""
    from tensorsmith import api

    api.evaluate(model, data, store, console=out)


@app.command()
@_guarded
def predict(
    model: str,
    data: Annotated[Path, typer.Option(help="a table, or image files: a file, folder or CSV")],
    out_file: Annotated[
        Path | None, typer.Option("--out", help="write predictions here (CSV/TSV/Parquet/JSONL)")
    ] = None,
    store: Store = None,
    debug: Debug = False,
) -> None:
    """Predict every row (or image) of --data; writes --out, or prints CSV."""
    from tensorsmith import api

    result = api.predict(model, data, out_file, store)
    for note in result.attrs.get("notes", []):
        err.print(f"warning: {note}", markup=False, soft_wrap=True)
    if out_file is None:
        sys.stdout.write(result.to_csv(index=False))
    else:
        out.print(f"wrote {len(result)} predictions to {out_file}")


@app.command()
@_guarded
def generate(
    model: str,
    prompt: Annotated[str, typer.Option(help="the text to continue")] = "",
    max_new_tokens: Annotated[int, typer.Option(help="how many tokens to add")] = 200,
    temperature: Annotated[float, typer.Option(help="0 = greedy")] = 0.8,
    top_k: Annotated[int | None, typer.Option(help="sample from the k likeliest")] = None,
    top_p: Annotated[float | None, typer.Option(help="nucleus mass in (0, 1]")] = None,
    seed: Annotated[int | None, typer.Option(help="same seed, same text")] = None,
    stop: Annotated[list[str] | None, typer.Option(help="end at this string")] = None,
    stream: Annotated[bool, typer.Option(help="print tokens as they come")] = False,
    store: Store = None,
    debug: Debug = False,
) -> None:
    """Continue --prompt with a language model."""
    from tensorsmith import api
    from tensorsmith.tasks.generation import GenerationNotes

    notes = GenerationNotes()
    pieces = api.generate(
        model,
        prompt,
        store,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        stop=stop,
        notes=notes,
    )
    sys.stdout.write(prompt)
    if stream:
        for piece in pieces:
            sys.stdout.write(piece)
            sys.stdout.flush()
    else:
        sys.stdout.write("".join(pieces))
    sys.stdout.write("\n")
    for message in notes.messages:
        err.print(f"note: {message}", markup=False)


@app.command()
@_guarded
def models(
    name: Annotated[str | None, typer.Argument()] = None,
    lineage: Annotated[
        bool, typer.Option("--lineage", help="the chain of parents of NAME (or NAME@N)")
    ] = False,
    store: Store = None,
    debug: Debug = False,
) -> None:
    """List the stored models: name, version, task, arch, key metric, gate, date, aliases."""
    from tensorsmith import api

    if lineage:
        if name is None:
            raise RecipeError("--lineage needs a model: `tensorsmith models NAME --lineage`")
        from tensorsmith.api.listing import lineage_lines

        out.print("\n".join(lineage_lines(name, store)), markup=False)
        return
    rows = api.models(name.partition("@")[0] if name else None, store)
    if not rows:
        everything = api.models(None, store) if name is not None else []
        if everything:
            names = sorted({row["name"] for row in everything})
            raise ModelNotFoundError(
                f"no model named '{name}' in the store{did_you_mean(name or '', names)} "
                f"models: {', '.join(names)}"
            )
        out.print("no models yet; train one with `tensorsmith train RECIPE`")
        return
    from tensorsmith.api.listing import models_table

    out.print(models_table(rows))


@app.command()
@_guarded
def compress(
    model: Annotated[str, typer.Argument(help="NAME, NAME@N, NAME@alias or a version folder")],
    quantize: Annotated[
        str | None,
        typer.Option(help="int8 (dynamic, Linear/LSTM layers), int8-weight or int4-weight (GPT)"),
    ] = None,
    prune: Annotated[
        float | None, typer.Option(help="the fraction of weights (or units) to remove, in (0, 1)")
    ] = None,
    structured: Annotated[
        bool, typer.Option(help="remove whole hidden units, channels or heads (with --prune)")
    ] = False,
    recover_epochs: Annotated[
        int, typer.Option(help="a recovery fine-tune of N epochs after pruning")
    ] = 0,
    distill: Annotated[
        Path | None, typer.Option(help="a student recipe to train with MODEL as its teacher")
    ] = None,
    temperature: Annotated[float, typer.Option(help="distillation temperature")] = 4.0,
    alpha: Annotated[float, typer.Option(help="distillation: weight of the soft targets")] = 0.9,
    onnx: Annotated[bool, typer.Option(help="export to ONNX (model.onnx)")] = False,
    preprocessing: Annotated[bool, typer.Option(help="ONNX: preprocessing in the graph")] = True,
    store: Store = None,
    debug: Debug = False,
) -> None:
    """Quantize, prune, distill or export MODEL: a child version, measured beside its parent."""
    options = {k: v for k, v in locals().items() if k not in ("model", "store", "debug")}
    from tensorsmith import api
    from tensorsmith.api.compression import Compression

    api.compress(model, Compression(**options), store, console=out)


@app.command()
@_guarded
def promote(
    model: Annotated[str, typer.Argument(help="NAME@N (or NAME for the latest version)")],
    alias: Annotated[str, typer.Option(help="the alias to set")] = "production",
    store: Store = None,
    debug: Debug = False,
) -> None:
    """Point an alias of a model (default: production) at a version; NAME@alias resolves."""
    from tensorsmith import api

    done = api.promote(model, alias, store)
    out.print(f"{done['name']}@{alias} → version {done['version']}")
    gate = done.get("gate")
    if gate and not gate.get("passed"):
        err.print(f"warning: version {done['version']} did not pass its quality gate")


@app.command()
@_guarded
def serve(
    models: Annotated[
        list[str],
        typer.Argument(
            help="NAME (its production alias, else latest), NAME@N, NAME@alias or a folder"
        ),
    ],
    host: Annotated[
        str, typer.Option(help="interface to bind; 0.0.0.0 for every one")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    workers: Annotated[int, typer.Option(help="processes (each with cores / workers threads)")] = 1,
    threads: Annotated[
        int | None,
        typer.Option(help="torch threads per worker (default and most: cores / workers)"),
    ] = None,
    max_batch_size: Annotated[int, typer.Option(help="rows in one forward pass of predict")] = 32,
    max_wait_ms: Annotated[float, typer.Option(help="how long a batch waits for more")] = 5.0,
    max_queue: Annotated[int, typer.Option(help="waiting requests per model before 503")] = 256,
    max_rows: Annotated[int, typer.Option(help="rows in one predict request (422 past it)")] = 1024,
    max_streams: Annotated[int, typer.Option(help="completions decoded together in one step")] = 32,
    max_tokens: Annotated[
        int, typer.Option(help="the most max_tokens a completion may ask")
    ] = 2048,
    api_key: Annotated[
        str | None,
        typer.Option(help="require `Authorization: Bearer KEY` on /v1 ($TENSORSMITH_API_KEY)"),
    ] = None,
    timeout: Annotated[float, typer.Option(help="seconds per request before 504")] = 60.0,
    max_body: Annotated[int, typer.Option(help="largest request body in bytes (413 past it)")] = 1
    << 20,
    store: Store = None,
    debug: Debug = False,
) -> None:
    """Serve models over HTTP: predictions, OpenAI-compatible completions, metrics, a page at /."""
    options = {k: v for k, v in locals().items() if k not in ("store", "debug")}
    from tensorsmith import api
    from tensorsmith.serving.config import ServeConfig

    api.serve(ServeConfig(**options), store)


@app.command()
@_guarded
def plan(
    recipe: Annotated[Path | None, typer.Argument(help="the recipe to plan")] = None,
    hardware: Annotated[
        str, typer.Option(help="a device of the table, local (this machine), or list")
    ] = "local",
    devices: Annotated[int, typer.Option(help="devices training together (data-parallel)")] = 1,
    price: Annotated[float | None, typer.Option(help="dollars per device-hour")] = None,
    mfu: Annotated[
        float | None, typer.Option(help="assumed utilisation of the peak, in (0, 1]")
    ] = None,
    tokens: Annotated[
        float | None, typer.Option(help="a language model's training tokens (2e9)")
    ] = None,
    rows: Annotated[int | None, typer.Option(help="samples per epoch, not the data's")] = None,
    source: Annotated[
        str | None, typer.Option("--from", help="a fine-tune's start (else finetune.from)")
    ] = None,
    sweep: Annotated[str | None, typer.Option(help="KEY=V1,V2,…: one plan per value")] = None,
    compare: Annotated[
        str | None, typer.Option(help="a stored model: its plan against its run")
    ] = None,
    plot: Annotated[Path, typer.Option(help="where a sweep's plot goes")] = Path("plan-sweep.png"),
    json_: Annotated[bool, typer.Option("--json", help="print JSON for programs")] = False,
    set_: Sets = None,
    store: Store = None,
    debug: Debug = False,
) -> None:
    """What a recipe will cost before training; after it, estimate against measurement."""
    from tensorsmith.api.plan_show import PlanRequest, show_plan
    from tensorsmith.api.planning import Sizes

    request = PlanRequest(
        recipe, hardware, devices, price, mfu, set_ or [], Sizes(tokens, rows, source), sweep,
        compare, plot, json_, store,
    )  # fmt: skip
    show_plan(request, out)


def _resume_argument(argv: list[str]) -> list[str]:
    """``--resume RUN_ID`` → ``--resume --run-id RUN_ID`` (a flag that may take a value)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--resume="):
            out += ["--resume", "--run-id", arg.split("=", 1)[1]]
        elif arg == "--resume" and i + 1 < len(argv) and RUN_ID.match(argv[i + 1]):
            out += ["--resume", "--run-id", argv[i + 1]]
            i += 1
        else:
            out.append(arg)
        i += 1
    return out


RUN_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{4}$")  # training/checkpoints.py names runs so


def main() -> None:
    app(args=_resume_argument(sys.argv[1:]), prog_name="tensorsmith")


if __name__ == "__main__":
    main()
