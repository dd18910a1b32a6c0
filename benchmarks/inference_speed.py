"""Inference speed: wall time and peak memory of ``translate()`` per 240 x 240 x 155 volume.

Beside it, a plain MONAI ``sliding_window_inference`` over the whole (already normalised)
volume with the same network, ROI, overlap and batch size, so the package's own overhead
(masking, crop, RAS / 1 mm resampling and back) shows as a ratio. ``translate`` crops to the
brain first, so it can be faster than the plain call. Prints a markdown table.

Usage (from the repo root)::

    python benchmarks/inference_speed.py                    # the bundle's trained model
    python benchmarks/inference_speed.py --random-init      # default architecture, random weights
    python benchmarks/inference_speed.py --model runs/last.ckpt --devices cpu cuda --repeats 3
    python benchmarks/inference_speed.py --devices cpu --flip-axes 0   # + a row with mirror averaging

Peak memory: on CPU the rise of the process's resident set (sampled every 2 ms) over its level
before the call; on GPU ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference

from monai_t1t2.inference.translation import DEFAULT_BUNDLE, Translator, describe, load_translator, translate
from monai_t1t2.io import read_volume
from monai_t1t2.transforms import PercentileNormalise

DEFAULT_CASE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "paired" / "BraTS-GLI-00001-000" / "t1.nii.gz"
PAGE_MIB = __import__("os").sysconf("SC_PAGE_SIZE") / 2**20


def resident_mib() -> float:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * PAGE_MIB


class PeakResident:
    """Context manager sampling the resident set size; ``.peak_rise`` in MiB."""

    def __enter__(self):
        self.start = self.peak = resident_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, resident_mib())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, resident_mib())
        self.peak_rise = self.peak - self.start


def measure(call: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(wall seconds, peak MiB) of one call."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        call()
        torch.cuda.synchronize()
        return time.perf_counter() - start, torch.cuda.max_memory_allocated() / 2**20
    with PeakResident() as memory:
        start = time.perf_counter()
        call()
        seconds = time.perf_counter() - start
    return seconds, memory.peak_rise


def random_translator(seed: int, device: str) -> Translator:
    """The bundle's default architecture and ROI (configs/inference.json), random weights."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(DEFAULT_BUNDLE / "configs" / "inference.json"))
    torch.manual_seed(seed)
    return Translator(parser.get_parsed_content("network_def"), tuple(parser.get_parsed_content("roi_size")),
                      int(parser.get_parsed_content("spatial_dims")), torch.device(device), "random weights (default architecture)")


def synthetic_volume(shape=(240, 240, 155), seed: int = 0) -> MetaTensor:
    """Skull-stripped-looking ellipsoid brain on a zero background, 1 mm LPS like the shared pairs."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    radius = np.sqrt((grid**2 / np.array([0.6, 0.7, 0.8])[:, None, None, None] ** 2).sum(0))
    volume = np.where(radius < 1, 300.0 + 200.0 * (radius < 0.6) + rng.normal(0, 10, shape), 0.0).astype(np.float32)
    return MetaTensor(torch.from_numpy(volume)[None], affine=torch.diag(torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=torch.float64)))


def run(args: argparse.Namespace) -> str:
    volume = read_volume(args.case) if Path(args.case).is_file() else synthetic_volume()
    source = args.case if Path(args.case).is_file() else "synthetic 240x240x155"
    rows = []
    for device_name in args.devices:
        if device_name == "cuda" and not torch.cuda.is_available():
            rows.append("| cuda | no GPU on this machine | - | - | - | - |")
            continue
        device = torch.device(device_name)
        translator = random_translator(args.seed, device_name) if args.random_init else load_translator(args.model, device)
        normalised = PercentileNormalise()(volume.as_tensor(), volume.as_tensor() > 0)[None].to(device)

        def plain():
            with torch.inference_mode():
                return sliding_window_inference(normalised, translator.roi_size, args.sw_batch_size, translator,
                                                args.overlap, mode="gaussian")

        def package():
            return translate(volume, translator, overlap=args.overlap, sw_batch_size=args.sw_batch_size, flip_axes=[])

        def mirrored():
            return translate(volume, translator, overlap=args.overlap, sw_batch_size=args.sw_batch_size,
                             flip_axes=args.flip_axes)

        centre = [slice(max(0, n // 2 - 20), n // 2 + 20) for n in volume.shape[1:]]
        translate(volume[(slice(None), *centre)], translator)  # warm-up: lazy imports, allocator
        calls = {"plain": plain, "package": package, **({"mirrored": mirrored} if args.flip_axes else {})}
        timings = {name: [] for name in calls}
        for _ in range(args.repeats):
            for name, call in calls.items():
                timings[name].append(measure(call, device))
        plain_s = statistics.median(t for t, _ in timings["plain"])
        plain_mib = max(m for _, m in timings["plain"])
        labels = {"plain": "plain sliding_window_inference", "package": "monai_t1t2.translate",
                  "mirrored": f"monai_t1t2.translate, flip_axes {args.flip_axes}"}
        for name in calls:
            label = labels[name]
            seconds = statistics.median(t for t, _ in timings[name])
            mib = max(m for _, m in timings[name])
            rows.append(f"| {device_name} | {label} | {seconds:.2f} | {mib:.0f} | {seconds / plain_s:.2f} | "
                        f"{mib / plain_mib if plain_mib > 0 else float('nan'):.2f} |")
    info = describe(translator) if "translator" in locals() else {}
    header = [f"volume: {source} {tuple(volume.shape[1:])}; model: {info.get('source')} "
              f"({info.get('parameters')} parameters, ROI {info.get('roi_size')}); overlap {args.overlap}, "
              f"sw_batch_size {args.sw_batch_size}; CPU threads {torch.get_num_threads()}; "
              f"median of {args.repeats} run(s)", "",
              "| device | call | wall s / volume | peak MiB | time ratio | memory ratio |",
              "|---|---|---|---|---|---|"]
    return "\n".join(header + rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="bundle folder, models/model.pt or .ckpt (default: the repo bundle)")
    parser.add_argument("--random-init", action="store_true", help="default architecture with random weights")
    parser.add_argument("--case", default=str(DEFAULT_CASE), help="T1 to translate (default: a shared 240x240x155 T1)")
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"], choices=("cpu", "cuda"))
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--sw-batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--flip-axes", type=int, nargs="*", default=[],
                        help="also time translate() with mirror averaging along these axes (e.g. 0)")
    parser.add_argument("--seed", type=int, default=0)
    print(run(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
