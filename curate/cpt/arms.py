"""The arms `curate bench` compares: each selects T tokens of the selection pool for a seed.

Arms are recipes run through the filter stage (`curate.pipeline.filter`, as a dry run: only the
kept rows are needed). The built-in names derive their recipe from the bundled ones; any other
name is a recipe (bundled name or TOML path). `length-matched` is the one arm that is not a
recipe: random documents drawn per length bin to the Rosetta selection's token distribution.
"""

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from curate.cpt.config import BenchConfig
from curate.pipeline import FilterJob, TopJob, filter, top
from filters.recipe import Recipe, load_recipe
from filters.select import nearest_prefix
from probes import neuronset
from probes.neuronset import load_neuron_set

LENGTH_BINS = 10


@dataclass
class RecipeArm:
    name: str
    recipe: Recipe
    bench: object  # curate.cpt.bench.Bench
    # run: the run's seed (random keys nest across budgets); budget: fresh draws per budget
    seeding: str = "run"

    def select(self, tokens: int, seed: int):
        from curate.cpt.bench import Selection

        chosen = {"run": seed, "budget": zlib.crc32(f"{seed}:{tokens}".encode())}
        result = filter(
            FilterJob(
                self.bench.split.selection,
                self.recipe,
                dry_run=True,
                budget=str(tokens),
                scores=self.bench.work / "scores",
                seed=chosen[self.seeding],
                progress=False,
            )
        )
        return Selection(self.bench.pool.rows(result.kept_rows), result.manifest)


@dataclass
class LengthMatchedArm:
    """Uniformly random documents, drawn bin by bin to the reference arm's token counts per
    length decile of the pool: what a Rosetta selection would be if only length mattered."""

    name: str
    reference: RecipeArm
    bench: object

    def select(self, tokens: int, seed: int):
        from curate.cpt.bench import Selection

        pool = self.bench.pool
        keys = sorted(pool.ids)
        lengths = np.array([len(pool.ids[k]) for k in keys])
        edges = np.quantile(lengths, np.linspace(0, 1, LENGTH_BINS + 1)[1:-1])
        bin_of = np.searchsorted(edges, lengths, side="right")
        index = {k: i for i, k in enumerate(keys)}
        wanted = np.zeros(LENGTH_BINS, np.int64)
        for key in self.reference.select(tokens, seed).rows:
            wanted[bin_of[index[key]]] += lengths[index[key]]
        rng = np.random.default_rng([seed, tokens])
        rows = []
        for b in range(LENGTH_BINS):
            members = rng.permutation(np.flatnonzero(bin_of == b))
            take = nearest_prefix(lengths[members], int(wanted[b]))
            rows += [keys[i] for i in sorted(members[:take])]
        return Selection(sorted(rows))


def _weights_on(recipe: Recipe, columns: dict[str, float]) -> Recipe:
    """The recipe scored by `columns` only (every other neuron of its set weighted 0)."""
    everything = [n.column for n in load_neuron_set(recipe.probe.neurons).neurons]
    weights = {c: columns.get(c, 0.0) for c in everything}
    return recipe.replace(score={"weights": weights})


def _top_ranked(recipe: Recipe, k: int) -> dict[str, float]:
    """The k best-ranked neurons of the recipe's set, with their own weights."""
    ranked = load_neuron_set(recipe.probe.neurons).neurons[:k]
    return {n.column: n.weight for n in ranked}


def _target_selective(recipe: Recipe, bench, k: int) -> dict[str, float]:
    """The k neurons most selective for the tasks' text versus the pool (Cohen's d)."""
    out = bench.work / "rosetta-target-neurons"
    if not (out / neuronset.META).is_file():
        top(
            TopJob(
                neurons=Path(recipe.probe.neurons),
                target=bench.targets.select_dir,
                background=bench.split.selection,
                out=out,
                k=k,
                force=True,
                command="curate bench (rosetta-target arm)",
            )
        )
    chosen = neuronset.read(out)
    return {f"L{r['layer']}N{r['index']}": r["weight"] for r in chosen.rows()}


def build(config: BenchConfig, bench) -> list:
    """The configured arms, in order."""
    rosetta = load_recipe(config.arms.rosetta_recipe)
    k = config.arms.top_neurons
    random = load_recipe("random")
    makers = {
        "unfiltered": lambda: RecipeArm(
            "unfiltered", random.replace(select={"min_tokens": 0}), bench
        ),
        "random": lambda: RecipeArm("random", random, bench, "budget"),
        "dsir": lambda: RecipeArm(
            "dsir",
            load_recipe("dsir").replace(dsir={"target": str(bench.targets.select_dir)}),
            bench,
        ),
        "rosetta": lambda: RecipeArm("rosetta", rosetta, bench),
        "rosetta-top10": lambda: RecipeArm(
            "rosetta-top10", _weights_on(rosetta, _top_ranked(rosetta, k)), bench
        ),
        "rosetta-target": lambda: RecipeArm(
            "rosetta-target", _weights_on(rosetta, _target_selective(rosetta, bench, k)), bench
        ),
    }
    arms = []
    for name in config.arms.names:
        if name == "length-matched":
            arms.append(LengthMatchedArm(name, makers["rosetta"](), bench))
        elif name in makers:
            arms.append(makers[name]())
        else:
            recipe = load_recipe(name)
            arms.append(RecipeArm(recipe.name or name, recipe, bench))
    return arms
