"""Plots of evaluation runs (PNG, matplotlib): score vs. answer length (paper Fig. 4a), per-category bars
(Fig. 4b), the efficacy-locality scatter with its Pareto front and, when runs differ only in ``chunking.window``,
the chunk-size sweep (Fig. 6). ``plots(dirs, out)`` writes every one that applies."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .tables import Run, front, get, load_runs, mean


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (imported on first use: only plotting needs it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figure(path: Path, draw: Callable[[Any], str], figsize: tuple[float, float] = (6, 4)) -> Path:
    """One figure with one axis: ``draw(ax)`` fills it and returns the title; saved to ``path``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=figsize)
    try:
        ax.set_title(draw(ax))
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return path


def _question_axis(ax: Any) -> None:
    ax.set_ylabel("ROUGE-L F1 (question)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)


def length_plot(runs: list[Run], path: Path) -> Path:
    """Every record as a dot (answer tokens, ROUGE-L F1), the mean of up to 5 equal-count length bins as the line."""

    def draw(ax: Any) -> str:
        for run in runs:
            pts = sorted((r["answer_tokens"], get(r, "scores", "question", "rougeL_f")) for r in run.rows)
            pts = [(x, y) for x, y in pts if y is not None]
            if pts:
                dots = ax.scatter([x for x, _ in pts], [y for _, y in pts], s=14, alpha=0.45)
                k = min(5, len(pts))
                bins = [pts[i * len(pts) // k: (i + 1) * len(pts) // k] for i in range(k)]
                ax.plot([statistics.mean(x for x, _ in b) for b in bins],
                        [statistics.mean(y for _, y in b) for b in bins], "o-", color=dots.get_facecolor()[0][:3],
                        label=f"{run.label} ({run.dataset}, {len(pts)} records)")
        ax.set_xlabel("answer length (tokens)")
        _question_axis(ax)
        return "Edit quality vs. answer length"

    return _figure(path, draw)


def category_plot(runs: list[Run], path: Path) -> Path | None:
    """Bars of the mean ROUGE-L F1 per category, one colour per run (runs with categories only)."""
    cat_runs = [r for r in runs if any(x.get("category") for x in r.rows)]
    if not cat_runs:
        return None
    cats = sorted({x["category"] for r in cat_runs for x in r.rows if x.get("category")})

    def draw(ax: Any) -> str:
        width = 0.8 / len(cat_runs)
        for i, run in enumerate(cat_runs):
            vals = [mean([get(x, "scores", "question", "rougeL_f") for x in run.rows if x.get("category") == c])
                    or 0.0 for c in cats]
            ax.bar([j + i * width for j in range(len(cats))], vals, width, label=run.label)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(cats))], cats, rotation=30)
        _question_axis(ax)
        return "Per category"

    return _figure(path, draw, (7, 4))


def pareto_plot(runs: list[Run], path: Path) -> Path | None:
    """Efficacy (and paraphrase, when every run has it) against locality; the Pareto front in red."""
    pts = front(runs)
    if len(pts) <= 1:
        return None
    panels = [("ROUGE-L F1 (question)", [eff for _, eff, *_ in pts])]
    if all(para is not None for *_, para, _ in pts):
        panels.append(("ROUGE-L F1 (paraphrase)", [para for *_, para, _ in pts]))
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.8), squeeze=False)
    try:
        for ax, (ylabel, ys) in zip(axes[0], panels):
            for i, ((run, _, loc, _, on_front), y) in enumerate(zip(pts, ys), 1):
                ax.scatter([loc], [y], color="tab:red" if on_front else "tab:gray", label=f"{i}: {run.label}")
                ax.annotate(str(i), (loc, y), fontsize=8, xytext=(4, 4), textcoords="offset points")
            ax.set_xlabel("probe tokens kept (locality)")
            ax.set_ylabel(ylabel)
            ax.set_ylim(-0.02, 1.05)
        axes[0][0].set_title("Efficacy vs. locality")
        if len(panels) > 1:
            axes[0][1].set_title("Paraphrase vs. locality")
        fig.suptitle("red: Pareto front (question, paraphrase, locality)", fontsize=9)
        fig.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center", fontsize=7, ncol=2, frameon=False)
        fig.tight_layout(rect=(0, 0.06 + 0.03 * ((len(pts) + 1) // 2), 1, 1))
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return path


def chunk_sweep_plot(runs: list[Run], path: Path) -> Path | None:
    """Mean ROUGE-L F1 against the chunk size, one line per group of runs that differ only in ``chunking.window``
    (window-chunked runs only; the snap follows the window in such a sweep)."""
    groups: dict[str, list[tuple[int, float]]] = {}
    for run in runs:
        cfg = dict(run.manifest["config"])
        chunking = dict(cfg.pop("chunking"))
        if chunking.get("mode") != "window":
            continue
        window = chunking.pop("window")
        chunking.pop("snap", None)
        key = json.dumps([run.dataset, cfg, chunking], sort_keys=True)
        v = mean([get(x, "scores", "question", "rougeL_f") for x in run.rows])
        if v is not None:
            groups.setdefault(key, []).append((window, v))
    sweeps = {k: sorted(v) for k, v in groups.items() if len(v) > 1}
    if not sweeps:
        return None

    def draw(ax: Any) -> str:
        for key, pts in sweeps.items():
            ds, cfg, _ = json.loads(key)
            ax.plot([x for x, _ in pts], [y for _, y in pts], "o-", label=f"{cfg['method']} ({ds})")
        ax.set_xlabel("chunk size (tokens)")
        _question_axis(ax)
        return "Chunk-size sweep"

    return _figure(path, draw)


def plots(dirs: list[str | Path], out: str | Path, paired: bool = True) -> list[Path]:
    """Write every plot that applies to the runs in ``dirs`` into ``out``; returns their paths."""
    runs = load_runs(dirs, paired)[0]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [length_plot(runs, out / "length.png"), category_plot(runs, out / "categories.png"),
               pareto_plot(runs, out / "pareto.png"), chunk_sweep_plot(runs, out / "chunk_sweep.png")]
    return [p for p in written if p is not None]
