"""Model families are chosen by `model_type`; an unknown one is refused naming the known ones."""

import json

import pytest
from transformers import AutoConfig

from probes.errors import CurateError
from probes.families import FAMILIES, family
from probes.models import ALIASES, load_model, resolve_model_path


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_every_alias_has_a_registered_family_with_its_blocks(alias):
    config = AutoConfig.from_pretrained(resolve_model_path(alias), local_files_only=True)
    assert config.model_type in FAMILIES
    assert family(config.model_type).max_positions(config) > 0


def test_an_unknown_model_type_is_refused_naming_the_known_families(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CurateError, match="'gpt2' is not one of bert, llama, mpnet"):
        load_model(str(tmp_path))
