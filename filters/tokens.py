"""Token counts in a named tokenizer, so budgets can be set in the training model's units."""

from collections.abc import Callable

import numpy as np
from transformers import AutoTokenizer

from probes.errors import CurateError
from probes.models import resolve_model_path


def token_counter(name_or_path: str) -> Callable[[list[str]], np.ndarray]:
    """count(texts) -> content tokens per text (no special tokens), with the fast tokenizer of
    a model alias or folder."""
    path = resolve_model_path(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as err:
        raise CurateError(
            f"select.tokenizer {name_or_path!r}: no tokenizer in {path} ({err})"
        ) from err
    if not tokenizer.is_fast:
        raise CurateError(f"select.tokenizer {name_or_path!r}: {path} has no fast tokenizer")

    def count(texts: list[str]) -> np.ndarray:
        ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        return np.array([len(x) for x in ids], dtype=np.int64)

    return count
