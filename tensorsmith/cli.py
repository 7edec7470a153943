"""The command line: one subcommand = one api function, no logic (DESIGN.md §5)."""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tensorsmith.errors import TensorsmithError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="tensorsmith: from data to a trained, evaluated, stored neural network.",
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
F = TypeVar("F", bound=Callable[..., Any])

Store = Annotated[
    Path | None,
    typer.Option("--store", help="model store (default ./models, or $TENSORSMITH_STORE)"),
]
Debug = Annotated[bool, typer.Option("--debug", help="show the traceback of errors")]
Sets = Annotated[list[str] | None, typer.Option("--set", help="override a recipe key: a.b=c")]


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
    resume: Annotated[bool, typer.Option(help="continue from the last checkpoint")] = False,
    debug: Debug = False,
) -> None:
    """Train RECIPE and store the model as a new version."""
    from tensorsmith import api

    api.train(recipe, set_, store=store, resume=resume, console=out)


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
    import warnings

    from tensorsmith import api
    from tensorsmith.data.text import DataWarning

    with warnings.catch_warnings(record=True) as notes:  # truncated texts, resized images …
        warnings.simplefilter("always", DataWarning)
        result = api.predict(model, data, out_file, store)
    for note in notes:
        if issubclass(note.category, DataWarning):
            err.print(f"note: {note.message}", markup=False)
        else:
            warnings.showwarning(note.message, note.category, note.filename, note.lineno)
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
    name: Annotated[str | None, typer.Argument()] = None, store: Store = None, debug: Debug = False
) -> None:
    """List the stored models: name, version, task, arch, key metric, gate, date."""
    from tensorsmith import api

    rows = api.models(name, store)
    if not rows:
        out.print("no models yet; train one with `tensorsmith train RECIPE`")
        return
    table = Table()
    for col in ("name", "version", "task", "arch", "metric", "gate", "date"):
        table.add_column(col, justify="right" if col == "version" else "left")
    for row in rows:
        table.add_row(
            *(str(row[c]) for c in ("name", "version", "task", "arch", "metric", "gate", "date"))
        )
    out.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
