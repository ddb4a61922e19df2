"""`curate scaling`: discovery across the seeds of every zoo size, then the counts and fits.

Per MLP width, each of the first `anchors` seeds in turn is the anchor and the other seeds its
partners, with discovery's significance controls (floor from the rotated null on a calibration
split, rotated-null buddies, held-out replication, and a random-init null rerun); one neuron set
per anchor under OUT/sets, reused when the study is run again. Extra points: pretrained models
(`models`, each the anchor in turn against the others, on the same data) and existing neuron
sets (`sets`, e.g. the shipped vision set); they are plotted and tabled, not fitted, as they
differ from the zoo in family and training data.
"""

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from curate import pipeline
from curate.scaling.zoo import MEMBER_RECORD, read_zoo
from probes import neuronset
from probes.errors import CurateError

SETS = "sets"
POPULATIONS = ("rosetta", "other")


@dataclass
class Point:
    """One neuron set's counts: a size of the zoo (one anchor seed) or an extra point."""

    label: str
    kind: str  # zoo, pretrained or set
    n_total: int
    n_rosetta: int
    rosetta_mask: np.ndarray  # [n_total] bool
    selectivity: np.ndarray  # [n_total] class selectivity (NaN where undefined)
    meta: dict  # the set's null rate, floor, corpus, and for the zoo width, seed, loss

    @property
    def fraction(self) -> float:
        return self.n_rosetta / self.n_total

    def values(self, population: str) -> np.ndarray:
        """Selectivity of the Rosetta or the other neurons."""
        mask = self.rosetta_mask if population == "rosetta" else ~self.rosetta_mask
        return self.selectivity[mask]

    def populations(self) -> dict:
        return {k: selectivity_summary(self.values(k)) for k in POPULATIONS}


def selectivity_summary(values: np.ndarray) -> dict:
    """Mean and quartiles of the defined values (NaN: a neuron with no class contrast)."""
    v = values[np.isfinite(values)]
    if not len(v):
        return {"neurons": 0, "mean": None, "quartiles": [None, None, None]}
    return {
        "neurons": len(v),
        "mean": float(v.mean()),
        "quartiles": np.percentile(v, [25, 50, 75]).tolist(),
    }


def point_from_set(folder: Path, label: str, kind: str, extra: dict | None = None) -> Point:
    artifact = neuronset.read(folder)
    meta, tensors = artifact.meta, artifact.tensors
    mask = tensors["all.rosetta"].numpy().astype(bool)
    selectivity = tensors["all.selectivity"].float().numpy()
    null = meta.get("null_rate") or {}
    return Point(
        label=label,
        kind=kind,
        n_total=int(meta["counts"]["anchor_neurons"]),
        n_rosetta=int(meta["counts"]["rosetta"]),
        rosetta_mask=mask,
        selectivity=selectivity,
        meta={
            "set": str(folder),
            "anchor": meta["models"][0]["name"],
            "partners": [m["name"] for m in meta["models"][1:]],
            "floor": meta["thresholds"]["min_corr"],
            "random_init_rosetta": null.get("rosetta"),
            "discovery_tokens": meta["corpus"]["tokens"].get("discovery"),
            "classes": len(meta["corpus"].get("classes", [])),
            **(extra or {}),
        },
    )


def _discovered(job: pipeline.ScalingJob, models: tuple[str, ...], out: Path) -> Path:
    """The neuron set of `models` at `out`: found before, or discovered now."""
    if (out / neuronset.META).is_file():
        return out
    settings = job.discover or pipeline.DiscoverJob(models=(), data=job.data, out=out)
    pipeline.discover(replace(settings, models=models, data=job.data, out=out, force=False))
    return out


def zoo_points(job: pipeline.ScalingJob) -> dict[int, list[Point]]:
    """Per MLP width, one point per anchor seed."""
    by_width = read_zoo(job.zoo)
    points: dict[int, list[Point]] = {}
    for width, folders in by_width.items():
        if len(folders) < 2:
            raise CurateError(
                f"{job.zoo}: MLP width {width} has {len(folders)} complete member; discovery "
                "needs two seeds or more (finish the zoo with curate zoo train)"
            )
        n_anchors = len(folders) if job.anchors <= 0 else min(job.anchors, len(folders))
        for a in range(n_anchors):
            anchor = folders[a]
            models = (str(anchor), *(str(f) for f in folders if f != anchor))
            record = json.loads((anchor / MEMBER_RECORD).read_text())
            folder = _discovered(job, models, job.out / SETS / f"{anchor.name}-anchor")
            extra = {
                k: record[k] for k in ("width", "seed", "parameters", "heldout_loss", "mlp_neurons")
            }
            points.setdefault(width, []).append(
                point_from_set(folder, f"mlp{width} seed {record['seed']}", "zoo", extra)
            )
    return points


def extra_points(job: pipeline.ScalingJob) -> list[Point]:
    out = []
    for i, anchor in enumerate(job.models):
        others = tuple(m for m in job.models if m != anchor)
        name = Path(anchor).name if Path(anchor).exists() else anchor
        folder = _discovered(job, (anchor, *others), job.out / SETS / f"pretrained-{i}-{name}")
        out.append(point_from_set(folder, name, "pretrained"))
    for folder in job.sets:
        meta = neuronset.read(folder).meta
        out.append(point_from_set(folder, meta["models"][0]["name"] + " (set)", "set"))
    return out
