"""Model families are chosen by `model_type`; an unknown one is refused naming the known ones."""

import json

import pytest
from transformers import AutoConfig

from probes.errors import CurateError
from probes.families import FAMILIES, family
from probes.models import ALIASES, load_model, resolve_model_path

TEXT = [name for name, f in FAMILIES.items() if f.modality == "text"]


@pytest.mark.parametrize("alias", sorted(a for a, m in ALIASES.items() if m.model_type in TEXT))
def test_every_text_alias_has_a_registered_family_with_its_blocks(alias):
    config = AutoConfig.from_pretrained(resolve_model_path(alias), local_files_only=True)
    assert config.model_type in FAMILIES
    assert family(config.model_type).max_positions(config) > 0


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_every_alias_names_the_family_its_folder_loads_as(alias):
    config = json.loads((resolve_model_path(alias) / "config.json").read_text())
    assert config["model_type"] == ALIASES[alias].model_type


def test_an_unknown_model_type_is_refused_naming_the_known_families(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(
        CurateError, match="'gpt2' is not one of bert, efficientnet-lite, llama, mpnet, vit"
    ):
        load_model(str(tmp_path))
