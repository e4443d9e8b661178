"""The report stage: a self-contained HTML report and a Markdown summary from run directories."""

from fairtune.report.build import HTML_FILE, MARKDOWN_FILE, ReportArm, ReportTable, build_report

__all__ = ["HTML_FILE", "MARKDOWN_FILE", "ReportArm", "ReportTable", "build_report"]
