"""Shared fixtures: the real default model and the built-in demo shards (no downloads)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from s3_server import s3  # noqa: E402, F401 - one S3 server per session, for any test module

from curate.demo_shards import build_demo_shards  # noqa: E402
from probes.models import LoadedModel, load_model  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def minilm() -> LoadedModel:
    return load_model("minilm-l6", dtype=torch.float32)


@pytest.fixture(scope="session")
def demo_shards(tmp_path_factory) -> Path:
    return build_demo_shards(tmp_path_factory.mktemp("demo") / "shards")


@pytest.fixture(scope="session")
def demo_texts(demo_shards) -> list[str]:
    from probes.shards import list_shards, read_documents

    return [doc.text for shard in list_shards(demo_shards) for doc in read_documents(shard)]


def write_jsonl(path: Path, records: list[dict | str]) -> Path:
    """A JSON-lines shard; str records are written verbatim (for malformed lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path
