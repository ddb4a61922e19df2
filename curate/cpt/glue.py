"""Frozen-encoder probes on GLUE-style tasks: what each checkpoint's features are worth.

A task's sentences (pairs encoded jointly, as BERT reads them) are mean-pooled from the last
layer, standardised on the probe's training examples, and fitted by L2-regularised logistic
regression (ridge regression for a regression task such as STS-B), deterministically with
L-BFGS, the penalty chosen by 3-fold cross-validation on the training examples. The outputs
kept per validation example let the statistics resample examples: the predicted class and the
probability of the true class, or the predicted score.
"""

from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from curate.cpt.data import Split, Task
from curate.cpt.loop import model_device
from curate.cpt.model import LanguageModel

MAX_LENGTH = 128
FINETUNED = "finetuned:"  # prefix of a task's outputs after fine-tuning the whole encoder
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # squared-norm penalties tried on standardised features
FOLDS = 3


@dataclass
class TaskOutput:
    """One checkpoint's probe on one task's validation set."""

    predicted: np.ndarray  # class per example (classification) or score (regression)
    true_probability: np.ndarray | None  # classification: probability given the true class


@torch.inference_mode()
def features(
    model: LanguageModel, tokenizer: PreTrainedTokenizerBase, split: Split, batch: int = 64
) -> np.ndarray:
    """[examples, hidden] mean-pooled last-layer states, in length-sorted batches."""
    model.eval()
    device = model_device(model)
    second = split.second or [""] * len(split.first)
    order = sorted(range(len(split.first)), key=lambda i: len(split.first[i]) + len(second[i]))
    out = np.zeros((len(split.first), model.encoder.config.hidden_size), dtype=np.float32)
    for start in range(0, len(order), batch):
        idx = np.array(order[start : start + batch])
        out[idx] = model.pooled(*_encode(tokenizer, split, idx, device)).float().cpu().numpy()
    return out


def _fit(a: torch.Tensor, y: torch.Tensor, kind: str, classes: int, l2: float):
    """Fitted probe weights on standardised features `a`: ridge (closed form) for regression,
    L2-regularised logistic regression (L-BFGS from zero: deterministic) for classes."""
    design = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype)], 1)
    if kind == "regression":
        penalty = l2 * len(a) * torch.eye(design.shape[1], dtype=a.dtype)
        penalty[-1, -1] = 0.0
        return torch.linalg.solve(design.T @ design + penalty, design.T @ y.double())
    w = torch.zeros(design.shape[1], classes, dtype=a.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [w], lr=1.0, max_iter=200, tolerance_grad=1e-7, line_search_fn="strong_wolfe"
    )

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(design @ w, y) + l2 * w[:-1].pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach()


def _predict(w: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    out = torch.cat([b, torch.ones(len(b), 1, dtype=b.dtype)], 1) @ w
    return out if kind == "regression" else torch.softmax(out, 1)


def _cv_loss(a: torch.Tensor, y: torch.Tensor, kind: str, classes: int, l2: float) -> float:
    """Mean validation loss over fixed folds (log-loss, or squared error)."""
    folds = torch.arange(len(a)) % FOLDS
    total = 0.0
    for k in range(FOLDS):
        fit, held = folds != k, folds == k
        pred = _predict(_fit(a[fit], y[fit], kind, classes, l2), a[held], kind)
        if kind == "regression":
            total += float(((pred - y[held]) ** 2).mean())
        else:
            total += float(-torch.log(pred[torch.arange(int(held.sum())), y[held]] + 1e-12).mean())
    return total / FOLDS


def fit_and_predict(task: Task, train_x: np.ndarray, val_x: np.ndarray, train_y: np.ndarray):
    """Fit the task's probe on (train_x, train_y), its L2 weight chosen by cross-validation on
    the training examples, and predict the validation features."""
    return linear_probe(task.kind, train_x, train_y, val_x, task.validation.label)


def linear_probe(
    kind: str, train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray
) -> TaskOutput:
    """The probe of any frozen features: standardised on the training examples, L2 weight by
    cross-validation there; `val_y` (the validation labels) gives the true-class probability."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    a = torch.from_numpy((train_x - mean) / std).double()
    b = torch.from_numpy((val_x - mean) / std).double()
    y = torch.from_numpy(train_y)
    classes = 1 if kind == "regression" else int(max(y.max(), val_y.max())) + 1
    l2 = min(L2_GRID, key=lambda c: _cv_loss(a, y, kind, classes, c))
    pred = _predict(_fit(a, y, kind, classes, l2), b, kind).numpy()
    if kind == "regression":
        return TaskOutput(pred, None)
    return TaskOutput(pred.argmax(1), pred[np.arange(len(val_y)), val_y])


def probe_task(
    model: LanguageModel,
    tokenizer: PreTrainedTokenizerBase,
    task: Task,
    train_rows: np.ndarray,
) -> TaskOutput:
    """Fit on the training rows `train_rows` of the task, predict its whole validation set."""
    train = task.train.rows(train_rows)
    train_x = features(model, tokenizer, train)
    val_x = features(model, tokenizer, task.validation)
    return fit_and_predict(task, train_x, val_x, train.label)


def finetune_task(
    model: LanguageModel,
    tokenizer: PreTrainedTokenizerBase,
    task: Task,
    train_rows: np.ndarray,
    epochs: int,
    lr: float,
    seed: int,
    batch: int = 32,
) -> TaskOutput:
    """Fine-tune a copy of the encoder with a linear head on the pooled states, then predict
    the validation set (the model passed in is not changed)."""
    import copy

    torch.manual_seed(seed)
    encoder = copy.deepcopy(model)
    classes = 1 if task.kind == "regression" else int(task.train.label.max()) + 1
    device = model_device(model)
    head = torch.nn.Linear(encoder.encoder.config.hidden_size, classes).to(device)
    params = [*encoder.encoder.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    steps = epochs * -(-len(train_rows) // batch)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / max(steps, 1))
    generator = torch.Generator().manual_seed(seed)
    encoder.train()
    for _ in range(epochs):
        order = train_rows[torch.randperm(len(train_rows), generator=generator).numpy()]
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            logits = head(encoder.pooled(*_encode(tokenizer, task.train, idx, device)))
            target = torch.from_numpy(task.train.label[idx]).to(device)
            if task.kind == "regression":
                loss = torch.nn.functional.mse_loss(logits.squeeze(1), target.float())
            else:
                loss = torch.nn.functional.cross_entropy(logits, target)
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
    encoder.eval()
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(task.validation.first), 64):
            idx = np.arange(start, min(start + 64, len(task.validation.first)))
            outputs.append(head(encoder.pooled(*_encode(tokenizer, task.validation, idx, device))))
    out = torch.cat(outputs).float().cpu()
    if task.kind == "regression":
        return TaskOutput(out.squeeze(1).numpy().astype(np.float64), None)
    prob = torch.softmax(out.double(), 1).numpy()
    truth = task.validation.label
    return TaskOutput(prob.argmax(1), prob[np.arange(len(truth)), truth])


def _encode(tokenizer: PreTrainedTokenizerBase, split: Split, idx: np.ndarray, device):
    first = [split.first[i] for i in idx]
    second = [split.second[i] for i in idx] if split.second is not None else None
    enc = tokenizer(
        first, second, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt"
    )
    return enc["input_ids"].to(device), enc["attention_mask"].to(device)
