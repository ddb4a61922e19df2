"""scaling.json, scaling.md and the two plots of a scaling study, our figures beside the paper's.

The paper (../shared/seed/paper-summary.txt): N_rosetta grows as N_total^0.6 (its capacity-
utility model: 0.55-0.65), the Rosetta fraction falls (~0.5% -> ~0.1% for language models),
and Rosetta neurons' mean selectivity rises ~3x across its sweep while the others' barely moves.
"""

import json
from pathlib import Path

import numpy as np

from curate.cpt.report import write_text
from curate.scaling.capacity import CapacityFit, fit_capacity
from curate.scaling.fit import PowerLaw, SizeCounts, fit_power_law, ratio_of_means
from curate.scaling.study import POPULATIONS, Point, selectivity_summary
from probes.errors import CurateError
from probes.figures import new_figure, save_png

PAPER = {
    "alpha": 0.6,
    "alpha_model": (0.55, 0.65),
    "fraction_language": (0.005, 0.001),
    "fraction_vision": (0.004, 0.0008),
    "rosetta_selectivity_gain": 3.0,
}
JSON, MARKDOWN = "scaling.json", "scaling.md"
FIT_PLOT, SELECTIVITY_PLOT = "scaling-fit.png", "selectivity.png"


def _pooled(points: list[Point], population: str) -> dict:
    """Selectivity of one population pooled over a size's anchors."""
    return selectivity_summary(np.concatenate([p.values(population) for p in points]))


def size_rows(zoo: dict[int, list[Point]]) -> list[dict]:
    rows = []
    for width, points in sorted(zoo.items()):
        counts = [p.n_rosetta for p in points]
        nulls = [p.meta.get("random_init_rosetta") for p in points]
        rows.append(
            {
                "width": width,
                "n_total": points[0].n_total,
                "parameters": points[0].meta.get("parameters"),
                "heldout_loss": float(np.mean([p.meta["heldout_loss"] for p in points])),
                "anchor_seeds": [p.meta.get("seed") for p in points],
                "rosetta_counts": counts,
                "rosetta_mean": float(np.mean(counts)),
                "rosetta_sd": float(np.std(counts, ddof=1)) if len(counts) > 1 else 0.0,
                "fraction": float(np.mean(counts)) / points[0].n_total,
                "random_init_rosetta": nulls,
                "floors": [p.meta["floor"] for p in points],
                "selectivity": {k: _pooled(points, k) for k in POPULATIONS},
            }
        )
    return rows


def _gain(zoo: dict[int, list[Point]], population: str, replicates: int, level: float):
    """The population's mean selectivity at the largest size over the smallest, with its CI."""
    widths = sorted(zoo)
    if len(widths) < 2:
        return None
    values = [np.concatenate([p.values(population) for p in zoo[w]]) for w in widths]
    found = ratio_of_means(values[-1], values[0], replicates, level)
    return None if found is None else dict(zip(("gain", "low", "high"), found, strict=True))


def summarize(
    zoo: dict[int, list[Point]], extras: list[Point], replicates: int, level: float, command: str
) -> tuple[dict, PowerLaw | None, CapacityFit | None]:
    """The study's record, with the power law and the capacity model (None where no fit)."""
    rows = size_rows(zoo)
    sizes = [SizeCounts(r["n_total"], tuple(r["rosetta_counts"])) for r in rows]
    law, capacity, no_fit = None, None, None
    try:
        law = fit_power_law(sizes, replicates, level)
        capacity = fit_capacity([r["n_total"] for r in rows], [r["rosetta_mean"] for r in rows])
    except CurateError as err:
        no_fit = str(err)
    return (
        {
            "command": command,
            "paper": PAPER,
            "sizes": rows,
            "fit": law.to_dict() if law else None,
            "no_fit": no_fit,
            "capacity_model": capacity.to_dict() if capacity else None,
            "polarization": {
                "rosetta_selectivity_gain": _gain(zoo, "rosetta", replicates, level),
                "other_selectivity_gain": _gain(zoo, "other", replicates, level),
                "from_width": rows[0]["width"],
                "to_width": rows[-1]["width"],
            },
            "extra_points": [
                {
                    "label": p.label,
                    "kind": p.kind,
                    "n_total": p.n_total,
                    "n_rosetta": p.n_rosetta,
                    "fraction": p.fraction,
                    **{k: p.meta.get(k) for k in ("anchor", "partners", "random_init_rosetta")},
                    "selectivity": p.populations(),
                }
                for p in extras
            ],
        },
        law,
        capacity,
    )


def verdicts(summary: dict) -> list[str]:
    """Plain sentences: where our figures agree with the paper's and where not."""
    out = []
    rows, fit = summary["sizes"], summary["fit"]
    if fit is None:
        out.append(f"No power law could be fitted: {summary['no_fit']}.")
    else:
        lo, hi = fit["alpha_ci"]
        ci = f"alpha = {fit['alpha']:.2f} [{lo:.2f}, {hi:.2f}]"
        paper_inside = lo <= PAPER["alpha"] <= hi
        if paper_inside and hi < 1:
            out.append(f"Exponent: agrees. {ci} contains the paper's 0.6 and lies below 1.")
        elif paper_inside:
            out.append(
                f"Exponent: not resolved. {ci} contains both the paper's 0.6 and linear "
                "growth (1); more sizes, seeds or discovery tokens would narrow it."
            )
        else:
            side = "below" if hi < PAPER["alpha"] else "above"
            out.append(f"Exponent: differs. {ci} lies {side} the paper's 0.6.")
        if hi < 1:
            out.append("Growth: sub-linear (the interval lies below 1), as in the paper.")
        elif lo > 1:
            out.append("Growth: super-linear (the interval lies above 1), unlike the paper.")
        else:
            out.append("Growth: not resolved as sub-linear (the interval includes 1).")
    fractions = [r["fraction"] for r in rows]
    if len(rows) >= 2:
        trend = "falls" if fractions[-1] < fractions[0] else "does not fall"
        agree = "agrees" if fractions[-1] < fractions[0] else "differs"
        out.append(
            f"Fraction: {agree}. Ours {trend} from {fractions[0]:.2%} to {fractions[-1]:.2%} "
            f"(paper, language: 0.5% -> 0.1% over 0.1B -> 30B parameters)."
        )
    pol = summary["polarization"]
    gain, other = pol["rosetta_selectivity_gain"], pol["other_selectivity_gain"]
    if gain is not None and other is not None:
        if gain["low"] > 1 and gain["low"] > other["high"]:
            verdict = "agrees (Rosetta selectivity rises, and more than the others')"
        elif gain["high"] < 1 or gain["high"] < other["low"]:
            verdict = "differs (Rosetta selectivity does not rise more than the others')"
        else:
            verdict = "not resolved (the intervals overlap)"
        out.append(
            f"Polarization: {verdict}. From MLP width {pol['from_width']} to {pol['to_width']}, "
            f"Rosetta selectivity x{gain['gain']:.2f} [{gain['low']:.2f}, {gain['high']:.2f}], "
            f"the others x{other['gain']:.2f} [{other['low']:.2f}, {other['high']:.2f}] "
            "(paper: ~x3 versus ~x1, over a 300x wider range of sizes)."
        )
    else:
        out.append("Polarization: not measured (a size has no Rosetta neuron, or no classes).")
    model = summary["capacity_model"]
    if model and fit:
        out.append(
            f"Capacity-utility model: fitted to the same counts (rms log error "
            f"{model['rms_log_error']:.3f}), local exponent {model['local_alpha']:.2f} at the "
            f"measured sizes, asymptotic {model['asymptotic_alpha']:.2f} (paper: 0.55-0.65). "
            "It shares its data with the free fit, so agreement between the two is a consistency "
            "check, not independent evidence."
        )
    nulls = [
        (r["width"], r["rosetta_mean"], n)
        for r in rows
        for n in r["random_init_rosetta"]
        if n is not None
    ]
    loud = sorted({w for w, real, n in nulls if n >= 0.5 * max(real, 1)})
    if loud:
        out.append(
            "Null: at MLP width " + ", ".join(map(str, loud)) + " a random-init partner yields "
            "at least half as many 'Rosetta' neurons as the trained seeds, so those counts are "
            "not significant; more training tokens or discovery tokens are needed there."
        )
    elif nulls:
        out.append("Null: every random-init rerun finds under half the trained seeds' count.")
    return out


def _cell(x, fmt: str = "{:.3f}") -> str:
    return "-" if x is None else fmt.format(x)


def markdown(summary: dict) -> str:
    rows = summary["sizes"]
    lines = [
        "# Scaling and polarization study",
        "",
        f"Command: `{summary['command']}`",
        "",
        "## Where we stand against the paper",
        "",
        *(f"- {v}" for v in verdicts(summary)),
        "",
        "## Per size (zoo)",
        "",
        "| MLP width | neurons | parameters | held-out loss | Rosetta per anchor | mean | "
        "fraction | random-init null | selectivity Rosetta / other (mean) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        sel = r["selectivity"]
        lines.append(
            f"| {r['width']} | {r['n_total']:,} | {r['parameters'] or 0:,} | "
            f"{r['heldout_loss']:.3f} | {', '.join(map(str, r['rosetta_counts']))} | "
            f"{r['rosetta_mean']:.1f} | {r['fraction']:.2%} | "
            f"{', '.join(_cell(n, '{}') for n in r['random_init_rosetta'])} | "
            f"{_cell(sel['rosetta']['mean'])} / {_cell(sel['other']['mean'])} |"
        )
    if fit := summary["fit"]:
        lo, hi = fit["alpha_ci"]
        lines += [
            "",
            f"Fit: N_rosetta = {fit['c']:.3g} x N_total^{fit['alpha']:.3f}, alpha "
            f"{fit['level']:.0%} interval [{lo:.3f}, {hi:.3f}] ({fit['replicates']:,} bootstrap "
            "replicates over anchor seeds and neurons). Paper: 0.6.",
        ]
    if model := summary["capacity_model"]:
        lines += [
            "",
            f"Capacity-utility model (curate/scaling/capacity.py): usefulness decay a = "
            f"{model['a']:.3f}, superposition cost eps0 = {model['eps0']:.3g} neurons at "
            f"{model['n0']:,.0f} neurons falling as N^-{model['b']:.2f}, gamma = "
            f"{model['gamma']}; predicted exponent {model['local_alpha']:.3f} at the measured "
            f"sizes, {model['asymptotic_alpha']:.3f} asymptotically.",
            "",
            "Its assumptions: features' usefulness falls as a power of their rank; a feature gets "
            "a neuron of its own (monosemantic, basis-aligned, found by every seed: Rosetta), is "
            "superposed at a fraction of a neuron losing a share to interference, or is dropped; "
            "superposition gets cheaper with width; training maximises the usefulness kept.",
        ]
    if summary["extra_points"]:
        lines += [
            "",
            "## Extra points (not fitted: other families and training data)",
            "",
            "| model | neurons | Rosetta | fraction | partners | random-init null | "
            "selectivity Rosetta / other |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for p in summary["extra_points"]:
            sel = p["selectivity"]
            lines.append(
                f"| {p['label']} | {p['n_total']:,} | {p['n_rosetta']:,} | {p['fraction']:.2%} | "
                f"{', '.join(p['partners'] or [])} | {_cell(p['random_init_rosetta'], '{}')} | "
                f"{_cell(sel['rosetta']['mean'])} / {_cell(sel['other']['mean'])} |"
            )
    lines += ["", f"Plots: `{FIT_PLOT}`, `{SELECTIVITY_PLOT}`.", ""]
    return "\n".join(lines)


def fit_plot(
    zoo: dict[int, list[Point]],
    extras: list[Point],
    law: PowerLaw | None,
    capacity: CapacityFit | None,
    path: Path,
) -> None:
    fig = new_figure(6.5, 4.8)
    ax = fig.subplots()
    n = np.array([pts[0].n_total for _, pts in sorted(zoo.items())], float)
    for _, pts in sorted(zoo.items()):
        ax.scatter([p.n_total for p in pts], [max(p.n_rosetta, 0.5) for p in pts], s=12, c="0.5")
    means = [np.mean([p.n_rosetta for p in pts]) for _, pts in sorted(zoo.items())]
    ax.scatter(n, np.maximum(means, 0.5), s=40, c="tab:blue", label="zoo (mean over anchors)")
    x = np.geomspace(n.min() / 1.5, max([n.max(), *(p.n_total for p in extras)]) * 1.5, 100)
    if law is not None:
        lo, hi = law.band(x)
        ax.plot(x, law.predict(x), c="tab:blue", label=f"fit: alpha = {law.alpha:.2f}")
        ax.fill_between(x, lo, hi, color="tab:blue", alpha=0.15, label=f"{law.level:.0%} band")
        anchor = np.exp(np.mean(np.log(law.predict(n))))
        center = np.exp(np.mean(np.log(n)))
        ax.plot(x, anchor * (x / center) ** 0.6, "k--", lw=0.8, label="paper slope 0.6")
    if capacity is not None:
        ax.plot(x, capacity.dedicated(x), ":", c="tab:green", label="capacity-utility model")
    for p in extras:
        ax.scatter([p.n_total], [max(p.n_rosetta, 0.5)], marker="^", s=40, c="tab:orange")
        ax.annotate(p.label, (p.n_total, max(p.n_rosetta, 0.5)), fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("neurons in the model (MLP, all layers)")
    ax.set_ylabel("Rosetta neurons")
    ax.legend(fontsize=7)
    save_png(fig, path)


def selectivity_plot(rows: list[dict], path: Path) -> None:
    fig = new_figure(6.5, 4.2)
    ax = fig.subplots()
    for population, color in (("rosetta", "tab:red"), ("other", "0.4")):
        xs, mid, lo, hi = [], [], [], []
        for r in rows:
            s = r["selectivity"][population]
            if s["mean"] is None:
                continue
            xs.append(r["n_total"])
            mid.append(s["mean"])
            lo.append(s["mean"] - s["quartiles"][0])
            hi.append(s["quartiles"][2] - s["mean"])
        lower = [max(v, 0) for v in lo]
        upper = [max(v, 0) for v in hi]
        ax.errorbar(xs, mid, yerr=[lower, upper], marker="o", capsize=3, c=color, label=population)
    ax.set_xscale("log")
    ax.set_xlabel("neurons in the model (MLP, all layers)")
    ax.set_ylabel("class selectivity (mean; bars: quartiles)")
    ax.legend()
    save_png(fig, path)


def write_study(
    zoo: dict[int, list[Point]],
    extras: list[Point],
    out: Path,
    replicates: int,
    level: float,
    command: str,
) -> dict:
    summary, law, capacity = summarize(zoo, extras, replicates, level, command)
    write_text(out / JSON, json.dumps(summary, indent=1) + "\n")
    write_text(out / MARKDOWN, markdown(summary))
    fit_plot(zoo, extras, law, capacity, out / FIT_PLOT)
    selectivity_plot(summary["sizes"], out / SELECTIVITY_PLOT)
    return summary
