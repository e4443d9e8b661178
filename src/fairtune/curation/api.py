"""The curation commands as Python functions (``fairtune data ...`` calls these).

Each builds records, then hands them to :func:`fairtune.curation.build.finalize`, which
deduplicates, runs the contamination guard, splits and writes the data card.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fairtune.curation.build import CurationResult, GuardSettings, Source, finalize
from fairtune.curation.records import read_records, with_ids


def cda(inputs: Sequence[str | Path], *, out: str | Path | None, axes: Sequence[str] = ("gender",),
        mode: str = "two-sided", roles: Sequence[str] = ("user", "assistant"), seed: int = 0,
        max_counterfactuals: int = 1, validation_fraction: float = 0.1, guard: GuardSettings | None = None,
        force: bool = False, name: str | None = None) -> CurationResult:
    """Counterfactual augmentation of the user's JSONL files (any record format)."""
    from fairtune.curation.cda import augment_records, term_counts

    records, sources = [], []
    for path in inputs:
        rows = read_records(path)
        records += [_with_source(r, str(path)) for r in with_ids(rows, Path(path).stem)]
        sources.append(Source.from_file(path, len(rows)))
    augmented = augment_records(records, axes=tuple(axes), mode=mode, roles=tuple(roles), seed=seed,
                                max_counterfactuals=max_counterfactuals)
    return finalize(augmented, name=name or "cda", builder="fairtune data cda", sources=sources,
                    settings={"axes": list(axes), "mode": mode, "roles": list(roles),
                              "max_counterfactuals": max_counterfactuals},
                    out=out, force=force, before=records, term_counter=lambda t: term_counts(t, tuple(axes)),
                    validation_fraction=validation_fraction, seed=seed, guard=guard)


def templates(*, out: str | Path | None, axis: str = "gender", values: Sequence[str] | None = None,
              occupations_file: str | Path | None = None, frames_file: str | Path | None = None,
              formats: Sequence[str] = ("text", "chat"), per_occupation: int | None = None, seed: int = 0,
              validation_fraction: float = 0.1, guard: GuardSettings | None = None, force: bool = False,
              name: str | None = None) -> CurationResult:
    """Occupation x attribute sentences and chat Q/A pairs, every attribute value equally often."""
    from fairtune.curation.cda import term_counts
    from fairtune.curation.templates import build_templates

    occupations = _read_lines(occupations_file) if occupations_file else None
    records = build_templates(axis=axis, values=tuple(values) if values else None, occupations=occupations,
                              frames_file=Path(frames_file) if frames_file else None, formats=tuple(formats),
                              per_occupation=per_occupation, seed=seed)
    sources = [Source("builtin:templates", len(records))]
    for path in (occupations_file, frames_file):
        if path:
            sources.append(Source.from_file(path, len(_read_lines(path))))
    return finalize(records, name=name or f"templates-{axis}", builder="fairtune data templates", sources=sources,
                    settings={"axis": axis, "values": list(values or []), "formats": list(formats),
                              "per_occupation": per_occupation},
                    out=out, force=force, term_counter=lambda t: term_counts(t, (axis,)) if _is_axis(axis) else {},
                    validation_fraction=validation_fraction, seed=seed, guard=guard,
                    near_threshold=None)   # template fillings share frames by design


def selfgen(*, out: str | Path | None, model: Any = "embedded", n: int = 200, augment: bool = True,
            axes: Sequence[str] = ("gender",), mode: str = "two-sided", seed: int = 0, max_new_tokens: int = 96,
            temperature: float = 0.8, progress: bool = False, validation_fraction: float = 0.1,
            guard: GuardSettings | None = None, force: bool = False, name: str | None = None) -> CurationResult:
    """Neutral-topic text sampled from the model itself, then (by default) augmented by CDA."""
    from fairtune.curation.cda import augment_records, term_counts
    from fairtune.curation.selfgen import generate_corpus
    from fairtune.io import prepare_out_dir
    from fairtune.models import load_model

    if out is not None:
        prepare_out_dir(out, force=force)   # refuse before minutes of generation, not after
    loaded = model if not isinstance(model, str) else load_model(model)
    generated, stats = generate_corpus(loaded, n=n, seed=seed, max_new_tokens=max_new_tokens,
                                       temperature=temperature, progress=progress)
    records = augment_records(generated, axes=tuple(axes), mode=mode, seed=seed) if augment else generated
    return finalize(records, name=name or "selfgen", builder="fairtune data selfgen",
                    sources=[Source(f"selfgen:{loaded.spec.raw}@{loaded.fingerprint}", len(generated))],
                    settings={"n": n, "augment": augment, "axes": list(axes), "mode": mode,
                              "max_new_tokens": max_new_tokens, "temperature": temperature, "generation": stats},
                    out=out, force=force, before=generated, term_counter=lambda t: term_counts(t, tuple(axes)),
                    validation_fraction=validation_fraction, seed=seed, guard=guard)


def safety_anchors(*, out: str | Path | None, anchors: str | Path | None = None, n_refusal: int | None = None,
                   n_helpful: int | None = None, seed: int = 0, validation_fraction: float = 0.1,
                   guard: GuardSettings | None = None, force: bool = False) -> CurationResult:
    """The safety anchor set (built-in or the user's), checked and split like any training data."""
    from fairtune.curation.safety import BUILTIN_SOURCE, builtin_anchor_path, load_anchors

    records = load_anchors(anchors, n_refusal=n_refusal, n_helpful=n_helpful, seed=seed)
    path = Path(anchors) if anchors else builtin_anchor_path()
    source = Source.from_file(path, len(records))
    if anchors is None:
        source.source = BUILTIN_SOURCE
    return finalize(records, name="safety-anchors", builder="fairtune data safety-anchors", sources=[source],
                    settings={"n_refusal": n_refusal, "n_helpful": n_helpful}, out=out, force=force,
                    validation_fraction=validation_fraction, seed=seed, guard=guard)


def pairs(inputs: Sequence[str | Path] = (), *, out: str | Path | None, axis: str = "gender", builtin: bool = True,
          domains: Sequence[str] | None = None, max_pairs: int | None = None, contexts: bool = True,
          validation_fraction: float = 0.15, seed: int = 0, guard: GuardSettings | None = None,
          force: bool = False, name: str | None = None, progress: bool = False) -> CurationResult:
    """Paired counterfactual data and neutral contexts for fairness objectives
    (:mod:`fairtune.curation.pairs`): our built-in template families of the chosen ``domains``
    and, from ``inputs`` (plain text, WikiText or JSONL, streamed), windows of general text
    swapped by CDA. ``max_pairs`` caps the pairs from the files (reading stops there) and,
    separately, the built-in pairs (a seeded sample). Validation holds whole families (template
    frames, documents) of every domain."""
    from fairtune.curation import pairs as builder
    from fairtune.curation.cda import term_counts
    from fairtune.errors import InputError
    from fairtune.io import prepare_out_dir

    builder.check_axis(axis)
    if not builtin and domains:
        raise InputError("--domain selects built-in sources, and --no-builtin turns them off", field="domain")
    chosen = builder.check_domains(domains) if builtin else ()
    if max_pairs is not None and (isinstance(max_pairs, bool) or not isinstance(max_pairs, int) or max_pairs < 1):
        raise InputError(f"max_pairs must be a positive whole number, got {max_pairs!r}", field="max_pairs")
    if not builtin and not inputs:
        raise InputError("nothing to build: give text or JSONL files, or keep the built-in sources")
    if out is not None:
        prepare_out_dir(out, force=force)   # refuse before a long read, not after

    records: list[dict] = []
    sources: list[Source] = []
    if builtin:
        made = builder.builtin_records(axis, domains=chosen, contexts=contexts, seed=seed)
        if max_pairs is not None:
            made = builder.sample_groups(made, max_pairs, seed)
        records += made
        sources.append(Source(builder.BUILTIN_SOURCE, len(made), builder.builtin_sha256()))
    extra = None
    if inputs:
        corpus, stats = builder.corpus_records(inputs, axis=axis, seed=seed, max_pairs=max_pairs, progress=progress)
        records += corpus
        sources += [Source.from_file(f.file, f.records) for f in stats.files]
        extra = {"corpus": stats.as_dict()}
    return finalize(records, name=name or f"pairs-{axis}", builder="fairtune data pairs", sources=sources,
                    settings={"axis": axis, "builtin": builtin, "domains": list(chosen), "max_pairs": max_pairs,
                              "contexts": contexts},
                    out=out, force=force, term_counter=lambda t: term_counts(t, (axis,)),
                    validation_fraction=validation_fraction, seed=seed, guard=guard,
                    near_threshold=0.85 if inputs else None, near_exempt_kinds=("template", "context"),
                    split_by="family", extra=extra)


def check(inputs: Sequence[str | Path], *, guard: GuardSettings | None = None,
          near_threshold: float | None = 0.85) -> CurationResult:
    """Validate existing training files and run the duplicate and contamination checks on them,
    writing nothing. Raises :class:`ContaminationError` on overlap unless the guard allows it."""
    records, sources = [], []
    for path in inputs:
        rows = read_records(path)
        records += rows
        sources.append(Source.from_file(path, len(rows)))
    return finalize(records, name="check", builder="fairtune data check", sources=sources, settings={},
                    out=None, validation_fraction=0.0, near_threshold=near_threshold, guard=guard)


def content_key(builder: str, args: dict[str, Any]) -> str | None:
    """What a builder's output depends on beyond its arguments and input files (the code's model
    of the answer), for stage keys; None where nothing does."""
    if builder == "forecasts":
        from fairtune.forecasting.dataset import DEFAULT_TARGET, TARGET_MODELS

        return TARGET_MODELS.get(args.get("target") or DEFAULT_TARGET)
    if builder == "pairs" and args.get("builtin", True):
        from fairtune.curation.pairs import builtin_sha256

        return builtin_sha256()      # the built-in families' files: editing a frame rebuilds the data
    return None


def _with_source(record: dict, source: str) -> dict:
    meta = dict(record.get("meta") or {})
    meta.setdefault("source", source)
    return {**record, "meta": meta}


def _read_lines(path: str | Path) -> list[str]:
    from fairtune.readers import read_text

    return [line.strip() for line in read_text(path).splitlines() if line.strip() and not line.startswith("#")]


def _is_axis(axis: str) -> bool:
    from fairtune.curation.cda import AXES

    return axis in AXES


def forecasts(*, out: str | Path | None, spec_file: str | Path | None = None,
              panels: Sequence[Any] | None = None, seed: int = 0,
              validation_fraction: float = 0.1, guard: GuardSettings | None = None, force: bool = False,
              name: str | None = None, target: str | None = None) -> CurationResult:
    """Rational-forecast chat records (:mod:`fairtune.forecasting.dataset`): the built-in training
    panels, or one panel spec file (PanelSpec fields in JSON/YAML). ``target``: ``posterior``
    (the rational forecast given the history shown; the default) or ``process`` (given the true
    process)."""
    from fairtune.errors import InputError
    from fairtune.forecasting.dataset import DEFAULT_TARGET, SOURCE, TARGETS, rational_records
    from fairtune.forecasting.panel import TRAIN_PANELS

    target = target or DEFAULT_TARGET
    if target not in TARGETS:
        raise InputError(f"unknown forecast target '{target}' (targets: {', '.join(TARGETS)})", field="target")
    if spec_file is not None:
        from fairtune.audits.extrapolation import load_panel_spec

        panels = (load_panel_spec(spec_file),)
        sources = [Source.from_file(spec_file, 0)]
    else:
        panels = tuple(panels or TRAIN_PANELS)
        sources = [Source(SOURCE, 0)]
    records = rational_records(panels, target)
    sources[0].records = len(records)
    return finalize(records, name=name or "rational-forecasts", builder="fairtune data forecasts", sources=sources,
                    settings={"panels": [p.model_dump(mode="json") for p in panels], "target": target},
                    out=out, force=force, validation_fraction=validation_fraction, seed=seed, guard=guard,
                    near_threshold=None)   # a series' consecutive origins share most of their history
