"""The datatrove plan (score -> per-rank stats -> one global cut -> filter) keeps exactly what
`curate filter` keeps for the same recipe."""

import copy
import gzip
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from datatrove.data import Document
from datatrove.executor import LocalPipelineExecutor
from small_corpus import scored_small_corpus

from curate.datatrove_steps import (
    PLAN_FILE,
    BudgetFilter,
    BudgetPlan,
    RosettaScorer,
    ScoreStats,
    plan_stages,
)
from curate.pipeline import FilterJob, filter
from filters.recipe import load_recipe
from probes.storage import as_path


def _kept_ids(folder: Path) -> set[str]:
    ids = set()
    for path in folder.rglob("*.jsonl.gz"):
        with path.open("rb") as raw, gzip.open(raw, "rt") as f:
            ids.update(json.loads(line)["id"] for line in f)
    return ids


def _pipeline(shards: Path, work: Path, recipe, executor, **kwargs):
    stages = plan_stages(str(shards), str(work), recipe)
    one_task = {"tasks": 1, "workers": 1}
    for i, (steps, options) in enumerate(zip(stages, [{}, one_task, {}], strict=True), 1):
        executor(steps, logging_dir=str(work / f"logs{i}"), **{**kwargs, **options}).run()
    return json.loads((work / "plan" / PLAN_FILE).read_text())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    shards, scores = scored_small_corpus()
    recipe = load_recipe("rosetta-diverse").replace(quotas={"caps": {"topics": 0.4}})
    out = tmp_path_factory.mktemp("ref")
    result = filter(FilterJob(shards, recipe, out / "out", scores=scores, progress=False))
    manifest, plan = result.manifest, result.selection
    kept = {i for i, k in zip(plan_ids(shards, scores), plan.keep, strict=True) if k}
    return shards, recipe, manifest, kept


def plan_ids(shards: Path, scores: Path) -> list[str]:
    """Document ids in selection row order (shard, then row), from the side files."""
    import pyarrow.parquet as pq

    from filters.rows import open_side_files

    corpus = open_side_files(shards, scores)
    return [i for path in corpus.side_paths for i in pq.read_table(path)["id"].to_pylist()]


def test_local_executor_two_tasks_keeps_what_curate_filter_keeps(reference, tmp_path):
    shards, recipe, manifest, kept = reference
    assert 0 < len(kept) < manifest["input_docs"]
    assert manifest["dropped"].get("cluster_cap", 0) + manifest["dropped"].get("source_cap", 0) > 0
    plan = _pipeline(shards, tmp_path, recipe, LocalPipelineExecutor, tasks=2, workers=2)
    assert len(list((tmp_path / "stats").glob("*.parquet"))) == 2
    assert plan["kept_tokens"] == manifest["kept_tokens"]
    assert plan["budget_tokens"] == manifest["budget_tokens"]
    assert _kept_ids(tmp_path / "kept") == kept
    tagged = next((tmp_path / "tagged").glob("*.jsonl.gz"))
    first = json.loads(gzip.open(tagged, "rt").readline())
    assert first["metadata"]["n_tokens"] > 0 and isinstance(
        first["metadata"]["rosetta_score"], float
    )


def test_the_plan_runs_with_shards_statistics_and_outputs_in_a_bucket(reference, s3):
    """Every step's path an s3:// URL (tests/s3_server.py), the logs too: same kept set, the
    steps pickled to 2 worker processes that reach the store from the environment. Spawned:
    a forkserver started by an earlier test would hand its workers the environment of before
    the store's variables were set."""
    shards, recipe, manifest, kept = reference
    corpus = as_path(s3.upload(shards, "dt-corpus"))
    work = as_path(f"s3://{s3.bucket}/dt")
    kwargs = {"tasks": 2, "workers": 2, "start_method": "spawn"}
    plan = _pipeline(corpus, work, recipe, LocalPipelineExecutor, **kwargs)
    assert plan["kept_tokens"] == manifest["kept_tokens"]
    assert _kept_ids(work / "kept") == kept
    assert sorted(s3.objects("dt/stats/")) == ["dt/stats/00000.parquet", "dt/stats/00001.parquet"]
    assert "dt/plan/plan.json" in s3.objects("dt/plan/")


def test_threads_caps_the_workers_model_threads(demo_texts):
    """N workers on one node share its cores: each worker's model runs `threads` threads."""
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        scorer = RosettaScorer(load_recipe("rosetta-default"), threads=1)
        assert _score(scorer, demo_texts[:2])[0]["n_tokens"] > 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_a_scorer_with_a_loaded_model_ships_without_weights_and_scores_alike(demo_texts):
    """Executors send steps to workers through the pickle protocol (deepcopy uses it too): the
    loaded model must not travel, and the copy must score exactly as the original."""
    texts = demo_texts[:6]
    scorer = RosettaScorer(load_recipe("rosetta-default"))
    scored = _score(scorer, texts)
    assert all(m["n_tokens"] > 0 and isinstance(m["rosetta_score"], float) for m in scored)
    size = len(pickle.dumps(scorer))
    assert size < 1_000_000, f"{size:,} bytes: model weights travel with the step"
    clone = copy.deepcopy(scorer)
    assert _score(clone, texts) == scored


def _score(scorer: RosettaScorer, texts: list[str]) -> list[dict]:
    docs = [Document(text=t, id=str(i), metadata={"file_path": "a"}) for i, t in enumerate(texts)]
    return [doc.metadata for doc in scorer.run(docs)]


@pytest.mark.slow
def test_ray_executor_keeps_what_curate_filter_keeps(reference, tmp_path):
    ray = pytest.importorskip("ray", reason="ray is an optional extra")
    from datatrove.executor.ray import RayPipelineExecutor

    shards, recipe, manifest, kept = reference
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        plan = _pipeline(
            shards, tmp_path, recipe, RayPipelineExecutor, tasks=2, workers=2, mem_per_cpu_gb=0.5
        )
    finally:
        ray.shutdown()
    assert plan["kept_tokens"] == manifest["kept_tokens"]
    assert _kept_ids(tmp_path / "kept") == kept


@pytest.mark.parametrize("name", ["rosetta-default", "rosetta-sample", "rosetta-diverse", "random"])
def test_serialized_cut_decides_each_document_like_the_selection(name):
    from filters.rows import assign_sources, open_side_files, read_side_files
    from filters.rule import CutSpec
    from filters.select import REASONS
    from filters.selection import select_exact

    shards, scores = scored_small_corpus()
    recipe = load_recipe(name).replace(select={"budget": "35%"})
    corpus = open_side_files(shards, scores)
    rows = read_side_files(corpus)
    assign_sources(corpus, rows, "directory")
    chosen = select_exact(corpus, rows, recipe)
    spec = CutSpec.from_dict(json.loads(json.dumps(chosen.spec.to_dict())))
    reasons = spec.decide(rows, [corpus.sources[s] for s in rows.source])
    assert (reasons == 0).tolist() == chosen.keep.tolist()
    # one document alone cannot tell a closed cap from the budget: both read "budget"
    capped = np.isin(chosen.reason, [REASONS.index("source_cap"), REASONS.index("cluster_cap")])
    expected = np.where(capped, REASONS.index("budget"), chosen.reason)
    assert reasons.tolist() == expected.tolist()


def test_a_recipe_that_needs_the_text_is_refused_before_any_work(tmp_path):
    from probes.errors import CurateError

    recipe = load_recipe("dsir").replace(dsir={"target": str(tmp_path)})
    for make in (
        lambda: ScoreStats(str(tmp_path / "stats"), recipe),
        lambda: BudgetPlan(str(tmp_path / "stats"), str(tmp_path / "plan"), recipe),
        lambda: BudgetFilter(str(tmp_path / "plan"), recipe),
    ):
        with pytest.raises(CurateError, match="'dsir' needs features of the whole corpus"):
            make()
    assert not any(tmp_path.iterdir())
