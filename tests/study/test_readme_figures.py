"""Numbers in prose come from the report: the READMEs include the reference study's verdicts table verbatim as
``study report`` wrote it (``verdicts.md``, and ``findings.md``: the figures behind them), and every other figure they
quote about the study is found in its committed report.

A block ``<!-- include PATH -->`` ... ``<!-- end include -->`` must equal the file at PATH; every decimal number in
README.md's results section and in docs/reference-cpu/README.md (outside code blocks) must appear in
docs/reference-cpu/report.md. So a rerun that changes a figure fails here until the prose follows it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "docs" / "reference-cpu"
INCLUDE = re.compile(r"<!-- include (\S+) -->\n(.*?)<!-- end include -->\n", re.S)
CODE = re.compile(r"```.*?```", re.S)
ARXIV = re.compile(r"arXiv \d{4}\.\d{4,5}")  # a paper's identifier, not a figure
DECIMAL = re.compile(r"(?<![\w.])[-+]?\d+\.\d+(?![\w.])")


def _results_section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("## Results: the CPU reference study")
    return text[start : text.index("\n## ", start + 1)]


DOCS = {
    "README.md results section": _results_section,
    "docs/reference-cpu/README.md": lambda: (REFERENCE / "README.md").read_text(),
}


@pytest.mark.parametrize("name", DOCS)
def test_included_snippets_are_the_files_the_report_wrote(name):
    blocks = INCLUDE.findall(DOCS[name]())
    assert "docs/reference-cpu/verdicts.md" in [path for path, _ in blocks], f"{name} does not include the verdicts"
    for path, body in blocks:
        assert body == (REPO / path).read_text(), f"{name}: the block of {path} differs from the file; copy it again"


@pytest.mark.parametrize("name", DOCS)
def test_every_figure_quoted_in_the_prose_is_in_the_report(name):
    report = (REFERENCE / "report.md").read_text()
    prose = ARXIV.sub("", CODE.sub("", INCLUDE.sub("", DOCS[name]())))
    missing = [n for n in DECIMAL.findall(prose) if n.lstrip("+-") not in report]
    assert not missing, f"{name} quotes figures that docs/reference-cpu/report.md does not hold: {missing}"
