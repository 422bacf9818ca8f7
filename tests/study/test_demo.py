"""`simclr-hpc demo` (what `make demo` runs): the whole embedded study on bundled data, on submitit's local executor.

Its wall time is printed (the budget is 10 minutes on 2 quiet cores, measured by the `demo` row of `make bench`): time
targets are not asserted in tests on this shared machine, but the pytest timeout below bounds it.
"""

import csv
import re
import subprocess
import sys
import time

import pytest


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_demo_runs_every_study_and_reports_three_sections_with_cis(tmp_path):
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "simclr_hpc.cli.main", "demo"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=1150)
    print(f"demo wall time: {time.monotonic() - start:.0f} s")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "ran 72, skipped 0 finished, failed 0, blocked 0" in proc.stdout
    report = (tmp_path / "runs/demo/report/report.md").read_text()
    for heading in ("## 1. Fine-tuning", "## 2. Distillation", "## 3. Transfer"):
        assert heading in report
    # every section shows intervals computed over the 3 seeds
    assert re.search(r"\[-?\d+\.\d, -?\d+\.\d\]% \(n=3\)", report)
    assert "paired t-test" in report and "95% CI" in report
    for plot in ("finetune.png", "distill.png", "transfer.png"):
        assert (tmp_path / "runs/demo/report" / plot).stat().st_size > 10_000
    rows = list(csv.DictReader(open(tmp_path / "runs/demo/report/results.csv")))
    assert len(rows) == 72 and all(r["status"] == "done" for r in rows)
    headlines = [line for line in proc.stdout.splitlines() if line.startswith("- ")]
    assert [h.split(":")[0] for h in headlines] == ["- Fine-tuning", "- Distillation", "- Transfer"]
