"""One self-contained HTML report for a folder of runs (a sweep): tables and figures, offline.

The paper's tables, then, per task where two or more methods finished, the comparison of ``egsbench
compare`` (its tables and its cost-vs-metric plot), then each run.

Every figure is embedded as a base64 ``data:`` URI and the styles are inline, so the file
opens from disk with no network and no sibling files.
"""

from __future__ import annotations

import base64
import html
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from ..tasks.spaces import UserError
from .records import RecordError, atomic_write_text, read_record, record_paths

__all__ = ["write_report"]

FIGURES = ("cell_normal.png", "cell_reduce.png", "probabilities_normal.png", "probabilities_reduce.png", "curves.png")
STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
details{margin:1em 0;border:1px solid #ddd;padding:.5em 1em;border-radius:4px}
summary{cursor:pointer;font-weight:600}img{max-width:100%;margin:.5em 0}
.failed{color:#b00}
"""


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def _number(value: float | None, spec: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def _run_section(folder: Path, record: dict, root: Path) -> str:
    m = record.get("metrics") or {}
    status = record.get("status", "ok")
    title = f"{record['method']} / {record['task']} / {record['preset']} / seed {record['seed']}"
    if status != "ok":
        return (
            f'<details><summary class="failed">{html.escape(title)}: FAILED</summary>'
            f"<pre>{html.escape(str(record.get('error')))}</pre></details>"
        )
    # whatever the task records (test_accuracy, test_ppl, ...); null where it measured nothing
    tests = ", ".join(
        f"{html.escape(k.removeprefix('test_'))} {_number(v, '.2f')}" for k, v in m.items() if k.startswith("test_")
    )
    size = f"params {_number(m.get('params_m'), '.3f', ' M')}, MACs {_number(m.get('macs_m'), '.1f', ' M')}"
    facts = (
        f"test {tests}; {size}, "
        f"search {record['search']['wall_time_s']:.0f} s on {html.escape(record['manifest']['device'])}; "
        f"folder {html.escape(str(folder.relative_to(root)))}"
    )
    figures = "".join(_img(folder / name) for name in FIGURES if (folder / name).is_file())
    genotype = html.escape(json.dumps(record.get("genotype")))
    return (
        f"<details><summary>{html.escape(title)}: {tests}</summary>"
        f"<p>{facts}</p>{figures}<p><code>{genotype}</code></p></details>"
    )


def _comparisons(records: list[dict]) -> str:
    """A "Comparison" section: per task where two or more methods finished, ``egsbench compare``'s tables and plot."""
    from .compare import compare_runs, plot_comparison, render_comparison

    parts = []
    for task in sorted({r["task"] for r in records}):
        if len({r["method"] for r in records if r["task"] == task and r.get("status", "ok") == "ok"}) < 2:
            continue
        try:
            comparison = compare_runs(records, task)
        except UserError as err:  # e.g. a plug-in task missing here: its metrics' directions are unknown
            parts.append(f'<p class="note">{html.escape(task)}: no comparison; {html.escape(str(err))}</p>')
            continue
        with tempfile.TemporaryDirectory() as tmp:  # the figure is embedded; nothing is left beside the runs
            figure = _img(plot_comparison(comparison, Path(tmp) / f"compare_{task}_{comparison.metric}.png"))
        parts.append(render_comparison(comparison, "html") + figure)
    return "<h2>Comparison</h2>\n" + "\n".join(parts) if parts else ""


def write_report(runs_dir: str | Path, out: str | Path, title: str | None = None) -> Path:
    """Gather ``runs_dir/**/record.json`` into one HTML file at ``out``.

    Raises:
        RecordError: ``runs_dir`` is missing or holds no record, or a record is torn or off the schema (named
            with its path); nothing is written then.
    """
    from .tables import render_tables

    root = Path(runs_dir)
    records = [(p.parent, read_record(p)) for p in record_paths(root)]  # validated, older versions upgraded
    if not records:
        raise RecordError(
            f"no run records (record.json) under {root}, so no report; pass --runs the --out folder "
            "of a finished run or sweep"
        )
    failed = sum(1 for _, r in records if r.get("status", "ok") != "ok")
    tables = render_tables([r for _, r in records], fmt="html")
    comparisons = _comparisons([r for _, r in records])
    sections = "".join(_run_section(folder, rec, root) for folder, rec in records)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title or root.name)}</title>
<style>{STYLE}</style></head><body>
<h1>EGS-Bench report: {html.escape(title or root.name)}</h1>
<p>{len(records)} runs ({failed} failed) under <code>{html.escape(str(root))}</code>; generated {when}.</p>
<h2>Results beside the reported numbers</h2>
{tables}
{comparisons}
<h2>Runs</h2>
{sections}
</body></html>
"""
    out = Path(out)
    atomic_write_text(out, page)
    return out
