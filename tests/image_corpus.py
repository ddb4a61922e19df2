"""Small image corpora for tests, built in each format the tool reads: random-pixel photos as
PNG or JPEG, ImageFolder trees, webdataset tars and Hugging Face `Image` parquet."""

import io
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image


def photo(seed: int, size: tuple[int, int] = (96, 80), fmt: str = "PNG") -> bytes:
    """An encoded image of random pixels, `size` = (height, width)."""
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(out, format=fmt)
    return out.getvalue()


def image_folder(root: Path, classes: dict[str, list[bytes]], suffix: str = ".png") -> Path:
    """root/<class>/<class>_<i><suffix> for each image."""
    for name, images in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, data in enumerate(images):
            (root / name / f"{name}_{i:03d}{suffix}").write_bytes(data)
    return root


def webdataset_tar(path: Path, samples: list[dict[str, bytes]]) -> Path:
    """A tar of samples keyed 000000, 000001, ...: one member per extension of each sample."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for i, sample in enumerate(samples):
            for ext, data in sample.items():
                info = tarfile.TarInfo(f"{i:06d}.{ext}")
                info.size, info.mtime = len(data), 1_700_000_000
                tar.addfile(info, io.BytesIO(data))
    return path


def image_parquet(path: Path, images: list[bytes], **columns: list) -> Path:
    """A parquet shard with an `image` column in the Hugging Face `Image` layout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = [{"bytes": b, "path": f"{i}.png"} for i, b in enumerate(images)]
    pq.write_table(pa.table({"image": image, **columns}), path)
    return path
