"""Image shards: ImageFolder class folders, webdataset tars and Hugging Face `Image` parquet read
as image documents, damage reported where it is, kept rows written back byte for byte."""

import tarfile

import numpy as np
import pytest
from image_corpus import image_folder, image_parquet, photo, webdataset_tar
from test_shards import RECORDS, write_shard

from filters.write import write_rows
from probes.errors import CurateError, ShardError
from probes.formats import format_of
from probes.shards import list_shards, read_documents, shard_root, shards_modality


@pytest.fixture
def folder_tree(tmp_path):
    root = image_folder(
        tmp_path / "imagenet",
        {"n02": [photo(i, fmt="JPEG") for i in range(3)], "n01": [photo(9), photo(8)]},
        suffix=".JPEG",
    )
    (root / "README.md").write_text("a corpus")
    (root / "n01" / "LICENSE.txt").write_text("not an image: no row")
    (root / "out").mkdir()  # an output folder beside: a plot, a manifest, a kept class folder
    (root / "out" / "report.png").write_bytes(photo(7))
    (root / "out" / "manifest.json").write_text("{}")
    image_folder(root / "out", {"n09": [photo(8)]})
    (root / "text").mkdir()  # a plot beside text shards is no class folder either
    (root / "text" / "report.png").write_bytes(photo(6))
    write_shard(root / "text" / "part.jsonl", RECORDS[:2])
    return root


def test_imagefolder_class_folders_are_shards_and_images_their_rows(folder_tree):
    shards = list_shards(folder_tree)
    rel = [s.relative_to(folder_tree).as_posix() for s in shards]
    assert rel == ["n01", "n02", "out/n09", "text/part.jsonl"]
    shards = shards[:2]
    assert format_of(shards[0]).name == "imagefolder" and shards_modality(shards) == "image"
    docs = list(read_documents(shards[0], image_key="image", root=folder_tree))
    assert [d.id for d in docs] == ["n01/n01_000.JPEG", "n01/n01_001.JPEG"]  # no LICENSE
    assert docs[0].media == (folder_tree / "n01" / "n01_000.JPEG").read_bytes()
    assert docs[0].record["label"] == "n01" and docs[0].text == ""
    # one class folder on its own is a corpus of one shard, relative to its parent
    assert list_shards(folder_tree / "n02") == [folder_tree / "n02"]
    assert shard_root(folder_tree / "n02") == folder_tree


def test_imagefolder_write_copies_kept_images_byte_for_byte_into_a_folder(folder_tree, tmp_path):
    out = tmp_path / "kept"
    write_rows(folder_tree, {"n02": np.array([0, 2]), "n01": np.array([], np.int64)}, out)
    assert sorted(p.name for p in (out / "n02").iterdir()) == ["n02_000.JPEG", "n02_002.JPEG"]
    for name in ("n02_000.JPEG", "n02_002.JPEG"):
        assert (out / "n02" / name).read_bytes() == (folder_tree / "n02" / name).read_bytes()
    assert not (out / "n01").exists()  # nothing kept, nothing written
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    # the output is an ImageFolder corpus again, and a rerun keeps the finished folder
    assert [s.name for s in list_shards(out)] == ["n02"]
    before = (out / "n02").stat().st_mtime_ns
    write_rows(folder_tree, {"n02": np.array([0, 2])}, out)
    assert (out / "n02").stat().st_mtime_ns == before


def test_an_interrupted_folder_write_leaves_no_folder_and_is_cleaned_on_rerun(
    folder_tree, tmp_path, monkeypatch
):
    out = tmp_path / "kept"
    import shutil

    calls = []

    def copystat_then_die(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "copystat", copystat_then_die)
    with pytest.raises(KeyboardInterrupt):
        write_rows(folder_tree, {"n02": np.array([0, 1, 2])}, out)
    assert not (out / "n02").exists() and list(out.iterdir()) == []
    monkeypatch.undo()
    write_rows(folder_tree, {"n02": np.array([0, 1, 2])}, out)
    assert len(list((out / "n02").iterdir())) == 3


def _samples(n: int) -> list[dict[str, bytes]]:
    return [
        {"jpg": photo(i, (20, 30), "JPEG"), "cls": str(i % 3).encode(), "txt": f"cap {i}".encode()}
        for i in range(n)
    ]


def test_webdataset_samples_group_members_by_key(tmp_path):
    tar = webdataset_tar(tmp_path / "wds" / "shard-000.tar", _samples(4))
    assert list_shards(tmp_path / "wds") == [tar] and shards_modality([tar]) == "image"
    docs = list(read_documents(tar, image_key="image"))
    assert [d.id for d in docs] == ["000000", "000001", "000002", "000003"]
    assert docs[1].media == _samples(4)[1]["jpg"] and docs[1].text == "cap 1"
    assert docs[2].record["label"] == "2" and docs[2].record["cls"] == b"2"
    # any member can be the image: its extension is a key
    assert [d.media for d in read_documents(tar, image_key="jpg")] == [d.media for d in docs]


def test_webdataset_write_keeps_members_and_headers_and_is_deterministic(tmp_path):
    source = webdataset_tar(tmp_path / "in" / "a.tar", _samples(6))
    for name in ("o1", "o2"):
        write_rows(source.parent, {"a.tar": np.array([1, 4])}, tmp_path / name)
    kept = tmp_path / "o1" / "a.tar"
    assert kept.read_bytes() == (tmp_path / "o2" / "a.tar").read_bytes()
    with tarfile.open(source) as src, tarfile.open(kept) as out:
        names = [m.name for m in out.getmembers()]
        assert names == [f"00000{i}.{e}" for i in (1, 4) for e in ("jpg", "cls", "txt")]
        for name in names:
            assert out.extractfile(name).read() == src.extractfile(name).read()
            assert out.getmember(name).mtime == src.getmember(name).mtime


@pytest.mark.parametrize("cut", [0.5, 0.55], ids=["at-a-header", "inside-a-member"])
def test_a_truncated_tar_yields_the_samples_before_the_damage_then_a_clear_error(tmp_path, cut):
    tar = webdataset_tar(tmp_path / "t.tar", _samples(5))
    data = tar.read_bytes()
    tar.write_bytes(data[: int(len(data) * cut)])
    docs = []
    with pytest.raises(ShardError, match=r"t\.tar:\d+: truncated or corrupt tar") as err:
        for doc in read_documents(tar, image_key="image"):
            docs.append(doc)
    assert 1 <= len(docs) < 5 and err.value.line == len(docs) + 1
    skipped = list(read_documents(tar, image_key="image", on_error="skip"))
    assert [d.error is None for d in skipped] == [True] * len(docs) + [False]
    (tmp_path / "junk.tar").write_bytes(b"this is not a tar archive at all" * 40)
    with pytest.raises(ShardError, match=r"junk\.tar:1: truncated or corrupt tar"):
        list(read_documents(tmp_path / "junk.tar", image_key="image"))


def test_image_parquet_is_detected_and_a_row_without_an_image_is_reported(tmp_path):
    shard = image_parquet(tmp_path / "p" / "x.parquet", [photo(1), b""], label=[3, 4])
    text = write_shard(tmp_path / "t" / "x.parquet", RECORDS)
    assert shards_modality([shard]) == "image" and shards_modality([text]) == "text"
    assert shards_modality([shard, text]) == "text"  # a mixed corpus is not an image corpus
    with pytest.raises(ShardError, match=r"x\.parquet:2: empty image"):
        list(read_documents(shard, image_key="image"))
    with pytest.raises(ShardError, match="missing image key 'picture' \\(keys: image, label\\)"):
        list(read_documents(shard, image_key="picture"))


def test_a_text_model_on_image_shards_is_refused_before_loading(folder_tree, tmp_path):
    from probes.prober import check_modality

    with pytest.raises(CurateError, match="reads texts, but the shards under .* hold images"):
        check_modality("minilm-l6", list_shards(folder_tree)[:2], folder_tree)
    text = write_shard(tmp_path / "t" / "x.jsonl", RECORDS)
    with pytest.raises(CurateError, match="reads images, but .* hold text"):
        check_modality("efficientnet-lite0", [text], text.parent)


def test_webdataset_label_members_are_decoded_and_cls_wins(tmp_path):
    tar = webdataset_tar(
        tmp_path / "l.tar",
        [
            {"jpg": photo(1, fmt="JPEG"), "label": b"3\n"},
            {"png": photo(2), "cls": b"7", "label": b"9"},
        ],
    )
    labels = [d.record["label"] for d in read_documents(tar, image_key="image")]
    assert labels == ["3", "7"]
