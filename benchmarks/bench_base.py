"""Which base leaves the unigram plateau? The bench's objectives pre-trained side by side.

Why: `curate bench` can only compare arms if its base model still learns from a few hundred
thousand tokens; a masked-LM BERT of the default size sat at the unigram plateau (loss ~7.1)
for 2M tokens. This pre-trains each objective of the default config from scratch on the same
packed text (../shared/data/corpus when present, else the demo corpus) with the bench's own
training loop and schedule, and reports each objective's training-loss curve, its loss on
held-out text at the end and its tokens/s. (The two losses are per predicted token: the next
token for causal, a masked token for the masked LM; both start at ln(vocabulary) ~ 10.3 and
the unigram plateau is ~7.)

    python benchmarks/bench_base.py [--config default] [--steps 100]

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
    print(json.dumps(result))


if __name__ == "__main__":
    main()
