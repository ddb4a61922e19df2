"""Which base leaves the unigram plateau? The bench's objectives pre-trained side by side.

Why: `curate bench` can only compare arms if its base model still learns from a few hundred
thousand tokens; a masked-LM BERT of the default size sat at the unigram plateau (loss ~7.1)
for 2M tokens. This pre-trains each objective of the default config from scratch on the same
packed text (../shared/data/corpus when present, else the demo corpus) with the bench's own
training loop and schedule, and reports each objective's training-loss curve, its loss on
held-out text at the end and its tokens/s. (The two losses are per predicted token: the next
token for causal, a masked token for the masked LM; both start at ln(vocabulary) ~ 10.3 and
the unigram plateau is ~7.) `--existing smollm2-135m` adds a pretrained decoder continued on
the same text with its own head (option (a) of the harness issue): its held-out loss before and
after `--existing-steps` steps, and its tokens/s, the price of that base on this machine.

    python benchmarks/bench_base.py [--config default] [--steps 100] [--existing smollm2-135m]

Last line: JSON with, per objective, [tokens, training loss] pairs, held-out loss and tok/s.
"""

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from bench_train import texts  # benchmarks/ is the script's folder

from curate.cpt import data, loop, model
from curate.cpt.config import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="default")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--existing", action="append", default=[], help="a pretrained decoder")
    parser.add_argument("--existing-steps", type=int, default=8)
    args = parser.parse_args()
    config = load_config(args.config)
    tokenizer = model.load_tokenizer(config.model.tokenizer)
    docs = texts(1200)
    held_out, train_docs = docs[::10], [d for i, d in enumerate(docs) if i % 10]
    seq, special = data.pack(data.token_ids(tokenizer, train_docs), tokenizer, config.model.seq_len)
    held_seq, held_special = data.pack(
        data.token_ids(tokenizer, held_out), tokenizer, config.model.seq_len
    )
    held_seq, held_special = held_seq[:64], held_special[:64]
    per_step = config.train.batch * (config.model.seq_len - 2)
    result: dict = {"config": args.config, "threads": torch.get_num_threads(), "curves": {}}
    for objective in (model.CAUSAL, model.MLM):
        shape = replace(config.model, objective=objective)
        if objective == model.MLM:
            shape = replace(shape, mlp=config.model.mlp * 3 // 2)  # GELU: two matrices, not three
        net = model.fresh_model(shape, tokenizer, 0)
        train = loop.TrainConfig(lr=config.pretrain.lr, checkpoint_seconds=1e9)
        folder = Path(tempfile.mkdtemp())
        run = loop.train(
            net, seq, special, args.steps * per_step, train, 0, folder, tokenizer.mask_token_id
        )
        sums, counts = loop.lm_loss(net, held_seq, held_special, tokenizer.mask_token_id)
        curve = [[step * per_step, round(loss, 3)] for step, loss in run.losses]
        held = round(float(sums.sum() / counts.sum()), 3)
        result["curves"][objective] = curve
        result[f"heldout_{objective}"] = held
        result[f"tok_s_{objective}"] = round(run.tokens_per_second)
        last = " ".join(f"{loss:.2f}" for _, loss in curve[-5:])
        print(f"{objective}: last training losses {last}; held-out {held:.3f}", flush=True)
    for name in args.existing:
        result["existing"] = result.get("existing", {})
        result["existing"][name] = continued(name, train_docs, held_out, config, args)
        print(f"{name}: {result['existing'][name]}", flush=True)
    print(json.dumps(result))


def continued(name: str, train_docs, held_out, config, args) -> dict:
    """Held-out loss of a pretrained decoder before and after a few steps on the same text."""
    tokenizer = model.load_tokenizer(name)
    net = model.existing_model(name, model.CAUSAL, 0)
    seq_len = config.model.seq_len
    seq, special = data.pack(data.token_ids(tokenizer, train_docs), tokenizer, seq_len)
    held = data.pack(data.token_ids(tokenizer, held_out), tokenizer, seq_len)
    held = held[0][:64], held[1][:64]

    def held_loss() -> float:
        sums, counts = loop.lm_loss(net, *held, None)
        return round(float(sums.sum() / counts.sum()), 3)

    before = held_loss()
    tokens = args.existing_steps * config.train.batch * (seq_len - 2)
    train = loop.TrainConfig(lr=config.train.lr, checkpoint_seconds=1e9)
    run = loop.train(net, seq, special, tokens, train, 0, Path(tempfile.mkdtemp()), None)
    return {
        "tokens": tokens,
        "heldout_before": before,
        "heldout_after": held_loss(),
        "tok_s": round(run.tokens_per_second, 1),
    }


if __name__ == "__main__":
    main()
