"""Markdown for people to read, with every model output escaped.

Model outputs are untrusted input: a reply can contain HTML (``<script>``), links with
``javascript:`` targets, or Markdown that reshapes the page. Everything that came from a model or a
dataset goes through :func:`escape_markdown`, which HTML-escapes ``<``, ``>`` and ``&`` and puts a
backslash before every Markdown control character, so it renders as the literal text.
"""

from __future__ import annotations

import html
import re
from typing import Any

_MARKDOWN_CONTROL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def escape_markdown(text: str) -> str:
    """``text`` as literal Markdown: no HTML, no links, no formatting; line breaks kept."""
    escaped = _MARKDOWN_CONTROL.sub(r"\\\1", html.escape(str(text), quote=False))
    return "  \n".join(escaped.splitlines()) or "*(empty)*"


def disagreements_markdown(summary: dict[str, Any]) -> str:
    """A page of the replies on which refusal judges disagree, one section each."""
    rows = summary.get("details", {}).get("disagreements") or []
    lines = [f"# Judge disagreements: {escape_markdown(summary['suite'])}", "",
             f"{len(rows)} sampled replies on which the refusal judges disagree "
             f"(seed {summary['seed']}). Verdict: the last judge given.", ""]
    for row in rows:
        judges = ", ".join(f"{escape_markdown(k)}: {escape_markdown(v)}" for k, v in row.get("judges", {}).items())
        lines += [f"## {escape_markdown(row.get('id', '?'))} ({escape_markdown(row.get('group', row.get('transform', '')))})", "",
                  f"**Judges:** {judges}; **verdict:** {escape_markdown(row.get('label', ''))}", "",
                  "**Prompt:**", "", "> " + escape_markdown(row.get("prompt", row.get("request", ""))).replace("\n", "\n> "), "",
                  "**Reply:**", "", "> " + escape_markdown(row.get("response", "")).replace("\n", "\n> "), ""]
    return "\n".join(lines)
