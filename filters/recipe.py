"""Filter recipes: TOML files loaded into typed, validated config.

A recipe may `include` a base recipe (a path relative to itself or a bundled recipe name); the
including file's tables are merged over the base's key by key. Every key is checked, so a typo
fails loudly, naming the key and the closest valid one, instead of silently using a default.
"""

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from filters.config import build, find_file, read_merged
from probes import sidefile
from probes.aggregate import AGGREGATIONS, DEFAULT_AGGREGATION
from probes.backends import BACKENDS
from probes.errors import CurateError
from probes.storage import as_path, resolved

RECIPE_VERSION = 1
RECIPES_DIR = Path(str(files("recipes")))  # package data: found in a wheel install too
MODES = ("topk", "threshold", "sample")
# select.unit per probe-model modality: "" is the side files' own (tokens, or pixels)
UNITS = {"text": ("", "tokens", "documents"), "image": ("", "pixels", "images")}
PER_ROW_UNITS = ("documents", "images")
ALL_UNITS = tuple(dict.fromkeys(UNITS["text"] + UNITS["image"]))
_SUFFIXES = {"k": 10**3, "m": 10**6, "b": 10**9, "t": 10**12}


@dataclass(frozen=True)
class Budget:
    """A token count, or a fraction of the corpus's tokens (resolved once the corpus is known)."""

    tokens: int | None = None
    fraction: float | None = None

    def resolve(self, corpus_tokens: int) -> int:
        if self.tokens is not None:
            return self.tokens
        return round(corpus_tokens * self.fraction)

    def __str__(self) -> str:
        return str(self.tokens) if self.tokens is not None else f"{self.fraction * 100:g}%"


def parse_budget(value: str | int) -> Budget:
    """`5000000`, `5M`, `2B`, `500k`, `1.5M` (tokens) or `30%` (of the corpus's tokens)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise CurateError(f"budget {value!r}: expected tokens (e.g. 5M, 2B) or a percentage")
    if isinstance(value, int):
        if value <= 0:
            raise CurateError(f"budget {value}: must be positive")
        return Budget(tokens=value)
    text = value.strip().replace("_", "").replace(",", "")
    if match := re.fullmatch(r"(\d+(?:\.\d+)?)%", text):
        pct = float(match[1])
        if not 0 < pct <= 100:
            raise CurateError(f"budget {value!r}: a percentage must be in (0, 100]")
        return Budget(fraction=pct / 100)
    if match := re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMbBtT]?)", text):
        tokens = round(float(match[1]) * _SUFFIXES.get(match[2].lower(), 1))
        if tokens <= 0:
            raise CurateError(f"budget {value!r}: must be positive")
        return Budget(tokens=tokens)
    raise CurateError(
        f"budget {value!r}: expected tokens (e.g. 5000000, 5M, 2B) or a percentage (30%)"
    )


@dataclass(frozen=True)
class ProbeConfig:
    """Which model, neurons and aggregation produce the score side files."""

    model: str = "minilm-l6"
    neurons: str = ""  # passed to load_neuron_set after resolve_neurons
    agg: str = DEFAULT_AGGREGATION
    text_key: str = "text"
    id_key: str = "id"
    on_error: str = "fail"
    image_key: str = "image"  # an image model's input field
    backend: str = "torch"  # what runs the model: probes/backends/ (torch, onnx)
    dtype: str = "auto"  # the backend's precision; auto: the fastest it runs exactly enough here


@dataclass(frozen=True)
class ScoreConfig:
    """How per-neuron columns become one document score."""

    method: str = "zsum"  # zsum: weighted sum of z-scored neuron columns; probe: side-file score
    weights: dict[str, float] = field(default_factory=dict)  # column (L3N17) -> weight


@dataclass(frozen=True)
class SelectConfig:
    mode: str = "topk"
    budget: str = "30%"
    temperature: float = 1.0  # sample mode: Gumbel noise scale relative to the score's spread
    threshold: float | None = None  # threshold mode: keep scores >= this (still capped by budget)
    tokenizer: str = ""  # "" = the probe model's; else a model alias or folder
    # What the budget counts: "" = the side files' unit (content tokens for text, pixels of the
    # original image for images), or one per row ("documents" / "images")
    unit: str = ""
    min_tokens: int = 0  # content tokens (pixels for images), whatever the budget counts
    max_tokens: int = 0  # 0 = no limit
    seed: int = 0
    # more rows than this: stream the side files and find the cut with a mergeable sketch
    exact_max_rows: int = 50_000_000


@dataclass(frozen=True)
class QuotaConfig:
    """Per-source caps, as fractions of the budget."""

    source: str = "directory"  # the shard's first directory, or a dotted record key
    caps: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class DiversityConfig:
    """k-means over z-scored neuron vectors; no cluster may take more than `cap` of the budget."""

    clusters: int = 0  # 0 = off
    cap: float = 0.25
    iterations: int = 20


@dataclass(frozen=True)
class DsirConfig:
    target: str = ""  # shard directory the selection should resemble (relative to the recipe)
    buckets: int = 10_000
    text_key: str = "text"


@dataclass(frozen=True)
class Recipe:
    version: int = RECIPE_VERSION
    name: str = ""
    description: str = ""
    probe: ProbeConfig = ProbeConfig()
    score: ScoreConfig = ScoreConfig()
    select: SelectConfig = SelectConfig()
    quotas: QuotaConfig = QuotaConfig()
    diversity: DiversityConfig = DiversityConfig()
    dsir: DsirConfig = DsirConfig()

    @property
    def budget(self) -> Budget:
        return parse_budget(self.select.budget)

    @property
    def needs_probe(self) -> bool:
        from filters.methods import METHODS

        chosen = METHODS.get(self.score.method)
        return bool(chosen and chosen.needs_probe) or self.diversity.clusters > 0

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe (includes applied), as recorded in manifests."""
        return dataclasses.asdict(self)

    def replace(self, **sections: dict[str, Any]) -> "Recipe":
        """A copy with some fields of some sections changed, e.g. select={"budget": "5M"}."""
        changed = {k: dataclasses.replace(getattr(self, k), **v) for k, v in sections.items()}
        recipe = dataclasses.replace(self, **changed)
        _check_values(recipe)
        return recipe


def bundled_recipes() -> list[Path]:
    """Recipes shipped with the tool (`recipes/*.toml`), selectable by name."""
    return sorted(RECIPES_DIR.glob("*.toml"))


def find_recipe(name_or_path: str) -> Path:
    """A recipe file: an existing path, or the name of a bundled recipe."""
    return find_file(name_or_path, RECIPES_DIR, "recipe")


def load_recipe(name_or_path: str) -> Recipe:
    """Read, merge includes, validate; relative paths inside are resolved against each file."""
    path = find_recipe(name_or_path).resolve()
    raw = read_merged(path, Recipe, find_recipe, _absolutize)
    version = raw.get("version", None)
    if version != RECIPE_VERSION:
        raise CurateError(
            f"{path}: version must be {RECIPE_VERSION} (got {version!r}); "
            "set `version = 1` at the top of the recipe"
        )
    recipe = build(Recipe, raw, str(path), **({} if "name" in raw else {"name": path.stem}))
    _check_values(recipe, str(path))
    return recipe


def _absolutize(raw: dict[str, Any], folder: Path) -> None:
    """Make file references relative to the recipe that wrote them, before merging."""
    probe = raw.get("probe")
    if isinstance(probe, dict) and isinstance(probe.get("neurons"), str):
        probe["neurons"] = resolve_neurons(probe["neurons"], folder)
    dsir = raw.get("dsir")
    if isinstance(dsir, dict) and isinstance(dsir.get("target"), str) and dsir["target"]:
        dsir["target"] = resolved(as_path(dsir["target"]), folder)


def resolve_neurons(spec: str, folder: Path) -> str:
    """Inline JSON as is; else a path relative to the recipe; else a probes/data resource."""
    if spec.lstrip().startswith("[") or not spec:
        return spec
    relative = folder / spec
    if relative.exists():
        return str(relative.resolve())
    resource = files("probes") / "data" / spec
    if resource.is_file() or resource.is_dir():
        return str(resource)
    return spec  # load_neuron_set reports it


def budget_unit(recipe: Recipe, modality: str) -> str:
    """The budget's unit in words (tokens, pixels, documents or images) for a corpus of
    `modality`; refuses a unit of the other modality (pixels of text, tokens of images)."""
    unit = recipe.select.unit or ("pixels" if modality == "image" else "tokens")
    if unit not in UNITS[modality]:
        raise CurateError(
            f"select.unit = {unit!r} does not count {modality} documents; use one of "
            f"{_choices(UNITS[modality])}"
        )
    if recipe.select.tokenizer and modality == "image":
        raise CurateError("select.tokenizer counts text tokens; leave it empty for images")
    return unit


def _choices(values: tuple[str, ...]) -> str:
    return ", ".join(json.dumps(v) for v in values)


def _check_values(recipe: Recipe, where: str = "recipe") -> None:
    """Field-level checks that types alone cannot express; each names its field."""
    from filters.methods import METHODS  # the registry imports row code; recipes load first

    p, s, sel, q, d = recipe.probe, recipe.score, recipe.select, recipe.quotas, recipe.diversity
    checks = [
        ("probe.agg", p.agg in AGGREGATIONS, f"one of {', '.join(AGGREGATIONS)}"),
        ("probe.on_error", p.on_error in ("fail", "skip"), "'fail' or 'skip'"),
        ("probe.backend", p.backend in BACKENDS, f"one of {', '.join(BACKENDS)}"),
        (
            "probe.dtype",
            p.backend not in BACKENDS or p.dtype in ("auto", *BACKENDS[p.backend].dtypes),
            f"one of auto, {', '.join(BACKENDS.get(p.backend, BACKENDS['torch']).dtypes)}",
        ),
        ("probe.neurons", bool(p.neurons) or not recipe.needs_probe, "a neuron set"),
        ("score.method", s.method in METHODS, f"one of {', '.join(METHODS)}"),
        (
            "score.weights",
            all(sidefile.is_column(k) for k in s.weights),
            "L<layer>N<index> keys",
        ),
        ("select.mode", sel.mode in MODES, f"one of {', '.join(MODES)}"),
        ("select.temperature", sel.temperature > 0 and math.isfinite(sel.temperature), "> 0"),
        (
            "select.threshold",
            sel.mode != "threshold" or sel.threshold is not None,
            "set for mode threshold",
        ),
        ("select.unit", sel.unit in ALL_UNITS, f"one of {_choices(ALL_UNITS)}"),
        ("select.min_tokens", sel.min_tokens >= 0, ">= 0"),
        ("select.max_tokens", sel.max_tokens >= 0, ">= 0 (0 = no limit)"),
        ("select.seed", sel.seed >= 0, ">= 0"),
        ("select.exact_max_rows", sel.exact_max_rows > 0, "> 0"),
        ("quotas.caps", all(0 < v <= 1 for v in q.caps.values()), "fractions in (0, 1]"),
        ("quotas.source", bool(q.source), "'directory' or a dotted record key"),
        ("diversity.clusters", d.clusters >= 0, ">= 0 (0 = off)"),
        ("diversity.cap", 0 < d.cap <= 1, "a fraction in (0, 1]"),
        ("diversity.iterations", d.iterations > 0, "> 0"),
        ("dsir.buckets", recipe.dsir.buckets > 0, "> 0"),
    ]
    for name, ok, expected in checks:
        if not ok:
            value = dataclasses.asdict(recipe)
            for part in name.split("."):
                value = value[part]
            raise CurateError(f"{where}: {name} must be {expected}, got {json.dumps(value)}")
    try:
        parse_budget(recipe.select.budget)
    except CurateError as exc:
        raise CurateError(f"{where}: select.budget: {exc}") from None
