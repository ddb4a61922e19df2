"""The neuron atlas of a vision neuron set: per neuron, the images where it fires most, each
cut to the grid cell where it peaks (with a cell of context around it), on the same cards as the
text atlas (curate/atlas.py)."""

import base64
import heapq
import html
import io
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from curate.atlas import atlas_page
from probes.capture import ActivationCapture
from probes.discovery.corpus import Corpus
from probes.discovery.run import on_common_grid
from probes.images import crops, normalize
from probes.neuronset import NeuronArtifact

IMAGES_PER_BATCH = 32
CROP_PX = 128  # side of each crop on the page


def build_image_atlas(
    result: NeuronArtifact,
    capture: ActivationCapture,
    columns: torch.Tensor,
    data: Path,
    max_cells: int,
    per_neuron: int,
    limit: int,
) -> str:
    """The HTML page for the first `limit` neurons, each with its `per_neuron` top images
    among the images of `data` up to `max_cells` grid cells (as discovery counts them)."""
    columns = columns[:limit]
    loaded = capture.loaded
    grid = int(result.meta["corpus"].get("grid", 7))
    corpus = Corpus(data, loaded, max_cells, heldout=0.0, grid=grid)
    best: list[list[tuple[float, int, str, bytes]]] = [[] for _ in columns]  # min-heaps
    docs = list(tqdm(corpus, desc="atlas", unit="img", leave=False))
    dtype = next(loaded.model.parameters()).dtype
    for start in range(0, len(docs), IMAGES_PER_BATCH):
        chunk = docs[start : start + IMAGES_PER_BATCH]
        pixels = crops([d.image for d in chunk], loaded.image)
        with torch.inference_mode():
            maps = capture.capture(pixel_values=normalize(pixels, loaded.image).to(dtype))
        acts = torch.cat([on_common_grid(a, grid) for a in maps.values()], -1)[..., columns]
        peak, cell = acts.max(dim=1)  # [images, neurons]
        for i in range(len(columns)):
            for j, doc in enumerate(chunk):
                item = (float(peak[j, i]), int(cell[j, i]), doc.id, start + j)
                if len(best[i]) < per_neuron:
                    heapq.heappush(best[i], item)
                elif item[0] > best[i][0][0]:
                    heapq.heapreplace(best[i], item)
    shown = []
    for heap in best:
        figures = []
        for value, cell, doc_id, index in sorted(heap, reverse=True):
            image = crops([docs[index].image], loaded.image)[0]
            figures.append(_figure(image, cell, grid, value, doc_id))
        shown.append(f'<div class="crops">{"".join(figures)}</div>' if figures else "")
    return atlas_page(result, data, [s or "<p>no images in --data</p>" for s in shown])


def _figure(image: torch.Tensor, cell: int, grid: int, value: float, doc_id: str) -> str:
    """The cell (row-major index on the grid) with one cell of context, as an inline PNG."""
    side = image.shape[-1]
    step = side / grid
    row, col = divmod(cell, grid)
    box = [max(0, (col - 1) * step), max(0, (row - 1) * step)]
    box += [min(side, (col + 2) * step), min(side, (row + 2) * step)]
    crop = Image.fromarray(image.permute(1, 2, 0).numpy()).crop(tuple(round(b) for b in box))
    out = io.BytesIO()
    crop.resize((CROP_PX, CROP_PX), Image.BILINEAR).save(out, format="PNG")
    data = base64.b64encode(out.getvalue()).decode()
    caption = f"<figcaption>{html.escape(doc_id)} - peak {value:.3f}</figcaption>"
    return f'<figure><img src="data:image/png;base64,{data}" alt="">{caption}</figure>'
