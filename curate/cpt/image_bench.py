"""`curate bench --modality image`: continued training of an ImageNet model on filtered versus
unfiltered image pools at matched image counts and steps, evaluated by ImageNet top-1 and by a
frozen-feature linear probe on a downstream task.

The run, top to bottom:

1. the pool: every usable image of --pool (or a fixed hash-chosen subset of pool.max_images),
   never a shard of the downstream test set, written once as parquet shards under work/pool
   (the filter stage's input) and held decoded at the model's input size;
2. the evaluation images, decoded once: the ImageNet folder (--imagenet-dir, ImageFolder
   layout) and the downstream task's train / test shards (--downstream, parquet with `image`
   and `label`); the frozen original model is evaluated as T = 0;
3. for each seed, arm and image count T of the grid: select T images from the pool (recipes
   through `curate.pipeline.filter` with a budget in images, or the k-means-prototype
   baseline), continue training a copy of the original for exactly ceil(T / batch) steps,
   evaluate, keep the per-example outputs; a finished run is never redone, an unfinished one
   resumes from its checkpoint;
4. statistics and the report, with the text bench's multi-bootstrap (report.py, stats.py).

The objective needs no labels, so any pool will do: the student sees a random resized crop
(and flip) of each image, the frozen original sees the clean center view, and the loss is the
KL divergence of the student's class distribution from the original's (Noisy-Student-style
self-distillation). The original's ImageNet head stays the target, so top-1 stays meaningful;
the downstream probe measures how much the features gained from the pool's images. A student
identical to its teacher on identical inputs would get no gradient: the augmentation is what
makes the pool's content matter.
"""

import copy
import hashlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from tqdm import tqdm

from curate.cpt import report as text_report
from curate.cpt import stats
from curate.cpt.bench import OUTPUTS, RUN_RECORD, lock_config
from curate.cpt.config import BenchRecord, load_config
from curate.cpt.data import stable_share
from curate.cpt.glue import linear_probe
from curate.cpt.imagenet import class_index
from curate.cpt.loop import (
    autocast_dtype,
    batch_indices,
    get_lr,
    optimizer_step,
    resume,
    save_checkpoint,
)
from filters.config import check_values
from filters.recipe import find_recipe
from probes.atomic import atomic_path
from probes.errors import CurateError
from probes.images import crops, decode, normalize
from probes.models import LoadedModel, load_model
from probes.shards import list_shards, read_documents, shard_root

IMAGE_BENCH_VERSION = 1
POOL_SHARD_ROWS = 2000  # images per parquet shard of work/pool
ARM_KINDS = ("unfiltered", "prototypes")  # built in; every other arm name is a recipe
IMAGENET = "imagenet_top1"
DOWNSTREAM = "downstream"


# ---------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class ImagePoolConfig:
    max_images: int = 10_000  # a fixed hash-chosen subset of the pool (0: all of it)
    image_key: str = "image"


@dataclass(frozen=True)
class ImageGridConfig:
    budget: int = 1000  # B: the image count at which arms are compared
    multiples: tuple[float, ...] = (0.3, 1.0, 3.0)  # of B; must include 1
    seeds: int = 2


@dataclass(frozen=True)
class ImageTrainConfig:
    batch: int = 32
    lr: float = 1e-4
    warmup: float = 0.06  # share of the steps
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    temperature: float = 1.0  # of both class distributions in the KL loss
    crop_scale: float = 0.35  # smallest share of the image a random resized crop keeps
    dtype: str = "auto"  # as the text bench: bf16 autocast where the CPU has AMX tiles
    checkpoint_seconds: float = 300.0


@dataclass(frozen=True)
class ImageArmsConfig:
    # built-in kinds (unfiltered: the pool in a seeded random order; prototypes: k-means on the
    # original's features, the images farthest from their prototype first) or recipe names
    names: tuple[str, ...] = ("unfiltered", "random", "rosetta-image", "prototypes")
    reference: str = "unfiltered"
    prototypes: int = 0  # k-means clusters for `prototypes` (0: sqrt of the pool's images)


@dataclass(frozen=True)
class ImageEvalConfig:
    imagenet_max: int = 0  # a fixed subset of at most this many ImageNet images (0: all)
    downstream_train: int = 2000  # the linear probe's training images
    downstream_test: int = 2000  # images it is scored on
    replicates: int = 1000  # multi-bootstrap replicates
    top1_margin: float = 0.01  # non-inferiority margin, ImageNet top-1
    downstream_margin: float = 0.01  # non-inferiority margin, downstream accuracy


@dataclass(frozen=True)
class ImageBenchConfig(BenchRecord):  # its token_grid counts images
    version: int = IMAGE_BENCH_VERSION
    name: str = ""
    description: str = ""
    model: str = "efficientnet-lite0"  # an ImageNet classifier: the teacher and the student
    pool: ImagePoolConfig = ImagePoolConfig()
    grid: ImageGridConfig = ImageGridConfig()
    train: ImageTrainConfig = ImageTrainConfig()
    arms: ImageArmsConfig = ImageArmsConfig()
    eval: ImageEvalConfig = ImageEvalConfig()


def load_image_config(name_or_path: str) -> ImageBenchConfig:
    return load_config(name_or_path, ImageBenchConfig, _check)


def _check(config: ImageBenchConfig, where: str) -> None:
    g, t, a, e = config.grid, config.train, config.arms, config.eval
    checks = [
        ("grid.budget", g.budget > 0, "> 0"),
        ("grid.multiples", all(m > 0 for m in g.multiples) and 1.0 in g.multiples, "> 0, with 1"),
        ("grid.seeds", g.seeds >= 1, ">= 1"),
        ("pool.max_images", config.pool.max_images >= 0, ">= 0 (0: all)"),
        ("train.batch", t.batch >= 1, ">= 1"),
        ("train.lr", t.lr > 0, "> 0"),
        ("train.temperature", t.temperature > 0, "> 0"),
        ("train.crop_scale", 0 < t.crop_scale <= 1, "in (0, 1]"),
        ("arms.names", len(a.names) >= 1, "at least one arm"),
        ("arms.reference", a.reference in a.names, "one of arms.names"),
        ("arms.prototypes", a.prototypes >= 0, ">= 0 (0: sqrt of the pool)"),
        ("eval.replicates", e.replicates >= 100, ">= 100"),
        ("eval.downstream_train", e.downstream_train >= 10, ">= 10"),
        ("eval.downstream_test", e.downstream_test >= 10, ">= 10"),
    ]
    check_values(config, checks, where)
    for arm in a.names:
        if arm not in ARM_KINDS:
            find_recipe(arm)  # an unknown name fails here, with the closest bundled recipe


# ------------------------------------------------------------------------------ images


@dataclass
class ImageSet:
    """Decoded images at the model's input size (uint8, [n, 3, size, size]) and their labels."""

    pixels: torch.Tensor
    labels: np.ndarray


def read_images(
    shards: list[Path],
    root: Path,
    loaded: LoadedModel,
    limit: int,
    image_key: str = "image",
    desc: str = "decode",
) -> tuple[ImageSet, list]:
    """Every decodable image of `shards` (a fixed hash-chosen `limit` of them when set), with
    its label (the record's `label`), its (shard, row) and its document."""
    docs = []
    for shard in shards:
        rel = shard.relative_to(root).as_posix()
        found = read_documents(shard, image_key=image_key, on_error="skip", root=root)
        docs += [(rel, d) for d in found if d.error is None]
    if limit and len(docs) > limit:
        docs = sorted(docs, key=lambda item: stable_share(item[1].id, "image-bench"))[:limit]
        docs.sort(key=lambda item: (item[0], item[1].row))
    kept, images = [], []
    for rel, doc in tqdm(docs, desc=desc, unit="img", leave=False):
        decoded = decode(doc.media)
        if decoded.image is not None:
            kept.append((rel, doc))
            images.append(decoded.image)
    if not kept:
        raise CurateError(f"{root}: no readable images")
    pixels = crops(images, loaded.image)
    labels = np.array([str(doc.record.get("label", "")) for _, doc in kept])
    return ImageSet(pixels, labels), [d for _, d in kept]


def imagenet_classes(labels: np.ndarray, shards: list[Path], root: Path) -> np.ndarray:
    """Each image's ImageNet class index: integer labels as they are (a parquet ImageNet), else
    the class folder's index by classes.tsv or sorted folder names, as `curate top1` maps it."""
    if all(label.isdigit() for label in labels):
        return labels.astype(np.int64)
    index = class_index(root, [s.name for s in shards], 1000)
    return np.array([index[label] for label in labels])


def write_pool(docs: list, folder: Path) -> None:
    """The pool's images as parquet shards in the Hugging Face `Image` layout (id, image,
    label): the filter stage's input, in the order of the pool tensor. Written whole or not at
    all; kept when complete, and refused when complete for another pool (the runs, side files
    and prototypes under the same folder were made from that one)."""
    digest = hashlib.sha256("\n".join(d.id for d in docs).encode()).hexdigest()
    done = folder / "_complete"
    if done.is_file():
        if done.read_text() != digest:
            raise CurateError(
                f"{folder.parent.parent} was started on another pool (other images, or another "
                "--downstream test split left out): resume it with the same inputs, or give a "
                "new --out"
            )
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i in range(0, len(docs), POOL_SHARD_ROWS):
        part = docs[i : i + POOL_SHARD_ROWS]
        table = pa.table(
            {
                "id": [d.id for d in part],
                "image": [{"bytes": d.media, "path": None} for d in part],
                "label": [str(d.record.get("label", "")) for d in part],
            }
        )
        with atomic_path(folder / f"part-{i // POOL_SHARD_ROWS:05d}.parquet") as tmp:
            pq.write_table(table, tmp)
    done.write_text(digest)


# ------------------------------------------------------------------------------- model


class Net(torch.nn.Module):
    """The classifier's logits and its pooled features from one forward."""

    def __init__(self, loaded: LoadedModel):
        super().__init__()
        self.net = loaded.model.net
        self.spec = loaded.image

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.net.extract_features(normalize(pixels, self.spec))
        pooled = self.net._avg_pooling(features).flatten(1)
        return self.net._fc(self.net._dropout(pooled)), pooled


def augment(pixels: torch.Tensor, scale: float, generator: torch.Generator) -> torch.Tensor:
    """A random resized crop (area share in [scale, 1], aspect in [3/4, 4/3]) and a random
    horizontal flip of each uint8 image, back at its size (float32, 0-255)."""
    n, _, side, _ = pixels.shape
    out = torch.empty(pixels.shape, dtype=torch.float32)
    draws = torch.rand((n, 5), generator=generator)
    for i in range(n):
        area = scale + (1 - scale) * float(draws[i, 0])
        aspect = math.exp(math.log(3 / 4) + math.log(16 / 9) * float(draws[i, 1]))
        w = min(side, max(1, round(side * math.sqrt(area * aspect))))
        h = min(side, max(1, round(side * math.sqrt(area / aspect))))
        top, left = int(draws[i, 2] * (side - h + 1)), int(draws[i, 3] * (side - w + 1))
        crop = pixels[i : i + 1, :, top : top + h, left : left + w].float()
        crop = F.interpolate(crop, size=(side, side), mode="bilinear", align_corners=False)
        out[i] = crop[0].flip(-1) if draws[i, 4] < 0.5 else crop[0]
    return out


@dataclass
class TrainResult:
    images: int  # images fed (steps x batch)
    steps: int
    epochs: float  # passes over the selection
    seconds: float
    images_per_second: float
    dtype: str
    losses: list[list[float]] = field(default_factory=list)  # [step, KL]

    def to_dict(self) -> dict:
        return asdict(self)


def distill(
    student: Net, teacher: Net, pool: torch.Tensor, images: int, config: ImageTrainConfig,
    seed: int, folder: Path, desc: str,
) -> TrainResult:  # fmt: skip
    """Train `student` for ceil(images / batch) steps on batches drawn from `pool`; checkpoints
    in `folder`/checkpoint and resumes from it."""
    steps = max(1, math.ceil(images / config.batch))
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    dtype = autocast_dtype(config.dtype)
    start, losses, spent = resume(folder / "checkpoint", student, optimizer)
    student.eval()  # batch-norm statistics and dropout stay as trained: small batches
    began = last_save = time.perf_counter()
    tau = config.temperature
    with tqdm(total=steps, initial=start, desc=desc, unit="step", leave=False) as bar:
        for step in range(start, steps):
            for group in optimizer.param_groups:
                group["lr"] = get_lr(step, steps, config)
            index = batch_indices(step, config.batch, len(pool), seed)
            batch = pool[index]
            generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
            with (
                torch.no_grad(),
                torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None),
            ):
                target = F.softmax(teacher(batch.float())[0].float() / tau, -1)
            with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                logits = student(augment(batch, config.crop_scale, generator))[0].float()
            loss = F.kl_div(F.log_softmax(logits / tau, -1), target, reduction="batchmean") * tau**2
            optimizer_step(loss, params, optimizer, config.grad_clip, losses, step, steps)
            bar.update(1)
            bar.set_postfix(kl=f"{loss.item():.4f}")
            if time.perf_counter() - last_save > config.checkpoint_seconds and step < steps - 1:
                save_checkpoint(
                    folder / "checkpoint",
                    student,
                    optimizer,
                    step + 1,
                    losses,
                    spent + time.perf_counter() - began,
                )
                last_save = time.perf_counter()
    elapsed = time.perf_counter() - began
    return TrainResult(
        images=steps * config.batch,
        steps=steps,
        epochs=steps * config.batch / len(pool),
        seconds=spent + elapsed,
        images_per_second=(steps - start) * config.batch / max(elapsed, 1e-9),
        dtype="bf16" if dtype is not None else "fp32",
        losses=losses,
    )


@torch.inference_mode()
def forward_all(net: Net, images: ImageSet, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(predicted ImageNet class, pooled features) of every image."""
    net.eval()
    predicted, features = [], []
    for start in range(0, len(images.pixels), batch):
        logits, pooled = net(images.pixels[start : start + batch].float())
        predicted.append(logits.argmax(1).numpy())
        features.append(pooled.float().numpy())
    return np.concatenate(predicted), np.concatenate(features)


# -------------------------------------------------------------------------------- bench


class ImageBench:
    """What every run shares: config, the teacher, the pool and the evaluation images."""

    def __init__(
        self, config: ImageBenchConfig, pool: Path, imagenet: Path, downstream: Path, out: Path
    ):
        lock_config(config, out)
        self.config, self.out, self.work = config, out, out / "work"
        self.loaded = load_model(config.model)
        if self.loaded.image is None or not hasattr(self.loaded.model, "net"):
            raise CurateError(
                f"{config.model} is no ImageNet classifier of the EfficientNet-Lite family"
            )
        self.teacher = Net(self.loaded).requires_grad_(False)
        self.downstream_shards = self._downstream_shards(downstream)
        if out.resolve().is_relative_to(pool.resolve()):
            raise CurateError(
                f"--out {out} lies inside --pool {pool}: its files would join the pool"
            )
        # evaluation images are never pool images: the downstream test split, the ImageNet folder
        tested = {s.resolve() for s in self.downstream_shards["test"]}
        evaluated = imagenet.resolve()
        pool_shards = [
            s
            for s in list_shards(pool)
            if s.resolve() not in tested and not s.resolve().is_relative_to(evaluated)
        ]
        if not pool_shards:
            raise CurateError(f"--pool {pool}: every shard is an evaluation shard")
        self.pool, pool_docs = read_images(
            pool_shards,
            shard_root(pool),
            self.loaded,
            config.pool.max_images,
            config.pool.image_key,
            "decode pool",
        )
        largest = max(config.token_grid)
        if len(self.pool.pixels) < largest:
            raise CurateError(
                f"the pool holds {len(self.pool.pixels):,} readable images, fewer than the largest "
                f"budget {largest:,} ({max(config.grid.multiples):g} x grid.budget): lower "
                "grid.budget or grid.multiples, or give a larger --pool"
            )
        self.pool_dir = self.work / "pool"
        write_pool(pool_docs, self.pool_dir)
        shards, root = list_shards(imagenet), shard_root(imagenet)
        limit = config.eval.imagenet_max
        self.imagenet, _ = read_images(shards, root, self.loaded, limit, desc="decode ImageNet")
        self.imagenet_truth = imagenet_classes(self.imagenet.labels, shards, root)
        self.downstream = self._downstream(downstream)

    @staticmethod
    def _downstream_shards(folder: Path) -> dict[str, list[Path]]:
        shards = list_shards(folder)
        root = shard_root(folder)
        sets = {
            name: [s for s in shards if s.relative_to(root).as_posix().startswith(name)]
            for name in ("train", "test")
        }
        if not sets["train"] or not sets["test"]:
            raise CurateError(
                f"--downstream {folder}: needs train and test image shards (paths starting with "
                "train and test: train-00.parquet, test/part-0.tar, ...)"
            )
        return sets

    def _downstream(self, folder: Path) -> dict[str, ImageSet]:
        e = self.config.eval
        limits = {"train": e.downstream_train, "test": e.downstream_test}
        root = shard_root(folder)
        return {
            name: read_images(shards, root, self.loaded, limits[name], desc=f"decode {name}")[0]
            for name, shards in self.downstream_shards.items()
        }

    def evaluate(self, net: Net) -> dict[str, np.ndarray]:
        """Per-example outputs: the ImageNet prediction, and the downstream probe's prediction
        and true-class probability on each test image."""
        predicted, _ = forward_all(net, self.imagenet)
        _, train_x = forward_all(net, self.downstream["train"])
        _, test_x = forward_all(net, self.downstream["test"])
        classes = sorted(set(self.downstream["train"].labels) | set(self.downstream["test"].labels))
        code = {c: i for i, c in enumerate(classes)}
        train_y = np.array([code[c] for c in self.downstream["train"].labels])
        test_y = np.array([code[c] for c in self.downstream["test"].labels])
        probe = linear_probe("classification", train_x, train_y, test_x, test_y)
        return {
            f"{IMAGENET}/predicted": predicted,
            f"{IMAGENET}/label": self.imagenet_truth,
            f"{DOWNSTREAM}/predicted": probe.predicted,
            f"{DOWNSTREAM}/label": test_y,
            f"{DOWNSTREAM}/true_probability": probe.true_probability,
        }

    def run(self, folder: Path, rows: list[int] | None, images: int, seed: int, desc: str) -> None:
        """Train a copy of the original on the pool rows `rows` for `images` images (T = 0:
        the original itself), evaluate, and record; a finished run is skipped."""
        if (folder / RUN_RECORD).is_file():
            return
        record: dict = {"tokens_requested": images, "seed": seed}
        net = self.teacher
        if rows is not None and not rows:
            raise CurateError(f"{desc}: the arm selected no images from the pool")
        if rows is not None:
            student = Net(
                replace(self.loaded, model=copy.deepcopy(self.loaded.model))
            ).requires_grad_(True)
            torch.manual_seed(seed)
            result = distill(
                student,
                self.teacher,
                self.pool.pixels[rows],
                images,
                self.config.train,
                seed,
                folder,
                desc,
            )
            record["train"] = result.to_dict() | {"tokens": result.images}
            labels = self.pool.labels[rows]
            names, counts = np.unique(labels, return_counts=True)
            record["selection"] = {
                "documents": len(rows),
                "tokens": len(rows),
                "labels": {str(n): int(c) for n, c in zip(names, counts, strict=True)},
            }
            net = student
        started = time.perf_counter()
        outputs = self.evaluate(net)
        record["eval_seconds"] = time.perf_counter() - started
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / OUTPUTS) as tmp, tmp.open("wb") as f:
            np.savez(f, **outputs)
        with atomic_path(folder / RUN_RECORD) as tmp:
            tmp.write_text(json.dumps(record, indent=1))
        shutil.rmtree(folder / "checkpoint", ignore_errors=True)

    # ---------------------------------------------------------------------------- arms

    def select(self, arm: str, images: int, seed: int) -> list[int]:
        """Pool rows of `arm`'s selection of `images` images."""
        n = len(self.pool.pixels)
        if arm == "unfiltered":
            return np.random.default_rng(seed).permutation(n)[:images].tolist()
        if arm == "prototypes":
            return self._prototype_order()[:images].tolist()
        from curate.pipeline import FilterJob
        from curate.pipeline import filter as run_filter

        result = run_filter(
            FilterJob(
                shards=self.pool_dir, recipe=arm, dry_run=True, budget=str(images), unit="images",
                seed=seed, scores=self.work / "scores", progress=False, modality="image",
            )
        )  # fmt: skip
        return sorted(
            self._pool_key(rel, int(row)) for rel, kept in result.kept_rows.items() for row in kept
        )

    def _pool_key(self, rel: str, row: int) -> int:
        """The pool tensor's index of row `row` of work/pool's shard `rel` (written in order)."""
        return int(rel.removeprefix("part-").removesuffix(".parquet")) * POOL_SHARD_ROWS + row

    def _prototype_order(self) -> np.ndarray:
        """Pool rows, farthest from their k-means prototype first (Sorscher et al. 2022's
        self-supervised prototype metric: hard examples first), in the original's pooled
        features (cosine, faiss k-means); cached."""
        path = self.work / "prototype-order.npy"
        if path.is_file():
            return np.load(path)
        import faiss

        _, feats = forward_all(self.teacher, self.pool)
        feats = feats / np.linalg.norm(feats, axis=1, keepdims=True).clip(min=1e-12)
        k = self.config.arms.prototypes or max(2, round(math.sqrt(len(feats))))
        kmeans = faiss.Kmeans(feats.shape[1], k, niter=25, seed=0, spherical=True)
        kmeans.train(feats.astype(np.float32))
        similarity, _ = kmeans.index.search(feats.astype(np.float32), 1)
        order = np.lexsort((np.arange(len(feats)), similarity[:, 0]))  # least similar first
        with atomic_path(path) as tmp, tmp.open("wb") as f:
            np.save(f, order)
        return order


# ------------------------------------------------------------------------------- report


def _eval_sets(outputs: dict) -> dict[str, dict]:
    sets = {}
    for name in (IMAGENET, DOWNSTREAM):
        sets[name] = {k.split("/", 1)[1]: v for k, v in outputs.items() if k.startswith(name + "/")}
    return sets


def write_image_report(bench: ImageBench, arm_names: list[str]) -> dict:
    """report.json, report.md and parity.png over the finished runs (as the text bench's)."""
    cfg = bench.config
    base, runs = text_report.collect(bench, arm_names, _eval_sets)
    sizes = {name: len(next(iter(v.values()))) for name, v in base[1].items()}
    draws = stats.Draws.make(sizes, cfg.grid.seeds, cfg.eval.replicates, seed=0)
    margins = {IMAGENET: cfg.eval.top1_margin, DOWNSTREAM: cfg.eval.downstream_margin}
    series = text_report.series_of(
        base, runs, draws, [(n, "accuracy", n, m) for n, m in margins.items()]
    )
    reference, budget = cfg.arms.reference, cfg.grid.budget
    gates = {s.name: text_report.sensitivity(s, reference, budget) for s in series}
    summary = {}
    for arm in arm_names:
        row = {}
        for s in series:
            result = text_report.compare(s, arm, reference, budget)
            result["resolved"] = gates[s.name]["resolved"]
            result["savings_resolved"] = gates[s.name]["savings_resolved"]
            row[s.name] = result
        top1, down = row.get(IMAGENET, {}), row.get(DOWNSTREAM, {})
        summary[arm] = {
            IMAGENET: top1.get("at_budget"),
            DOWNSTREAM: down.get("at_budget"),
            "tokens_to_parity": down.get("tokens_to_parity"),  # images, on the downstream task
            "token_savings": down.get("token_savings"),
            "token_savings_ci": down.get("token_savings_ci"),
            "not_reached": down.get("not_reached"),
            "savings_resolved": down.get("savings_resolved"),
            "imagenet_non_inferior": top1.get("non_inferior"),
            "metrics": row,
        }
    report = {
        "config": cfg.to_dict(),
        "unit": "images",
        "data": {
            "pool_images": len(bench.pool.pixels),
            "imagenet_images": len(bench.imagenet.labels),
            "downstream": {k: len(v.labels) for k, v in bench.downstream.items()},
        },
        "base": base[0],
        "sensitivity": gates,
        "runs": text_report.run_table(runs, [(n, "accuracy", n, 0.0) for n in margins]),
        "summary": summary,
    }
    header = [
        f"# Image continued-training bench: {cfg.name}",
        "",
        f"Model: `{cfg.model}` distilled from its frozen self on augmented pool images; arms "
        f"compared at B = {budget:,} images; grid {list(cfg.grid.multiples)} x B; "
        f"{cfg.grid.seeds} seeds; reference arm `{reference}`.",
        f"Pool: {len(bench.pool.pixels):,} images; ImageNet top-1 on "
        f"{len(bench.imagenet.labels):,} images; downstream linear probe trained on "
        f"{len(bench.downstream['train'].labels):,} and scored on "
        f"{len(bench.downstream['test'].labels):,} images.",
    ]
    text = text_report.verdict_markdown(report, header, reference, (IMAGENET, DOWNSTREAM), "images")
    text_report.write_text(bench.out / "report.json", json.dumps(report, indent=1, default=float))
    text_report.write_text(bench.out / "report.md", text)
    text_report.parity_plot(series, bench.out / "parity.png", reference, budget, unit="images")
    return report


def run_image_bench(
    config: ImageBenchConfig,
    pool: Path,
    imagenet: Path,
    downstream: Path,
    out: Path,
    progress: bool = True,
) -> dict:
    """Everything up to the report; returns the report dict."""
    bench = ImageBench(config, pool, imagenet, downstream, out)
    bench.run(out / "runs" / "base", None, 0, 0, "base eval")
    plan = [
        (s, a, t)
        for s in range(config.grid.seeds)
        for a in config.arms.names
        for t in config.token_grid
    ]
    for seed, arm, images in tqdm(plan, desc="bench runs", unit="run", disable=not progress):
        folder = out / "runs" / arm / f"T{images}" / f"seed{seed}"
        if (folder / RUN_RECORD).is_file():
            continue
        rows = bench.select(arm, images, seed)
        bench.run(folder, rows, images, seed, f"{arm} T={images:,} seed {seed}")
    return write_image_report(bench, list(config.arms.names))
