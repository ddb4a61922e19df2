"""Tokenize once, then batch by token count from length-sorted documents (little padding)."""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import BatchEncoding, PreTrainedTokenizerBase


@dataclass(frozen=True)
class TokenizedDoc:
    pos: int  # position in the chunk it came from
    ids: list[int]  # model input, special tokens included, truncated to the model's length
    special: list[int]  # 1 where ids holds a special token (excluded from scores)
    n_tokens: int  # content tokens of the whole document (before truncation): what budgets count
    truncated: bool


def tokenize(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int
) -> list[TokenizedDoc]:
    """Tokenize documents in one fast-tokenizer call; long documents are cut to `max_length`."""
    encoded = run_tokenizer(tokenizer, texts)
    pairs = zip(encoded["input_ids"], encoded["special_tokens_mask"], strict=True)
    return [cut(pos, ids, special, max_length) for pos, (ids, special) in enumerate(pairs)]


def run_tokenizer(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], offsets: bool = False
) -> BatchEncoding:
    """The one tokenizer call: full ids with special tokens and their mask (and, for alignment,
    character offsets), untruncated so that `cut` decides what the model sees."""
    return tokenizer(
        list(texts),
        add_special_tokens=True,
        return_special_tokens_mask=True,
        return_offsets_mapping=offsets,
        return_attention_mask=False,
        verbose=False,
    )


def cut(pos: int, ids: list[int], special: list[int], max_length: int) -> TokenizedDoc:
    """One document's model input from its full encoding, cut to `max_length` if longer.

    The cut keeps the trailing special tokens (e.g. [SEP]) that the model was trained to see.
    """
    n_content = len(special) - sum(special)
    truncated = len(ids) > max_length
    if truncated:
        tail = trailing_specials(special)
        keep = max_length - tail
        ids = ids[:keep] + ids[len(ids) - tail :]
        special = special[:keep] + special[len(special) - tail :]
    return TokenizedDoc(pos, ids, special, n_tokens=n_content, truncated=truncated)


def trailing_specials(special: list[int]) -> int:
    count = 0
    while count < len(special) and special[-1 - count]:
        count += 1
    return count


def length_sorted_batches(
    docs: Sequence[TokenizedDoc], tokens_per_batch: int
) -> Iterator[list[TokenizedDoc]]:
    """Group documents so that each padded batch holds at most `tokens_per_batch` tokens.

    Longest first: the largest allocation happens at once and later batches reuse it.
    """
    batch: list[TokenizedDoc] = []
    for doc in sorted(docs, key=lambda d: len(d.ids), reverse=True):
        width = len(batch[0].ids) if batch else len(doc.ids)
        if batch and width * (len(batch) + 1) > tokens_per_batch:
            yield batch
            batch = []
        batch.append(doc)
    if batch:
        yield batch


def pad(batch: Sequence[TokenizedDoc], pad_id: int) -> tuple[torch.Tensor, ...]:
    """Right-padded (input_ids, attention_mask, content_mask) tensors for one batch."""
    width = max(len(doc.ids) for doc in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    content = torch.zeros((len(batch), width), dtype=torch.bool)
    for row, doc in enumerate(batch):
        n = len(doc.ids)
        input_ids[row, :n] = torch.tensor(doc.ids)
        attention[row, :n] = 1
        content[row, :n] = torch.tensor(doc.special) == 0
    return input_ids, attention, content
