"""Image probe throughput, side by side in one run: the probe engine vs the bare forward pass
vs a naive per-image loop, against the GEMM bound of the model's FLOPs.

  (a) probe  - ImageProbeEngine.probe(encoded images): decode, preprocess, batched forward as
               deep as the neuron set needs, dtype auto (bf16 where the CPU has bf16 hardware);
  (b) bare   - the whole model's forward on already preprocessed batches, fp32 and bf16;
  (c) naive  - one image at a time, fp32, the whole model, the neurons read with forward hooks
               (decode and preprocess included, as in (a));
  (d) GEMM   - torch.matmul GFLOP/s on [rows, 1152] x [1152, 1152] in fp32 and bf16 (the same
               run); FLOPs per image are counted by torch's FlopCounterMode on one forward of
               the layers run, so the limit is peak / FLOPs per image.

Depthwise convolutions are a small share of the FLOPs but run at memory speed, not GEMM speed,
so no contender should be expected near the limit; the ratio says how far. Images: every
image of ../shared/data/imagenet-sample (dev data) if present, else scikit-image's samples.
The last line printed is one JSON object.

    python benchmarks/bench_image_probe.py [--images N] [--model efficientnet-lite0]
"""

import argparse
import io
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from bench_probe import cpu_summary, torch_gflops  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from probes.capture import ActivationCapture  # noqa: E402
from probes.cpu import pick_dtype  # noqa: E402
from probes.engine import probe_engine  # noqa: E402
from probes.hooks import layer_widths, register_mlp_hook  # noqa: E402
from probes.images import decode, prepare  # noqa: E402
from probes.models import load_model  # noqa: E402
from probes.neuronset import Neuron, NeuronSet  # noqa: E402

IMAGENET = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"
BATCH = 32


def load_images(n: int) -> tuple[list[bytes], str]:
    if IMAGENET.is_dir():
        files = sorted(IMAGENET.glob("*/*.JPEG"))[:n]
        return [f.read_bytes() for f in files], f"imagenet-sample ({len(files)} JPEGs)"
    import skimage.data
    from PIL import Image

    photos = []
    for name in ("chelsea", "coffee", "rocket", "astronaut"):
        out = io.BytesIO()
        Image.fromarray(getattr(skimage.data, name)()).save(out, format="JPEG")
        photos.append(out.getvalue())
    return (photos * n)[:n], "scikit-image samples (repeated)"


def timed(run, *args) -> float:
    start = time.perf_counter()
    run(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--per-layer", type=int, default=8, help="Probed neurons per layer.")
    args = parser.parse_args()

    images, source = load_images(args.images)
    fp32 = load_model(args.model, torch.float32)
    fast_dtype = pick_dtype("auto")
    fast = load_model(args.model, fast_dtype)
    widths = layer_widths(fp32.model, fp32.model_type)
    deep = [i for i, w in enumerate(widths) if w == widths[-1]]
    neurons = NeuronSet(
        tuple(Neuron(layer, i * 7) for layer in deep for i in range(args.per_layer)), "bench"
    )
    engine = probe_engine(fast, neurons, agg="max_norm")

    spec = fp32.image
    pixels = prepare([decode(b).image for b in images], spec)
    with FlopCounterMode(display=False) as counter:
        ActivationCapture(fp32, neurons.requests()).capture(pixel_values=pixels[:1])
    flops = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        fp32.model(pixel_values=pixels[:1])
    flops_full = counter.get_total_flops()

    def bare(model, dtype):
        with torch.inference_mode():
            for i in range(0, len(pixels), BATCH):
                model.model(pixel_values=pixels[i : i + BATCH].to(dtype))

    def naive(data):
        kept = []
        handles = [
            register_mlp_hook(fp32.model, fp32.model_type, layer, kept.append) for layer in deep
        ]
        try:
            with torch.inference_mode():
                for blob in data:
                    fp32.model(pixel_values=prepare([decode(blob).image], spec))
        finally:
            for h in handles:
                h.remove()

    engine.probe(images[:8])  # warm-up
    naive(images[:2])
    rows = {
        "probe": timed(engine.probe, images),
        "bare_fp32": timed(bare, fp32, torch.float32),
        f"bare_{str(fast_dtype).split('.')[-1]}": timed(bare, fast, fast_dtype),
        "naive": timed(naive, images),
    }
    shape = (8192, 1152, 1152)
    gemm = {"fp32": torch_gflops(torch.float32, shape), "bf16": torch_gflops(torch.bfloat16, shape)}
    peak = gemm["bf16"] if fast_dtype == torch.bfloat16 else gemm["fp32"]
    limit = peak * 1e9 / flops
    print(f"{cpu_summary()}; {source}; {args.model}, layers run {deep[-1] + 1}/{len(widths)}")
    print(
        f"FLOPs per image: {flops / 1e6:.0f} M in the layers run, {flops_full / 1e6:.0f} M in all"
    )
    print(f"GEMM peak: fp32 {gemm['fp32']:.0f} GFLOP/s, bf16 {gemm['bf16']:.0f} GFLOP/s")
    print(f"{'contender':<14} {'seconds':>8} {'images/s':>9} {'of limit':>9}")
    for name, seconds in rows.items():
        rate = len(images) / seconds
        print(f"{name:<14} {seconds:8.2f} {rate:9.1f} {rate / limit:9.3f}")
    print(f"{'GEMM limit':<14} {'':>8} {limit:9.1f}")
    probe_rate = len(images) / rows["probe"]
    print(
        json.dumps(
            {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "cpu": cpu_summary(),
                "model": args.model,
                "images": len(images),
                "probe_dtype": str(fast_dtype),
                "gemm_fp32_gflops": round(gemm["fp32"], 1),
                "gemm_bf16_gflops": round(gemm["bf16"], 1),
                "mflops_per_image": round(flops / 1e6, 1),
                **{f"{k}_images_s": round(len(images) / v, 2) for k, v in rows.items()},
                "probe_fraction_of_limit": round(probe_rate / limit, 4),
                "probe_speedup_vs_naive": round(rows["naive"] / rows["probe"], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
