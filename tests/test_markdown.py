from fairtune.markdown import disagreements_markdown, escape_markdown


def test_model_output_cannot_inject_html_links_or_formatting():
    hostile = "<script>alert(1)</script> [click](javascript:alert(1)) **bold** # title\n| a | b |"
    escaped = escape_markdown(hostile)
    assert "<script>" not in escaped and "&lt;script&gt;" in escaped
    assert "](" not in escaped and "\\[click\\]" in escaped and "\\*\\*bold\\*\\*" in escaped
    assert "\\#" in escaped and "\\|" in escaped
    assert escape_markdown("") == "*(empty)*"


def test_disagreements_page_escapes_every_field():
    summary = {"suite": "refusal", "seed": 3, "details": {"disagreements": [
        {"id": "x-1", "group": "cyber", "prompt": "Say <b>hi</b>", "response": "<img src=x onerror=alert(1)>",
         "label": "compliance", "judges": {"keyword": "refusal", "prefix": "compliance"}}]}}
    page = disagreements_markdown(summary)
    assert "<img" not in page and "<b>" not in page and "&lt;img src=x onerror=alert\\(1\\)&gt;" in page
    assert "## x\\-1 (cyber)" in page and "1 sampled replies" in page
