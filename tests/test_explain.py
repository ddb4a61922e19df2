"""`curate explain` and the HTML pages: the numbers shown are the side file's, the tokens are
the document's, and the atlas and explain pages render and link in a real browser."""

import re
import shutil
from importlib.resources import files
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from curate.cli import main
from curate.pipeline import AtlasJob, ExplainJob, ProbeJob, atlas, explain, probe
from probes import sidefile
from probes.errors import CurateError
from probes.neuronset import load_neuron_set
from probes.shards import list_shards, read_documents

DEFAULT_NEURONS = str(files("probes") / "data" / "default-neurons")


@pytest.fixture(scope="module")
def scored(demo_shards, tmp_path_factory) -> tuple[Path, Path]:
    """The demo shards and their side files under the default neuron set (fp32)."""
    scores = tmp_path_factory.mktemp("explain") / "scores"
    probe(ProbeJob(demo_shards, DEFAULT_NEURONS, scores, dtype="fp32", progress=False))
    return demo_shards, scores


def _row(shards: Path, scores: Path, position: int):
    shard = list_shards(shards)[0]
    doc = list(read_documents(shard))[position]
    table = pq.read_table(sidefile.path_for(scores, shards, shard))
    return doc, {name: table.column(name)[doc.row].as_py() for name in table.column_names}


def test_the_numbers_shown_are_the_side_files_and_the_tokens_recompute_them(scored):
    shards, scores = scored
    doc, row = _row(shards, scores, 3)
    result = explain(ExplainJob(shards, doc.id, scores=scores, dtype="fp32"))
    e = result.explanation
    assert result.side_file is not None and e.score == pytest.approx(row["score"], abs=0)
    for part in e.parts:
        assert part.value == pytest.approx(row[part.neuron.column], abs=0)
    # the per-token activations give back the side file's score (same model, dtype, agg)
    assert result.recomputed == pytest.approx(row["score"], rel=1e-4)
    assert sum(p.contribution for p in e.parts) == pytest.approx(e.score, rel=1e-5)
    contributions = [p.contribution for p in e.ranked()]
    assert contributions == sorted(contributions, reverse=True)
    assert sum(p.weight for p in e.parts) == pytest.approx(1.0)
    # every token span lies in the text, in order; the strongest tokens are real substrings
    assert len(e.spans) == row["n_tokens"] and all(0 <= s < t <= len(doc.text) for s, t in e.spans)
    assert [s for s, _ in e.spans] == sorted(s for s, _ in e.spans)
    top = e.ranked()[0]
    text, act = e.top_tokens(top, 1)[0]
    assert text in doc.text and act == pytest.approx(float(top.acts.max()))


def test_without_side_files_the_document_is_probed_now(scored, tmp_path):
    from probes.engine import ProbeEngine
    from probes.models import load_model

    shards, _ = scored
    doc, _ = _row(shards, scored[1], 5)
    result = explain(ExplainJob(shards, doc.id, scores=tmp_path / "none", dtype="fp32"))
    assert result.side_file is None
    engine = ProbeEngine(load_model("minilm-l6"), load_neuron_set(DEFAULT_NEURONS))
    expected = engine.probe([doc.text]).score[0]
    assert result.explanation.score == pytest.approx(float(expected), rel=1e-4)


def test_cli_prints_the_table_and_refuses_an_unknown_id(scored, tmp_path):
    shards, scores = scored
    doc, row = _row(shards, scores, 1)
    runner = CliRunner()
    args = ["explain", str(shards), "--id", doc.id, "--scores", str(scores), "--top", "3"]
    shown = runner.invoke(main, [*args, "--html", str(tmp_path / "page.html")])
    assert shown.exit_code == 0, shown.output
    assert f"score {row['score']:.4f} from side file" in shown.output
    ranks = re.findall(r"^\s+(\d)\s+L\d+N\d+\s", shown.output, flags=re.M)
    assert ranks == ["1", "2", "3"]
    assert "<table>" in (tmp_path / "page.html").read_text()
    missing = runner.invoke(main, ["explain", str(shards), "--id", "no-such-doc"])
    assert missing.exit_code == 2 and "no document with id 'no-such-doc'" in missing.output
    with pytest.raises(CurateError, match="no document"):
        explain(ExplainJob(shards, "no-such-doc", scores=scores))


def _browser():
    """A headless Chromium driven by Selenium, or the reason there is none."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("no Chromium/ChromeDriver (Debian packages chromium, chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=driver)
    return webdriver.Chrome(options=options, service=service)


def _console_errors(browser) -> list[str]:
    return [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]


@pytest.mark.slow
def test_atlas_and_explain_pages_render_and_link_in_a_real_browser(scored, tmp_path):
    from selenium.webdriver.common.by import By

    shards, _ = scored
    page = tmp_path / "site" / "atlas.html"
    shown = atlas(AtlasJob(Path(DEFAULT_NEURONS), shards, page, 3000, 2, 4, "fp32"))
    assert shown == 4
    browser = _browser()
    try:
        browser.get(page.as_uri())
        cards = browser.find_elements(By.CSS_SELECTOR, "section.card")
        assert len(cards) == 4 and not _console_errors(browser)
        first = cards[0]
        neuron = first.get_attribute("id")
        link = first.find_element(By.CSS_SELECTOR, "blockquote .meta a")
        doc_id = link.text
        link.click()
        assert browser.title.startswith(f"Why {doc_id} scored")
        rows = browser.find_elements(By.CSS_SELECTOR, "tbody tr")
        size = len(load_neuron_set(DEFAULT_NEURONS).neurons)  # one row per neuron of the set
        assert len(rows) == size and browser.find_elements(By.TAG_NAME, "mark")
        assert not _console_errors(browser)
        # the card's neuron fires in this document, and its row links back to its atlas card
        back = browser.find_element(By.CSS_SELECTOR, f'tbody a[href$="#{neuron}"]')
        back.click()
        assert browser.current_url.endswith(f"atlas.html#{neuron}")
        assert browser.find_element(By.ID, neuron).is_displayed()
        assert not _console_errors(browser)
    finally:
        browser.quit()
