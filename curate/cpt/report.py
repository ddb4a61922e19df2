"""The bench report: report.json, report.md (a verdict per arm in words), parity.png and each
arm's length and source histograms. It works on whatever runs have finished, so a long run in
the background can be inspected while it goes (`curate bench ... --report-only`).
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from curate.cpt import stats
from curate.cpt.bench import OUTPUTS, RUN_RECORD, Bench
from curate.cpt.glue import FINETUNED
from probes.atomic import atomic_path
from probes.errors import CurateError
from probes.figures import new_figure, save_png

TARGET = "target"
GLUE_AVG = "glue_avg"


@dataclass
class Series:
    """One metric's replicates: the base model's and each arm's per token count."""

    name: str
    higher: bool
    margin: float
    base: np.ndarray  # [R]
    arms: dict[str, dict[int, np.ndarray]]  # arm -> tokens -> [R]
    points: dict[str, dict[int, float]]  # arm -> tokens -> value on all examples, seed mean
    base_point: float


def _load(folder: Path) -> tuple[dict, dict] | None:
    if not (folder / RUN_RECORD).is_file():
        return None
    with np.load(folder / OUTPUTS) as npz:
        outputs = {k: npz[k] for k in npz.files}
    return json.loads((folder / RUN_RECORD).read_text()), outputs


def _eval_sets(bench: Bench, outputs: dict) -> dict[str, dict]:
    """Per evaluation set, the per-example arrays the metrics read (fine-tuned task outputs,
    where a run has them, under `finetuned:<task>`)."""
    sets = {TARGET: {"loss_sum": outputs["target/loss_sum"], "count": outputs["target/count"]}}
    for task in bench.tasks:
        for name in (task.name, f"{FINETUNED}{task.name}"):
            if f"{name}/predicted" not in outputs:
                continue
            out = {"predicted": outputs[f"{name}/predicted"], "label": task.validation.label}
            if f"{name}/true_probability" in outputs:
                out["true_probability"] = outputs[f"{name}/true_probability"]
            sets[name] = out
    return sets


def collect(bench: Bench, arm_names: list[str], sets_of=None):
    """(base record and sets, {arm: {tokens: [(record, sets) per finished seed]}}).

    `sets_of(outputs)` names the evaluation sets of a run's outputs (default: the text bench's).
    """
    sets_of = sets_of or (lambda outputs: _eval_sets(bench, outputs))
    runs_dir = bench.out / "runs"
    base = _load(runs_dir / "base")
    if base is None:
        raise CurateError(
            f"{runs_dir}: the base model's evaluation has not finished, so there is nothing to "
            "report yet"
        )
    runs: dict[str, dict[int, list]] = {}
    for arm in arm_names:
        for tokens in bench.config.token_grid:
            for seed in range(bench.config.grid.seeds):
                found = _load(runs_dir / arm / f"T{tokens}" / f"seed{seed}")
                if found is not None:
                    runs.setdefault(arm, {}).setdefault(tokens, []).append(
                        (found[0], sets_of(found[1]))
                    )
    return (base[0], sets_of(base[1])), runs


def _specs(bench: Bench) -> list[tuple[str, str, str, float]]:
    """(series name, metric, evaluation set, non-inferiority margin) of every metric."""
    margins = bench.config.eval
    specs = [(TARGET, "lm_loss", TARGET, margins.loss_margin)]
    for t in bench.tasks:
        specs.append((f"{t.name}/{t.metric}", t.metric, t.name, margins.glue_margin))
        if t.kind == "classification":
            specs.append((f"{t.name}/log_loss", "log_loss", t.name, margins.glue_margin))
        specs.append(
            (f"{FINETUNED}{t.name}/{t.metric}", t.metric, FINETUNED + t.name, margins.glue_margin)
        )
    return specs


def metric_series(bench: Bench, base, runs, draws: stats.Draws) -> list[Series]:
    """Target loss; per task its GLUE score and the probe's log-loss; the GLUE average; and
    fine-tuned task scores where the runs have them."""
    series = series_of(base, runs, draws, _specs(bench))
    scores = {f"{t.name}/{t.metric}" for t in bench.tasks}
    glue = [s for s in series if s.name in scores]
    if glue:
        series.append(_average(GLUE_AVG, glue, bench.config.eval.glue_margin))
    return series


def series_of(base, runs, draws: stats.Draws, specs) -> list[Series]:
    """One Series per (name, metric, evaluation set, margin) of `specs` that has runs."""
    series = []
    for name, metric, eval_set, margin in specs:
        by_arm = {
            arm: {
                t: [sets[eval_set] for _, sets in seeds if eval_set in sets]
                for t, seeds in by_t.items()
            }
            for arm, by_t in runs.items()
        }
        by_arm = {a: {t: v for t, v in by_t.items() if v} for a, by_t in by_arm.items()}
        if eval_set not in base[1] or not any(by_arm.values()):
            continue
        series.append(
            Series(
                name=name,
                higher=stats.METRICS[metric][1],
                margin=margin,
                base=stats.replicates(metric, eval_set, [base[1][eval_set]], draws),
                arms={
                    a: {t: stats.replicates(metric, eval_set, v, draws) for t, v in by_t.items()}
                    for a, by_t in by_arm.items()
                },
                points={
                    a: {t: stats.point(metric, v) for t, v in by_t.items()}
                    for a, by_t in by_arm.items()
                },
                base_point=stats.point(metric, [base[1][eval_set]]),
            )
        )
    return series


def _average(name: str, parts: list[Series], margin: float) -> Series:
    """The mean of several higher-is-better series, where every part has the point."""
    arms = set.intersection(*(set(s.arms) for s in parts))
    common = {a: set.intersection(*(set(s.arms[a]) for s in parts)) for a in arms}
    return Series(
        name=name,
        higher=True,
        margin=margin,
        base=np.mean([s.base for s in parts], 0),
        arms={
            a: {t: np.mean([s.arms[a][t] for s in parts], 0) for t in ts}
            for a, ts in common.items()
        },
        points={
            a: {t: float(np.mean([s.points[a][t] for s in parts])) for t in ts}
            for a, ts in common.items()
        },
        base_point=float(np.mean([s.base_point for s in parts])),
    )


def _moved(delta: np.ndarray, change: float, higher: bool) -> dict:
    """A paired change with its interval, and whether it is a resolved improvement."""
    lo, hi = stats.interval(delta)
    better = (lo > 0) if higher else (hi < 0)
    worse = (hi < 0) if higher else (lo > 0)
    return {
        "change": change,
        "change_ci": [lo, hi],
        "resolved": bool(better),
        "verdict": "improves with tokens"
        if better
        else ("gets worse with tokens" if worse else "cannot resolve at this scale"),
    }


def sensitivity(series: Series, reference: str, budget: int) -> dict:
    """Does the metric move with tokens at all? The reference arm from T = 0 to its largest T.

    Savings are read off the curves between the smallest T and B, so they need the reference to
    move there too (`savings_resolved`): a metric that is flat below B would otherwise show the
    reference reaching its own B score at the smallest T.
    """
    by_t, points = series.arms.get(reference, {}), series.points.get(reference, {})
    if not by_t:
        return {
            "resolved": False,
            "savings_resolved": False,
            "reason": "no finished reference runs",
        }
    largest, smallest = max(by_t), min(by_t)
    gate = {"tokens": largest}
    gate |= _moved(by_t[largest] - series.base, points[largest] - series.base_point, series.higher)
    below = None
    if budget in by_t and smallest < budget:
        below = {"tokens": [smallest, budget]} | _moved(
            by_t[budget] - by_t[smallest], points[budget] - points[smallest], series.higher
        )
    gate["below_budget"] = below
    gate["savings_resolved"] = bool(gate["resolved"] and below and below["resolved"])
    return gate


def compare(series: Series, arm: str, reference: str, budget: int) -> dict:
    """The arm at B against the reference at B, and its tokens to the reference's B score."""
    mine, ref = series.arms.get(arm, {}), series.arms.get(reference, {})
    if series.name.startswith(FINETUNED) and mine and ref:
        budget = max(set(mine) & set(ref), default=budget)  # fine-tuned: the final checkpoints
    if budget not in mine or budget not in ref:
        return {"complete": False}
    diff = mine[budget] - ref[budget]
    lo, hi = stats.interval(diff)
    sign = 1 if series.higher else -1
    # non-inferior: even the CI's worse end is within the margin; inferior: even its better end
    # is beyond it; otherwise the interval crosses the margin and neither is shown
    non_inferior = bool(sign * (lo if series.higher else hi) > -series.margin)
    inferior = bool(sign * (hi if series.higher else lo) < -series.margin)
    grid = np.array(sorted(mine))
    curves = np.stack([mine[t] for t in grid], 1)
    parity = stats.tokens_to_parity(grid.astype(float), curves, ref[budget], series.higher)
    savings = 1 - parity / budget
    reached = np.isfinite(parity)
    point_parity = stats.tokens_to_parity(
        grid.astype(float),
        np.array([[series.points[arm][t] for t in grid]]),
        np.array([series.points[reference][budget]]),
        series.higher,
    )[0]
    out = {
        "complete": True,
        "at_budget": float(series.points[arm][budget]),
        "difference": float(series.points[arm][budget] - series.points[reference][budget]),
        "difference_ci": [lo, hi],
        "non_inferior": non_inferior,
        "inferior": inferior,
        "margin": series.margin,
        "tokens_to_parity": None if math.isinf(point_parity) else float(point_parity),
        "token_savings": None if math.isinf(point_parity) else float(1 - point_parity / budget),
        "not_reached": float(1 - reached.mean()),
        "parity_at_smallest_budget": bool(point_parity == grid[0]),
    }
    lo_s, hi_s = np.quantile(savings, [0.025, 0.975])  # -inf where parity was never reached
    out["token_savings_ci"] = [None if math.isinf(lo_s) else float(lo_s), float(hi_s)]
    if len(grid) < 2:  # one token count (fine-tuned checkpoints): no curve to read parity off
        out.update(tokens_to_parity=None, token_savings=None, token_savings_ci=None)
        out.update(not_reached=None, parity_at_smallest_budget=False)
    return out


def write_report(bench: Bench, arm_names: list[str]) -> dict:
    cfg = bench.config
    base, runs = collect(bench, arm_names)
    sizes = {name: len(next(iter(v.values()))) for name, v in base[1].items()}
    draws = stats.Draws.make(sizes, cfg.grid.seeds, cfg.eval.replicates, seed=0)
    series = metric_series(bench, base, runs, draws)
    reference = cfg.arms.reference
    gates = {s.name: sensitivity(s, reference, cfg.grid.budget) for s in series}
    summary = {}
    for arm in arm_names:
        row: dict = {}
        for s in series:
            result = compare(s, arm, reference, cfg.grid.budget)
            result["resolved"] = gates[s.name]["resolved"]
            result["savings_resolved"] = gates[s.name]["savings_resolved"]
            row[s.name] = result
        glue, target = row.get(GLUE_AVG, {}), row[TARGET]
        summary[arm] = {
            "glue_avg": glue.get("at_budget"),
            "tokens_to_parity": glue.get("tokens_to_parity"),
            "token_savings": glue.get("token_savings"),
            "token_savings_ci": glue.get("token_savings_ci"),
            "not_reached": glue.get("not_reached"),
            "savings_resolved": glue.get("savings_resolved"),
            "target_loss": target.get("at_budget"),
            "target_loss_tokens_to_parity": target.get("tokens_to_parity"),
            "target_loss_savings": target.get("token_savings"),
            "target_loss_savings_ci": target.get("token_savings_ci"),
            "target_loss_not_reached": target.get("not_reached"),
            "target_loss_savings_resolved": target.get("savings_resolved"),
            "metrics": row,
        }
    table = run_table(runs, _specs(bench))
    report = {
        "config": cfg.to_dict(),
        "data": {
            "pool": bench.split.counts,
            "target_heldout_sentences": len(bench.targets.heldout),
            "target_sequences": int(len(bench.target_seq[0])),
            "tasks": {
                t.name: {
                    "train": len(t.train.first),
                    "validation": len(t.validation.first),
                    "metric": t.metric,
                }
                for t in bench.tasks
            },
        },
        "base": base[0],
        "sensitivity": gates,
        "runs": table,
        "devices": sorted({base[0].get("device", "cpu"), *(row["device"] for row in table)}),
        "summary": summary,
    }
    out = bench.out
    write_text(out / "report.json", json.dumps(report, indent=1, default=float))
    write_text(out / "report.md", markdown(report, cfg.grid.budget, reference))
    parity_plot(series, out / "parity.png", reference, cfg.grid.budget)
    for arm, by_t in runs.items():
        if cfg.grid.budget in by_t:
            selection_plot(
                arm, by_t[cfg.grid.budget][0][0].get("selection"), out / f"selection-{arm}.png"
            )
    return report


def run_table(runs, specs) -> list[dict]:
    """One row per finished run: its training figures and every metric of `specs`."""
    rows = []
    for arm, by_t in runs.items():
        for tokens, seeds in sorted(by_t.items()):
            for record, sets in seeds:
                train = record.get("train", {})
                rows.append(
                    {
                        "arm": arm,
                        "tokens": train.get("tokens"),
                        "tokens_requested": tokens,
                        "seed": record["seed"],
                        "device": record.get("device", "cpu"),
                        "steps": train.get("steps"),
                        "epochs": train.get("epochs"),
                        "train_seconds": train.get("seconds"),
                        "final_train_loss": train.get("losses", [[0, None]])[-1][1],
                        "selected_tokens": record.get("selection", {}).get("tokens"),
                        "metrics": {
                            name: stats.point(metric, [sets[eval_set]])
                            for name, metric, eval_set, _ in specs
                            if eval_set in sets
                        },
                    }
                )
    return rows


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _change(gate: dict) -> str:
    lo, hi = gate["change_ci"]
    return f"{gate['change']:+.4f} [{lo:+.4f}, {hi:+.4f}]"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:+.1f}%"


def markdown(report: dict, budget: int, reference: str) -> str:
    header = [
        f"# Continued pre-training bench: {report['config']['name']}",
        "",
        f"Base: `{report['config']['model']['base']}`; arms compared at B = {budget:,} tokens; "
        f"grid {report['config']['grid']['multiples']} x B; {report['config']['grid']['seeds']} "
        f"seeds; reference arm `{reference}`.",
        f"Pool: {report['data']['pool'].get('documents', 0):,} documents, "
        f"{report['data']['pool'].get('contaminated', 0):,} removed for sharing a "
        f"{report['data']['pool'].get('ngram')}-gram with a validation sentence.",
        f"Trained and evaluated on: {', '.join(report['devices'])}.",
    ]
    return verdict_markdown(report, header, reference, (TARGET, GLUE_AVG), "tokens")


def verdict_markdown(
    report: dict, header: list[str], reference: str, headline: tuple[str, ...], unit: str
) -> str:
    """The report's body under `header`: the sensitivity gate, every metric at B against the
    reference, and a verdict in words per arm on the `headline` metrics; counts in `unit`."""
    lines = [
        *header,
        "",
        f"## Does each metric move with {unit}? (sensitivity gate)",
        "",
        "Savings are claimed only where the reference also moves between the smallest T and B.",
        "",
        "| metric | change T=0 -> largest T [95% CI] | verdict | change smallest T -> B [95% CI] "
        "| savings |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, gate in report["sensitivity"].items():
        if "change" not in gate:
            lines.append(f"| {name} | | {gate['reason']} | | |")
            continue
        below = gate["below_budget"]
        below_text = f"{_change(below)} ({below['verdict']})" if below else "-"
        savings = "can resolve" if gate["savings_resolved"] else "cannot resolve"
        lines.append(f"| {name} | {_change(gate)} | {gate['verdict']} | {below_text} | {savings} |")
    lines += [
        "",
        "## Every metric at B against the reference",
        "",
        "Differences are paired (same seeds and examples); savings only where the metric resolves.",
        "",
        f"| metric | arm | at B | difference [95% CI] | {unit} to parity | savings [95% CI] |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for arm, row in report["summary"].items():
        for name, m in row["metrics"].items():
            if not m.get("complete"):
                continue
            lo, hi = m["difference_ci"]
            parity, savings = "-", "cannot resolve"
            if m["savings_resolved"] and m["tokens_to_parity"] is not None:
                parity = f"{m['tokens_to_parity']:,.0f}"
                ci = m["token_savings_ci"]
                low = "below grid" if ci[0] is None else _pct(ci[0])
                savings = f"{_pct(m['token_savings'])} [{low}, {_pct(ci[1])}]"
            elif m["savings_resolved"]:
                parity, savings = "not reached", "-"
            lines.append(
                f"| {name} | {arm} | {m['at_budget']:.4f} | {m['difference']:+.4f} "
                f"[{lo:+.4f}, {hi:+.4f}] | {parity} | {savings} |"
            )
    lines += ["", "## Verdicts", ""]
    for arm, row in report["summary"].items():
        lines.append(f"### {arm}")
        for name in headline:
            m = row["metrics"].get(name)
            if not m or not m.get("complete"):
                lines.append(f"- {name}: runs not finished")
                continue
            lo, hi = m["difference_ci"]
            head = (
                f"- {name}: {m['at_budget']:.4f} at B ({m['difference']:+.4f} vs {reference}, "
                f"CI [{lo:+.4f}, {hi:+.4f}])"
            )
            if not m["resolved"]:
                lines.append(
                    head + "; **cannot resolve at this scale**: no parity or savings claimed."
                )
                continue
            if m["non_inferior"]:
                tail = f"; non-inferior at margin {m['margin']}"
            elif m["inferior"]:
                tail = f"; inferior at margin {m['margin']} (the whole CI is beyond it)"
            else:
                tail = f"; non-inferiority not shown: the CI crosses the margin {m['margin']}"
            if not m["savings_resolved"]:
                tail += (
                    f"; {reference} does not move between the smallest T and B beyond its noise, "
                    "so no savings are claimed"
                )
            elif m["tokens_to_parity"] is None:
                tail += f"; never reaches {reference}'s B score within the grid"
            else:
                ci = m["token_savings_ci"]
                ci_text = f"[{_pct(ci[0]) if ci[0] is not None else 'below grid'}, {_pct(ci[1])}]"
                at_most = (
                    " (at or below the smallest budget)" if m["parity_at_smallest_budget"] else ""
                )
                tail += (
                    f"; reaches {reference}'s B score at {m['tokens_to_parity']:,.0f} {unit}"
                    f"{at_most}: "
                    f"savings {_pct(m['token_savings'])} {ci_text}, never reached in "
                    f"{m['not_reached'] * 100:.0f}% of replicates"
                )
            lines.append(head + tail + ".")
        lines.append("")
    return "\n".join(lines) + "\n"


def parity_plot(
    series: list[Series], path: Path, reference: str, budget: int, unit: str = "tokens"
) -> None:
    cols = 3
    rows = math.ceil(len(series) / cols)
    fig = new_figure(5 * cols, 3.6 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, s in zip(axes, series, strict=False):
        for arm, by_t in s.arms.items():
            grid = sorted(by_t)
            lo = [np.quantile(by_t[t], 0.025) for t in grid]
            hi = [np.quantile(by_t[t], 0.975) for t in grid]
            line = ax.plot(grid, [s.points[arm][t] for t in grid], marker="o", ms=3, label=arm)
            ax.fill_between(grid, lo, hi, alpha=0.15, color=line[0].get_color())
        ax.axhline(s.base_point, color="0.4", linestyle=":", label="base (T=0)")
        if budget in s.points.get(reference, {}):
            ax.axhline(
                s.points[reference][budget],
                color="k",
                linestyle="--",
                lw=0.8,
                label=f"{reference} at B",
            )
        ax.axvline(budget, color="0.7", lw=0.8)
        ax.set_xscale("log")
        ax.set_title(s.name + (" (lower is better)" if not s.higher else ""))
        ax.set_xlabel(f"continued-training {unit}")
    for ax in axes[len(series) :]:
        ax.axis("off")
    axes[0].legend(fontsize=7)
    save_png(fig, path)


def selection_plot(arm: str, selection: dict | None, path: Path) -> None:
    """Document lengths and tokens per source of one arm's selection at B (seed 0)."""
    if not selection:
        return
    fig = new_figure(10, 3.6)
    left, right = fig.subplots(1, 2)
    lengths = np.array(selection["lengths"])
    left.hist(lengths, bins=np.logspace(0, np.log10(max(lengths.max(), 10)), 40), color="tab:blue")
    left.set_xscale("log")
    left.set_xlabel("document length (tokens)")
    left.set_ylabel("documents")
    names = list(selection["tokens_by_source"])
    right.barh(np.arange(len(names)), [selection["tokens_by_source"][n] for n in names])
    right.set_yticks(np.arange(len(names)), names)
    right.set_xlabel("tokens")
    fig.suptitle(f"{arm}: {selection['documents']:,} documents, {selection['tokens']:,} tokens")
    save_png(fig, path)
