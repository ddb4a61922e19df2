"""Recipes: bundled ones load, includes merge, and mistakes name the key or field at fault."""

import pytest
from click.testing import CliRunner

from curate.cli import main
from filters.recipe import Budget, bundled_recipes, load_recipe, parse_budget
from probes.errors import CurateError
from probes.neuronset import load_neuron_set


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "budget"),
    [
        ("5M", Budget(tokens=5_000_000)),
        ("2B", Budget(tokens=2_000_000_000)),
        ("1.5k", Budget(tokens=1500)),
        ("123456", Budget(tokens=123456)),
        ("30%", Budget(fraction=0.3)),
        (7000, Budget(tokens=7000)),
    ],
)
def test_budget_suffixes_and_fractions(text, budget):
    assert parse_budget(text) == budget


@pytest.mark.parametrize("bad", ["5X", "0", "-3M", "150%", "0%", "", "lots"])
def test_bad_budgets_are_rejected(bad):
    with pytest.raises(CurateError, match="budget"):
        parse_budget(bad)


def test_fraction_resolves_against_the_corpus():
    assert parse_budget("30%").resolve(1000) == 300
    assert parse_budget("5k").resolve(1) == 5000


def test_every_bundled_recipe_loads_and_its_neurons_resolve():
    names = {p.stem for p in bundled_recipes()}
    assert {"rosetta-default", "random", "dsir", "base"} <= names
    for name in names:
        recipe = load_recipe(name)
        assert recipe.version == 1
        assert len(load_neuron_set(recipe.probe.neurons).neurons) > 0


def test_include_merges_tables_key_by_key(tmp_path):
    _write(
        tmp_path / "base.toml",
        'version = 1\n[select]\nbudget = "5M"\nseed = 3\n[probe]\nneurons = "n.json"\n',
    )
    _write(tmp_path / "n.json", "[[1, 2]]")
    child = _write(
        tmp_path / "child.toml",
        'version = 1\ninclude = "base.toml"\n[select]\nmode = "sample"\ntemperature = 2\n',
    )
    recipe = load_recipe(str(child))
    assert (recipe.select.budget, recipe.select.seed, recipe.select.mode) == ("5M", 3, "sample")
    assert recipe.select.temperature == 2.0
    assert recipe.probe.neurons == str((tmp_path / "n.json").resolve())  # relative to base.toml


def test_include_of_a_bundled_recipe_by_name(tmp_path):
    child = _write(tmp_path / "mine.toml", 'version = 1\ninclude = "random"\n')
    assert load_recipe(str(child)).score.method == "random"


def test_include_cycle_is_an_error(tmp_path):
    _write(tmp_path / "a.toml", 'version = 1\ninclude = "b.toml"\n')
    _write(tmp_path / "b.toml", 'version = 1\ninclude = "a.toml"\n')
    with pytest.raises(CurateError, match="include cycle"):
        load_recipe(str(tmp_path / "a.toml"))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[select]\nbugdet = "5M"', r"unknown key 'bugdet'; did you mean 'budget'\?"),
        ('[selekt]\nbudget = "5M"', r"unknown key 'selekt'; did you mean 'select'\?"),
        ('[select]\nmode = "best"', "select.mode must be one of topk, threshold, sample"),
        ('[select]\nmin_tokens = "ten"', r"select.min_tokens: expected int"),
        ('[select]\nbudget = "5X"', "select.budget"),
        ("[select]\ntemperature = 0", "select.temperature must be > 0"),
        ('[select]\nmode = "threshold"', "select.threshold must be set"),
        ('[probe]\nagg = "mean"', "probe.agg must be one of"),
        ("[quotas]\ncaps = { web = 1.5 }", r"quotas.caps must be fractions"),
        ("[diversity]\nclusters = -1", "diversity.clusters must be >= 0"),
    ],
)
def test_mistakes_name_the_key_or_field(tmp_path, body, message):
    path = _write(tmp_path / "r.toml", f'version = 1\ninclude = "base"\n{body}\n')
    with pytest.raises(CurateError, match=message):
        load_recipe(str(path))


def test_missing_or_wrong_version(tmp_path):
    with pytest.raises(CurateError, match="version must be 1"):
        load_recipe(str(_write(tmp_path / "r.toml", '[select]\nbudget = "5M"\n')))


def test_unknown_recipe_name_suggests_a_bundled_one():
    with pytest.raises(CurateError, match="did you mean 'random'"):
        load_recipe("randon")


def test_recipes_cli_ls_and_validate(tmp_path):
    """Through the `curate` group, as users run it: a bad recipe exits 2 with one error line."""
    runner = CliRunner()
    listed = runner.invoke(main, ["recipes", "ls"])
    assert listed.exit_code == 0 and "rosetta-default" in listed.output and "dsir" in listed.output
    good = runner.invoke(main, ["recipes", "validate", "recipes/rosetta-sample.toml"])
    assert good.exit_code == 0 and "mode sample" in good.output
    bad = _write(tmp_path / "bad.toml", 'version = 1\n[select]\nbugdet = "1M"\n')
    result = runner.invoke(main, ["recipes", "validate", str(bad)])
    assert result.exit_code == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {bad}") and "unknown key 'bugdet'" in line
    assert "did you mean 'budget'?" in line
