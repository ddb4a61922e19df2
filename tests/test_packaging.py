"""A wheel carries what the commands need by name, and the CLI starts without the model stack."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(REPO)],
        check=True,
    )
    return next(out.glob("rosetta_curate-*.whl"))


@pytest.mark.slow
def test_the_wheel_carries_recipes_bench_configs_and_the_default_neuron_set(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    bundled = {p.relative_to(REPO).as_posix() for p in (REPO / "recipes").rglob("*.toml")}
    assert bundled and bundled <= names
    assert {"recipes/bench/default.toml", "recipes/bench/tiny.toml"} <= names
    for file in ("meta.json", "neurons.safetensors", "neurons.tsv"):
        assert f"probes/data/default-neurons/{file}" in names


@pytest.mark.slow
def test_recipes_resolve_from_an_installed_wheel(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--quiet",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
    )
    code = (
        "import filters.recipe as r, sys; "
        "print(r.RECIPES_DIR); print(r.load_recipe('rosetta-default').probe.neurons)"
    )
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    recipes_dir, neurons = done.stdout.split()
    assert recipes_dir.startswith(str(site)) and neurons.startswith(str(site))


def test_help_and_recipes_ls_import_neither_torch_nor_transformers():
    code = (
        "import sys; from click.testing import CliRunner; from curate.cli import main; "
        "assert CliRunner().invoke(main, ['--help']).exit_code == 0; "
        "assert CliRunner().invoke(main, ['recipes', 'ls']).exit_code == 0; "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
