"""One self-contained HTML page about one or more runs: what was trained, how training went,
how the encoder evaluates, and every picture the run produced.

The page is for reading a run (or comparing several) without the run directory at hand: it can
be mailed, attached to an issue or opened offline. Everything is inside the one file: pictures
are base64 data URIs, the CSS is inline, there is no script and no network reference. Text taken
from the run's files is HTML-escaped. Missing or half-written files never stop the report; the
page says what is missing and which command produces it.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from selfsup.errors import SelfsupError
from selfsup.engine import read_metrics, row_seconds

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
h1,h2,h3{font-weight:600}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.2em .6em;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f4f4f4}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto}figure{display:inline-block;margin:.5em;vertical-align:top}
img{max-width:100%}figcaption{font-size:12px;color:#555}.note{color:#8a5a00;background:#fff8e5;padding:.3em .6em}"""
# comparison table: (header, how to read it from a run, kind of number)
COLUMNS = [
    ("method", lambda r: _get(r["config"], "method", "name"), "text"),
    ("data", lambda r: _get(r["config"], "data", "name"), "text"),
    ("backbone", lambda r: _backbone(r["config"]), "text"),
    ("epochs", lambda r: r["summary"].get("epochs"), "float1"),
    ("train min", lambda r: _div(r["summary"].get("train_seconds"), 60), "float1"),
    ("kNN-200 (%)", lambda r: _get(r["evals"], "eval_knn", "top1_k200"), "pct"),
    ("kNN-20 (%)", lambda r: _get(r["evals"], "eval_knn", "top1_k20"), "pct"),
    ("linear (%)", lambda r: _get(r["evals"], "eval_linear", "top1"), "pct"),
    ("cluster NMI", lambda r: _get(r["evals"], "eval_cluster", "nmi"), "float3"),
    # on the user's own labels (selfsup eval ... --labels): the first label set's results
    ("kNN, your labels (%)", lambda r: _user(r["evals"], "eval_knn_labels-"), "pct"),
    ("linear, your labels (%)", lambda r: _user(r["evals"], "eval_linear_labels-"), "pct"),
    # `selfsup eval diagnostics` (2048 test images) where run, else the last training monitor (512)
    (
        "effective rank",
        lambda r: _first(
            _get(r["evals"], "eval_diagnostics", "embedding", "effective_rank"), r["summary"].get("diag/embedding_rank")
        ),
        "float1",
    ),
]


def _user(evals: dict, prefix: str):
    """top-1 of the first evaluation on a user's labels (eval_<protocol>_labels-<name>), if any."""
    name = next((k for k in sorted(evals) if k.startswith(prefix)), None)
    return _get(evals, name, "top1") if name else None


def write_report(run_dirs: list[str | Path], out: str | Path, title: str | None = None) -> Path:
    """Write the HTML report of ``run_dirs`` to ``out`` and return its path. Several runs get a
    comparison table and overlaid curves first, then one section per run."""
    runs = [_load(d) for d in run_dirs]
    if not runs:
        raise SelfsupError("no run directories given: pass one or more directories written by `selfsup pretrain`")
    _unique_names(runs)
    title = title or "selfsup report: " + ", ".join(r["name"] for r in runs)
    links = ", ".join(f'<a href="#run-{i}"><code>{esc(r["dir"])}</code></a>' for i, r in enumerate(runs))
    body = [f"<h1>{esc(title)}</h1>", f"<p>Generated {time.strftime('%Y-%m-%d %H:%M')} from {links}.</p>"]
    body += [f"<h2>{'Comparison' if len(runs) > 1 else 'Headline numbers'}</h2>", _comparison(runs)]
    if len(runs) > 1:
        body.append(_img(_overlay_figure(runs), "all runs against training time"))
    body += [_run_section(i, r) for i, r in enumerate(runs)]
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


# ---------------------------------------------------------------- reading a run directory


def _load(run_dir: str | Path) -> dict:
    d = Path(run_dir)
    if not (d / "config.yaml").is_file():
        raise SelfsupError(
            f"{d} is not a run directory (it has no config.yaml): pass the directory "
            "that `selfsup pretrain` wrote (its --out / out=...)"
        )
    notes, config_text = [], (d / "config.yaml").read_text(errors="replace")
    try:
        config = yaml.safe_load(config_text)
    except yaml.YAMLError as e:
        config = None
        notes.append(f"config.yaml could not be parsed: {e}")
    summary = _read_json(d / "summary.json", notes)
    try:
        rows = read_metrics(d)
    except (json.JSONDecodeError, UnicodeDecodeError):  # a run being written can end in half a line
        rows = list(_json_lines(d / "metrics.jsonl"))
        notes.append("metrics.jsonl has unreadable lines; they are skipped")
    evals = {p.stem: _read_json(p, notes) for p in sorted(d.glob("eval_*.json"))}
    pngs = sorted(p for p in d.rglob("*.png") if p.relative_to(d).parts[0] not in ("checkpoints", "tb"))
    return {
        "dir": d,
        "name": d.resolve().name,
        "config_text": config_text,
        "notes": notes,
        "evals": evals,
        "config": config if isinstance(config, dict) else {},
        "pngs": pngs,
        "summary": summary if isinstance(summary, dict) else {},
        "rows": [r for r in rows if isinstance(r, dict)],
    }


def _read_json(path: Path, notes: list[str]):
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, OSError, UnicodeDecodeError) as e:
        notes.append(f"{path.name} could not be read: {e}")
        return {}


def _json_lines(path: Path):
    for line in path.read_text(errors="replace").splitlines():
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            pass


def _unique_names(runs: list[dict]) -> None:
    """Runs named alike (runs/a/simclr, runs/b/simclr) are told apart by their parent folder."""
    names = [r["name"] for r in runs]
    for r in runs:
        if names.count(r["name"]) > 1:
            r["name"] = f"{r['dir'].resolve().parent.name}/{r['name']}"


def _get(d, *keys):
    """d[k1][k2]..., or None where a file lacks it or has another shape."""
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def _first(*values):
    return next((v for v in values if v is not None), None)


def _backbone(config: dict) -> str | None:
    name, width = _get(config, "backbone", "name"), _get(config, "backbone", "width")
    if name is None:
        return None
    return f"{name} ×{width:g}" if isinstance(width, (int, float)) and width != 1 else str(name)


def _div(x, y):
    return x / y if isinstance(x, (int, float)) else None


# ---------------------------------------------------------------- HTML pieces


def esc(x) -> str:
    return html.escape(str(x))


def _fmt(v, kind: str = "auto") -> str:
    if v is None:
        return "—"
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return esc(v)
    if kind == "pct":
        return f"{100 * v:.1f}"
    if kind.startswith("float"):
        return f"{v:.{kind[-1]}f}"
    return str(v) if isinstance(v, int) else f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"


def _table(header: list[str], rows: Sequence[Sequence[object]], kinds: list[str] | None = None) -> str:
    kinds = kinds or ["auto"] * len(header)
    return (
        "<table><tr>"
        + "".join(f"<th>{esc(h)}</th>" for h in header)
        + "</tr>"
        + "".join("<tr>" + "".join(_cell(v, k) for v, k in zip(r, kinds)) + "</tr>" for r in rows)
        + "</table>"
    )


def _cell(v, kind: str) -> str:
    """Numbers (and the "—" of a missing one in a number column) are right-aligned."""
    numeric = kind not in ("text", "auto") or isinstance(v, (int, float)) and not isinstance(v, bool)
    return f'<td class="n">{_fmt(v, kind)}</td>' if numeric else f"<td>{_fmt(v, kind)}</td>"


def _flatten(x, key: str = "") -> list[tuple[str, object]]:
    """Nested dicts/lists -> (dotted key, scalar) rows; short lists of numbers stay on one row."""
    if isinstance(x, dict):
        return [kv for k, v in x.items() for kv in _flatten(v, f"{key}.{k}" if key else str(k))] or [(key, "{}")]
    if isinstance(x, list):
        if all(isinstance(v, (int, float, str)) and not isinstance(v, bool) for v in x):
            shown = ", ".join(_fmt(v) for v in x[:20]) + (f", … ({len(x)} values)" if len(x) > 20 else "")
            return [(key, f"[{shown}]")]
        return [kv for i, v in enumerate(x) for kv in _flatten(v, f"{key}[{i}]")]
    return [(key, x)]


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'  # callers escape what came from files


def _img(png: bytes, caption: str) -> str:
    src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return f'<figure><img src="{src}" alt="{esc(caption)}"><figcaption>{esc(caption)}</figcaption></figure>'


def _comparison(runs: list[dict]) -> str:
    """One row a run; the your-labels columns only when a run was evaluated on a user's labels."""
    cols = [(h, get, k) for h, get, k in COLUMNS if "your labels" not in h or any(get(r) is not None for r in runs)]
    rows = [[r["name"]] + [get(r) for _, get, _ in cols] for r in runs]
    return _table(["run"] + [h for h, _, _ in cols], rows, ["text"] + [k for _, _, k in cols])


def _run_section(i: int, r: dict) -> str:
    d = esc(r["dir"])
    parts = [f'<h2 id="run-{i}">{esc(r["name"])}</h2>', f"<p><code>{d}</code></p>"]
    parts += [_note(esc(n)) for n in r["notes"]]
    parts.append(f"<details><summary>config.yaml</summary><pre>{esc(r['config_text'])}</pre></details>")
    parts.append("<h3>Summary</h3>")
    parts.append(
        _table(["key", "value"], _flatten(r["summary"]))
        if r["summary"]
        else _note("no summary.json: the run has not finished (or is still running)")
    )
    parts.append("<h3>Training curves</h3>")
    parts.append(
        _img(_run_figure(r["rows"]), f"{r['name']}: curves from metrics.jsonl")
        if r["rows"]
        else _note("no metrics.jsonl: training has not logged anything yet")
    )
    parts.append("<h3>Evaluations</h3>")
    if not r["evals"]:
        parts.append(
            _note(f"no evaluation yet: run <code>selfsup eval knn {d}</code> (or linear, cluster, …) to add one")
        )
    for name, res in r["evals"].items():
        parts += [
            f"<h4>{esc(name.removeprefix('eval_'))} <small>({esc(name)}.json)</small></h4>",
            _table(["key", "value"], _flatten(res)) if res else _note("empty result"),
        ]
    parts.append("<h3>Pictures</h3>")
    for p in r["pngs"]:
        data = p.read_bytes()
        rel = str(p.relative_to(r["dir"]))
        parts.append(_img(data, rel) if data.startswith(PNG_SIGNATURE) else _note(f"{esc(rel)} is not a PNG file"))
    if not r["pngs"]:
        parts.append(_note("no pictures in the run directory"))
    return "\n".join(parts)


# ---------------------------------------------------------------- figures (matplotlib Figure, no pyplot state)


def _minutes(rows: list[dict]) -> tuple[list[float], str]:
    """Training minutes of every row (selfsup.engine.row_seconds), or its step where the run
    logged no time."""
    seconds = row_seconds(rows)
    if seconds is None:
        return [r.get("step", i) for i, r in enumerate(rows)], "step"
    return [s / 60 for s in seconds], "training minutes"


def _series(rows: list[dict], key: str, scale: float = 1.0):
    x, xlabel = _minutes(rows)
    pts = [(t, scale * r[key]) for t, r in zip(x, rows) if isinstance(r.get(key), (int, float))]
    return list(zip(*pts)) if pts else ([], []), xlabel


PANELS = [
    ("loss", 1.0, "training loss", "loss"),
    ("monitor/knn20_top1", 100.0, "online kNN-20 monitor (validation slice of train)", "top-1 (%)"),
    ("diag/embedding_rank", 1.0, "embedding effective rank", "rank"),
]


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _run_figure(rows: list[dict]) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.4))
    for ax, (key, scale, title, ylabel) in zip(fig.subplots(1, 3), PANELS):
        (x, y), xlabel = _series(rows, key, scale)
        ax.plot(x, y, lw=1, marker="o" if key != "loss" else None, ms=3)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title if len(x) else f"{title} (not logged)")
        ax.grid(alpha=0.3)
    return _png(fig)


def _overlay_figure(runs: list[dict]) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.8))
    for ax, (key, scale, title, ylabel) in zip(fig.subplots(1, 2), PANELS[:2]):
        for r in runs:
            (x, y), _ = _series(r["rows"], key, scale)
            if len(x):
                ax.plot(x, y, lw=1, marker="o" if key != "loss" else None, ms=3, label=r["name"])
        ax.set(xlabel="training minutes (step where not logged)", ylabel=ylabel, title=title)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return _png(fig)
