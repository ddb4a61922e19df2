"""The CPT harness: statistics against direct formulas, data hygiene, bad input, resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from curate.cpt import data, loop, model, stats
from curate.cpt.config import load_config
from curate.demo_tasks import build_demo_tasks
from probes.errors import CurateError

REPO = Path(__file__).resolve().parents[1]
MICRO = str(REPO / "tests" / "fixtures" / "micro-bench.toml")


def test_tokens_to_parity_interpolates_in_log_tokens_on_the_running_best():
    grid = np.array([1e3, 1e4, 1e5])
    curves = np.array([[0.5, 0.6, 0.7], [0.5, 0.7, 0.6], [0.66, 0.7, 0.8], [0.1, 0.2, 0.3]])
    found = stats.tokens_to_parity(grid, curves, np.full(4, 0.65), higher=True)
    assert found[0] == pytest.approx(10**4.5)  # halfway between 0.6 and 0.7 in log tokens
    assert found[1] == pytest.approx(10 ** (3 + 0.75))  # 0.5 -> 0.7 crosses 0.65 at 3/4
    assert found[2] == 1e3 and np.isinf(found[3])  # reached at once; never reached
    lower = stats.tokens_to_parity(grid, -curves[:1], np.array([-0.65]), higher=False)
    assert lower[0] == pytest.approx(10**4.5)  # a loss: lower is better


def _classification(n: int = 400, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n)
    predicted = np.where(rng.random(n) < 0.7, label, 1 - label)
    return {"label": label, "predicted": predicted, "true_probability": rng.uniform(0.2, 0.9, n)}


def _series(reference_curve: dict[int, float], noise: float = 0.01):
    """A lower-is-better metric whose reference arm has `reference_curve` (tokens -> loss)."""
    from curate.cpt.report import Series

    rng = np.random.default_rng(0)
    reps = {t: v + noise * rng.standard_normal(200) for t, v in reference_curve.items()}
    return Series(
        name="target",
        higher=False,
        margin=0.02,
        base=5.0 + noise * rng.standard_normal(200),
        arms={"unfiltered": reps},
        points={"unfiltered": dict(reference_curve)},
        base_point=5.0,
    )


def test_savings_need_the_reference_to_move_between_the_smallest_t_and_b():
    from curate.cpt.report import sensitivity

    moving = sensitivity(_series({10: 4.9, 100: 4.5, 300: 4.2}), "unfiltered", 100)
    assert moving["resolved"] and moving["savings_resolved"]
    assert moving["below_budget"]["change"] == pytest.approx(-0.4)
    # moves from T = 0 to the largest T, but is flat from the smallest T to B: no savings
    flat = sensitivity(_series({10: 4.5, 100: 4.5, 300: 4.2}), "unfiltered", 100)
    assert flat["resolved"] and not flat["savings_resolved"]
    assert flat["below_budget"]["verdict"] == "cannot resolve at this scale"
    still = sensitivity(_series({10: 5.0, 100: 5.0, 300: 5.0}), "unfiltered", 100)
    assert not still["resolved"] and not still["savings_resolved"]


def test_non_inferiority_verdicts_follow_the_confidence_interval_and_the_margin():
    """margin 0.02 on a loss: CI within it -> non-inferior; wholly beyond it -> inferior;
    across it -> neither (an arm is not called inferior on a CI that includes parity)."""
    from curate.cpt.report import compare

    series = _series({10: 4.9, 100: 4.5}, noise=0.001)
    rng = np.random.default_rng(1)
    for arm, shift, noise in (("close", 0.005, 0.001), ("worse", 0.1, 0.001), ("wide", 0.0, 0.05)):
        series.arms[arm] = {
            t: v + shift + noise * rng.standard_normal(200)
            for t, v in series.arms["unfiltered"].items()
        }
        series.points[arm] = {t: v + shift for t, v in series.points["unfiltered"].items()}
    verdicts = {
        arm: (m["non_inferior"], m["inferior"])
        for arm in ("close", "worse", "wide")
        for m in [compare(series, arm, "unfiltered", 100)]
    }
    assert verdicts == {"close": (True, False), "worse": (False, True), "wide": (False, False)}


def test_metrics_equal_their_direct_formulas_and_weights_act_as_repeats():
    out = _classification()
    y, p = out["label"] == 1, out["predicted"] == 1
    tp, tn, fp, fn = (int(x.sum()) for x in (p & y, ~p & ~y, p & ~y, ~p & y))
    ones = np.ones((1, len(y)))
    mcc = (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert stats.mcc(ones, out)[0] == pytest.approx(mcc)
    f1 = 2 * tp / (2 * tp + fp + fn)
    assert stats.f1_accuracy(ones, out)[0] == pytest.approx((f1 + (tp + tn) / len(y)) / 2)
    logloss = -np.log(out["true_probability"]).mean()
    assert stats.log_loss(ones, out)[0] == pytest.approx(logloss)
    weights = np.random.default_rng(1).integers(0, 3, len(y))
    repeated = {k: np.repeat(v, weights) for k, v in out.items()}
    for fn in (stats.accuracy, stats.mcc, stats.f1_accuracy, stats.log_loss):
        expect = fn(np.ones((1, int(weights.sum()))), repeated)[0]
        assert fn(weights[None].astype(float), out)[0] == pytest.approx(expect)
    scores = {"predicted": np.arange(50.0), "label": np.arange(50.0) ** 2}
    assert stats.pearson_spearman(np.ones((1, 50)), scores)[0] == pytest.approx(
        (np.corrcoef(scores["predicted"], scores["label"])[0, 1] + 1.0) / 2
    )


def test_paired_draws_give_zero_difference_for_identical_outputs_and_vary_otherwise():
    a, b = _classification(seed=0), _classification(seed=3)
    draws = stats.Draws.make({"task": 400}, n_seeds=3, replicates=200, seed=0)
    same = stats.replicates("accuracy", "task", [a, a, a], draws)
    assert np.array_equal(same, stats.replicates("accuracy", "task", [a, a, a], draws))
    other = stats.replicates("accuracy", "task", [b, b, b], draws)
    assert (same - other).std() > 0 and same.std() > 0


def _write_task(folder: Path, train: list[dict], validation: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("validation", validation)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder.parent


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"sentence": "ok", "label": 0.5}, "label 0.5 is not an integer class"),
        ({"text": "no sentence", "label": 1}, "expected `sentence`"),
        ({"sentence": "no label"}, "missing ['label']"),
        ({"sentence": "unlabelled", "label": -1}, "unlabelled row"),
    ],
)
def test_a_task_with_a_wrong_schema_is_refused_with_file_and_line(tmp_path, row, message):
    good = {"sentence": "a fine sentence", "label": 1}
    tasks = _write_task(tmp_path / "tasks" / "mine", [good, row], [good])
    with pytest.raises(CurateError) as err:
        data.load_tasks(tasks)
    assert "mine/train.jsonl:2" in str(err.value) and message in str(err.value)


def test_glue_names_get_their_metric_and_other_tasks_accuracy(tmp_path):
    row = {"sentence1": "a b c", "sentence2": "d e f", "label": 1}
    _write_task(tmp_path / "tasks" / "mrpc", [row], [row])
    _write_task(tmp_path / "tasks" / "custom", [row], [row])
    tasks = {t.name: t for t in data.load_tasks(tmp_path / "tasks")}
    assert tasks["mrpc"].metric == "f1_accuracy" and tasks["custom"].metric == "accuracy"
    assert tasks["custom"].validation.second == ["d e f"]


def test_pool_documents_sharing_an_ngram_with_validation_are_removed(tmp_path):
    from conftest import write_jsonl

    sentence = "the quick brown fox jumps over the lazy dog near the river"
    tasks = data.load_tasks(
        _write_task(
            tmp_path / "tasks" / "t",
            [{"sentence": "x", "label": 0}],
            [{"sentence": sentence, "label": 1}],
        )
    )
    docs = [
        {
            "id": "leak",
            "text": "Intro. The quick brown fox jumps over the lazy dog near the river bank.",
        },
        {"id": "near", "text": "the quick brown fox jumps over a lazy dog"},
        *({"id": f"d{i}", "text": f"unrelated text number {i}"} for i in range(20)),
    ]
    write_jsonl(tmp_path / "pool" / "a.jsonl", docs)
    split = data.split_pool(tmp_path / "pool", tmp_path / "work", tasks, 8, 0.3)
    assert split.counts["contaminated"] == 1 and split.counts["documents"] == 22
    kept = []
    for folder in (split.selection, split.generic):
        if (folder / "a.jsonl").is_file():
            kept += [
                json.loads(line)["id"] for line in (folder / "a.jsonl").read_text().splitlines()
            ]
    assert "leak" not in kept and "near" in kept and len(kept) == 21


def test_packed_rows_are_full_cls_to_sep_sequences():
    tokenizer = model.load_tokenizer("minilm-l6")
    ids = data.token_ids(tokenizer, ["one two three", "four five six seven eight nine ten"])
    seq, special = data.pack(ids, tokenizer, 8)
    assert seq.shape[1] == 8 and (seq[:, 0] == tokenizer.cls_token_id).all()
    assert (seq[:, -1] == tokenizer.sep_token_id).all()
    content = seq[~special].tolist()
    assert content[: len(ids[0]) + len(ids[1])] == ids[0] + ids[1]


@pytest.mark.parametrize(
    "model_section, message",
    [
        ('objective = "lstm"', "model.objective must be 'causal' or 'mlm'"),
        ("hidden = 64\n[eval]\nvalidation_max = 10", "eval.validation_max must be 0 \\(all\\)"),
        ('base = "smollm2-135m"', "set model.tokenizer = 'smollm2-135m'"),
    ],
)
def test_a_bench_config_with_a_bad_value_is_refused(tmp_path, model_section, message):
    path = tmp_path / "bad.toml"
    path.write_text(f'version = 1\ninclude = "tiny"\n[model]\n{model_section}\n')
    with pytest.raises(CurateError, match=message):
        load_config(str(path))


def test_an_existing_decoder_continues_with_its_own_lm_head():
    """model.base = smollm2-135m: the bench's loss is the checkpoint's own causal-LM loss."""
    from transformers import AutoModelForCausalLM

    from probes.models import resolve_model_path

    net = model.existing_model("smollm2-135m", model.CAUSAL, 0)
    tokenizer = model.load_tokenizer("smollm2-135m")
    ids = tokenizer("The capital of France is Paris, a large city.", return_tensors="pt")
    ids = ids["input_ids"]
    reference = AutoModelForCausalLM.from_pretrained(
        resolve_model_path("smollm2-135m"), local_files_only=True
    )
    with torch.no_grad():
        want = float(reference(ids, labels=ids).loss)
        inputs, positions, labels = loop.objective_batch(
            net, ids, torch.zeros_like(ids, dtype=torch.bool), 0.15, None, 0
        )
        got = float(net.token_losses(inputs, positions, labels).mean())
    assert got == pytest.approx(want, rel=1e-5) and want < 5  # a trained head, not a new one
    docs = data.token_ids(tokenizer, ["one two", "three four five six"])
    seq, special = data.pack(docs, tokenizer, 8)  # no [CLS]/[SEP] here: BOS ... EOS rows
    assert (seq[:, 0] == tokenizer.bos_token_id).all()
    assert (seq[:, -1] == tokenizer.eos_token_id).all()
    assert seq[~special].tolist()[: len(docs[0]) + len(docs[1])] == docs[0] + docs[1]


def test_an_encoder_is_refused_as_a_causal_base():
    with pytest.raises(CurateError, match="'bert' model, not a decoder"):
        model.existing_model("minilm-l6", model.CAUSAL, 0)


def test_validation_subsets_are_fixed_and_keep_examples_with_their_labels():
    split = data.Split([f"s{i}" for i in range(500)], None, np.arange(500))
    idx = data.fixed_subset(len(split), 120)
    assert len(idx) == 120 and np.array_equal(idx, data.fixed_subset(500, 120))
    assert np.array_equal(idx, np.unique(idx))  # sorted, no repeats
    sub = split.rows(idx)
    assert [int(f[1:]) for f in sub.first] == sub.label.tolist() == idx.tolist()
    assert np.array_equal(data.fixed_subset(500, 0), np.arange(500))  # 0: all
    assert np.array_equal(data.fixed_subset(80, 120), np.arange(80))


def test_finetuning_learns_a_task_and_leaves_the_checkpoint_unchanged():
    """eval.finetune / --finetune: a copy of the encoder plus a head is trained on the task."""
    from curate.cpt import glue

    rng = np.random.default_rng(0)
    nouns = ["film", "meal", "book", "song", "trip", "game"]
    words = {1: ["good", "great", "lovely"], 0: ["bad", "awful", "dull"]}

    def split(n: int) -> data.Split:
        labels = rng.integers(0, 2, n)
        first = [f"the {rng.choice(nouns)} was {rng.choice(words[int(y)])}" for y in labels]
        return data.Split(first, None, labels.astype(np.int64))

    task = data.Task("sentiment", "classification", "accuracy", split(240), split(60))
    tokenizer = model.load_tokenizer("minilm-l6")
    net = model.fresh_model(load_config(MICRO).model, tokenizer, 0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    out = glue.finetune_task(net, tokenizer, task, np.arange(240), epochs=4, lr=3e-3, seed=0)
    assert (out.predicted == task.validation.label).mean() >= 0.9
    assert out.true_probability.shape == (60,) and (out.true_probability > 0.5).mean() >= 0.9
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())


def test_causal_positions_predict_the_next_content_token():
    tokenizer = model.load_tokenizer("minilm-l6")
    config = load_config(MICRO)
    net = model.fresh_model(config.model, tokenizer, 0)
    assert net.causal and config.model.objective == model.CAUSAL
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    ids = torch.tensor([[cls, 11, 12, sep, 13, sep]])
    special = torch.tensor([[True, False, False, True, False, True]])
    _, positions, labels = loop.objective_batch(net, ids, special, 0.15, 0, 0)
    # a position predicts the token after it, and only content tokens are predicted
    assert positions.tolist() == [[True, True, False, True, False, False]]
    assert labels.tolist() == [11, 12, 13]


@pytest.mark.parametrize("objective", [model.CAUSAL, model.MLM])
def test_a_saved_model_loads_with_its_objective_and_the_same_loss(tmp_path, objective):
    from dataclasses import replace

    tokenizer = model.load_tokenizer("minilm-l6")
    config = replace(load_config(MICRO).model, objective=objective)
    seq, special = data.pack(
        data.token_ids(tokenizer, ["a few words for the loss, and a few more"] * 8),
        tokenizer,
        config.seq_len,
    )
    net = model.fresh_model(config, tokenizer, 0)
    model.save(net, tmp_path)
    loaded = model.load(tmp_path)
    assert loaded.causal == (objective == model.CAUSAL)
    before = loop.lm_loss(net, seq, special, tokenizer.mask_token_id)
    after = loop.lm_loss(loaded, seq, special, tokenizer.mask_token_id)
    assert torch.equal(before[1], after[1]) and torch.allclose(before[0], after[0])
    # an untrained model is near chance: about log(vocabulary) per predicted token
    per_token = float(before[0].sum() / before[1].sum())
    assert abs(per_token - np.log(len(tokenizer))) < 1.0


def test_training_resumes_from_a_checkpoint_to_the_same_weights(tmp_path, monkeypatch):
    tokenizer = model.load_tokenizer("minilm-l6")
    config = load_config(MICRO)
    seq, special = data.pack(
        data.token_ids(tokenizer, ["some words to learn from, again and again"] * 40),
        tokenizer,
        config.model.seq_len,
    )
    tokens = 12 * config.train.batch * (config.model.seq_len - 2)
    every_step = loop.TrainConfig(**{**config.train.__dict__, "checkpoint_seconds": 0.0})
    mask = tokenizer.mask_token_id
    straight = model.fresh_model(config.model, tokenizer, 0)
    torch.manual_seed(3)
    loop.train(straight, seq, special, tokens, every_step, 3, tmp_path / "a", mask)
    lr = loop.get_lr

    def interrupted(step, steps, cfg):
        if step == 7:
            raise KeyboardInterrupt  # killed at the start of step 7
        return lr(step, steps, cfg)

    monkeypatch.setattr(loop, "get_lr", interrupted)
    killed = model.fresh_model(config.model, tokenizer, 0)
    torch.manual_seed(3)
    with pytest.raises(KeyboardInterrupt):
        loop.train(killed, seq, special, tokens, every_step, 3, tmp_path / "b", mask)
    monkeypatch.setattr(loop, "get_lr", lr)
    state = tmp_path / "b" / loop.CHECKPOINT / "state.json"
    assert json.loads(state.read_text())["step"] == 7
    resumed = model.fresh_model(config.model, tokenizer, 0)
    torch.manual_seed(99)  # the checkpoint's random state wins
    result = loop.train(resumed, seq, special, tokens, every_step, 3, tmp_path / "b", mask)
    assert result.steps == 12
    for (name, a), (_, b) in zip(
        straight.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


@pytest.fixture(scope="module")
def demo_bench_inputs(tmp_path_factory):
    from curate.demo_shards import build_demo_shards

    base = tmp_path_factory.mktemp("bench")
    shards = build_demo_shards(base / "shards", docs_per_shard=60)
    return shards, build_demo_tasks(shards, base / "tasks")


def test_a_pool_smaller_than_the_largest_budget_is_refused(demo_bench_inputs, tmp_path):
    from curate.pipeline import BenchJob, bench

    shards, tasks = demo_bench_inputs
    big = tmp_path / "big.toml"
    big.write_text(f'version = 1\ninclude = "{MICRO}"\n[grid]\nbudget = 5_000_000\n')
    with pytest.raises(CurateError, match="fewer than the largest budget 5,000,000"):
        bench(BenchJob(shards, tasks, tmp_path / "out", str(big), progress=False))


def test_a_report_folder_refuses_another_config(demo_bench_inputs, tmp_path):
    """Resuming (or reporting) under a changed grid or margin would mix runs of two configs."""
    from dataclasses import replace

    from curate.cpt.bench import Bench

    shards, tasks = demo_bench_inputs
    config = load_config(MICRO)
    Bench(config, shards, tasks, tmp_path / "out")
    Bench(replace(config, description="same runs"), shards, tasks, tmp_path / "out")
    moved = replace(config, eval=replace(config.eval, glue_margin=0.05))
    with pytest.raises(CurateError, match=r"eval.glue_margin: 0.01 then, 0.05 now"):
        Bench(moved, shards, tasks, tmp_path / "out")


@pytest.mark.slow
def test_a_killed_bench_resumes_and_never_redoes_a_finished_run(demo_bench_inputs, tmp_path):
    shards, tasks = demo_bench_inputs
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "curate.cli",
        "bench",
        "--pool",
        str(shards),
        "--tasks",
        str(tasks),
    ]
    cmd += ["--out", str(out), "--config", MICRO]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and len(list(out.glob("runs/*/T*/seed*/run.json"))) < 1:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in out.glob("runs/**/run.json")}
    assert finished and not (out / "report.json").exists()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())  # not redone
    report = json.loads((out / "report.json").read_text())
    assert {r["arm"] for r in report["runs"]} == {"unfiltered", "rosetta"}
    assert len(report["runs"]) == 4 and set(report["summary"]) == {"unfiltered", "rosetta"}
    assert "target" in report["sensitivity"] and (out / "parity.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(out.glob("runs/**/checkpoint"))  # finished runs keep no checkpoint


@pytest.mark.slow
def test_a_prepared_bench_trains_in_worker_processes_from_its_own_selections(
    demo_bench_inputs, tmp_path
):
    """--prepare makes every run's selection and trains nothing; worker processes then train
    those selections (no probe model needed), as one process would."""
    import shutil

    from curate.pipeline import BenchJob, bench

    shards, tasks = demo_bench_inputs
    out = tmp_path / "out"
    assert bench(BenchJob(shards, tasks, out, MICRO, progress=False, prepare=True)) is None
    selections = sorted(out.glob("runs/*/T*/seed*/selection.json"))
    assert len(selections) == 4 and not (out / "work" / "base").exists()
    assert (out / "work" / "tokenizer" / "tokenizer_config.json").is_file()
    written = {p: p.stat().st_mtime_ns for p in [*selections, *out.glob("work/scores/**/*")]}
    alone = tmp_path / "alone"
    shutil.copytree(out, alone)
    report = bench(BenchJob(shards, tasks, out, MICRO, progress=False, workers=2))
    bench(BenchJob(shards, tasks, alone, MICRO, progress=False))
    assert len(report["runs"]) == 4
    assert all(p.stat().st_mtime_ns == t for p, t in written.items())  # selections reused
    for path in selections:
        run = path.parent
        rows = json.loads(path.read_text())["rows"]
        record = json.loads((run / "run.json").read_text())
        assert record["device"] == "cpu" and record["selection"]["documents"] == len(rows)
        mine = np.load(run / "outputs.npz")
        other = np.load(alone / run.relative_to(out) / "outputs.npz")
        loss = mine["target/loss_sum"]
        np.testing.assert_allclose(loss, other["target/loss_sum"], rtol=1e-3)


def test_a_device_this_machine_lacks_is_refused_before_any_work(demo_bench_inputs, tmp_path):
    from curate.pipeline import BenchJob, bench

    shards, tasks = demo_bench_inputs
    bad = "cuda" if not torch.cuda.is_available() else "tpu"
    with pytest.raises(CurateError, match=f"--device {bad}"):
        bench(BenchJob(shards, tasks, tmp_path / "out", MICRO, progress=False, device=bad))
    assert not (tmp_path / "out").exists()
