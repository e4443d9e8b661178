"""The ``fairtune`` command: a thin layer over the Python API.

User errors print one line on stderr and exit 2; no traceback reaches the user.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from fairtune.engine.scoring import DEFAULT_MAX_BATCH_TOKENS
from fairtune.errors import FairtuneError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Audit a language model for bias and safety, debias it, and prove the change.")
err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _print_version(value: bool) -> None:
    if value:
        from fairtune import __version__

        typer.echo(f"fairtune {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    """Audit a language model for bias and safety, debias it, and prove the change."""


@app.command()
def audit(
    out: Annotated[Path, typer.Option(help="Run directory for records.jsonl and summary.json.")],
    model: Annotated[str, typer.Option(help="'embedded', a model directory, a .gguf file or a hub id.")] = "embedded",
    suite: Annotated[str, typer.Option(help="An audit, or a bundle such as 'gender' or 'all' "
                                            "(see 'fairtune audits').")] = "stereotype-pairs",
    data: Annotated[Optional[Path], typer.Option(help="Benchmark file in the audit's format; "
                                                      "default: the built-in suite.")] = None,
    reference: Annotated[Optional[str], typer.Option(help="Model to measure drift against "
                                                          "(capability audit).")] = None,
    responses: Annotated[Optional[Path], typer.Option(help="Score these outputs instead of generating "
                                                           "(counterfactual audit).")] = None,
    judge: Annotated[Optional[list[str]], typer.Option(help="Extra refusal judge (repeatable): "
                                                           "model:PATH, classifier:PATH or endpoint:URL.")] = None,
    toxicity_scorer: Annotated[Optional[str], typer.Option(help="profanity (default), classifier:PATH "
                                                                "or detoxify:PATH.")] = None,
    samples: Annotated[int, typer.Option(help="Generations per prompt where an audit samples.", min=1)] = 1,
    force: Annotated[bool, typer.Option(help="Overwrite a non-empty --out directory.")] = False,
    seed: Annotated[int, typer.Option(help="Seed for bootstrap intervals (and sampling).")] = 0,
    dtype: Annotated[str, typer.Option(help="float32 (exact) or bfloat16 (faster, drifts).")] = "float32",
    max_batch_tokens: Annotated[int, typer.Option(help="Padded tokens per forward pass.", min=1)]
        = DEFAULT_MAX_BATCH_TOKENS,
    max_new_tokens: Annotated[int, typer.Option(help="Generation budget of generative audits.", min=1)] = 48,
    trust_remote_code: Annotated[bool, typer.Option(help="Run code shipped with the model.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or table.")] = False,
) -> None:
    """Audit a model (one audit, or a bundle of them) and write the run's records and summary."""
    from fairtune.audits import AUDITS
    from fairtune.console import summary_table
    from fairtune.runner import run_audit, run_bundle

    settings = dict(model=model, out=out, force=force, seed=seed, dtype=dtype, reference=reference,
                    trust_remote_code=trust_remote_code, max_batch_tokens=max_batch_tokens,
                    max_new_tokens=max_new_tokens, progress=not quiet and sys.stderr.isatty(),
                    judges=tuple(judge or ()), toxicity_scorer=toxicity_scorer, samples=samples)
    try:
        if suite in AUDITS:
            runs = [run_audit(suite, data=data, responses=responses, **settings)]
        elif data is not None or responses is not None:
            raise FairtuneError(f"suite '{suite}': --data and --responses go with a single audit, not a bundle")
        else:
            runs = list(run_bundle(suite, **settings).runs.values())
    except FairtuneError as exc:
        raise _fail(str(exc), exc.exit_code) from None
    except KeyboardInterrupt:
        raise _fail("interrupted; files already written are complete, the rest were not written", 130) from None
    if not quiet:
        console = Console()
        for run in runs:
            console.print(summary_table(run.summary))
            console.print(f"wrote {run.out_dir / 'records.jsonl'} and {run.out_dir / 'summary.json'} "
                          f"({run.summary['wall_seconds']:.1f} s)", highlight=False)


@app.command()
def audits() -> None:
    """List the audits and the bundles that group them."""
    from fairtune.audits import AUDITS, bundle_members, bundle_names

    for name, cls in sorted(AUDITS.items()):
        typer.echo(f"{name}: {cls.description}\n    --data: {cls.data_format}")
    for bundle in bundle_names():
        typer.echo(f"bundle {bundle}: {', '.join(bundle_members(bundle))}")


@app.command(hidden=True)
def suites() -> None:
    """Alias of 'audits'."""
    audits()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
