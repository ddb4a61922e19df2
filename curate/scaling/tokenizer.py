"""A byte-level BPE vocabulary trained on the zoo's own documents.

With a 30k-word vocabulary, the output layer is most of a small model's FLOPs (see
benchmarks/RESULTS.md, training throughput); a few thousand merges learned from the zoo's
training texts make each member several times faster to train at the same widths, and every
member shares the one tokenizer, so only the MLP width and the seed differ between them.
"""

from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from probes.atomic import atomic_path

SPECIAL = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "mask_token": "<mask>"}


def train_tokenizer(texts: Sequence[str], vocab: int, folder: Path) -> PreTrainedTokenizerFast:
    """Train a `vocab`-token byte-level BPE on `texts` and save it (whole) as `folder`."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=True)  # offsets exclude the space
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=list(SPECIAL.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer, length=len(texts))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, **SPECIAL)
    with atomic_path(folder) as tmp:
        tokenizer.save_pretrained(tmp)
    return PreTrainedTokenizerFast.from_pretrained(folder)
