"""Average the generator weights of models fine-tuned from one another (a uniform "model soup").

Writes a ``monai-t1t2 train``-style Lightning checkpoint whose generator is the element-wise mean
(float32) of the sources' generators; everything else (hyper-parameters, other modules) is taken
from ``--template``, a checkpoint of the same architecture. The output scores like any checkpoint
(``quality.py --checkpoint``, ``train validate --ckpt_path``) and exports like one (``export_bundle``).
With one source it is that source's generator in a checkpoint (e.g. a bundle's float16 ``model.pt``
as the reference of a comparison).

    python benchmarks/weight_average.py --template runs/ft64t/lightning_logs/version_0/checkpoints/last.ckpt \\
        --output runs/soup/soup3.ckpt bundles/t1t2_translation \\
        runs/ft64t/lightning_logs/version_0/checkpoints/last.ckpt runs/ft64t22/lightning_logs/version_0/checkpoints/last.ckpt

Sources: bundle directories, their ``models/model.pt`` or Lightning checkpoints
(:func:`monai_t1t2.nets.generators.generator_weights`). Averaging only makes sense for models that
share a start (fine-tunes of one model); the script checks that the keys and shapes agree, not that.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from monai_t1t2.io import save_torch  # noqa: E402
from monai_t1t2.nets.generators import generator_weights  # noqa: E402


def average_generators(sources: list[str]) -> dict[str, torch.Tensor]:
    """Element-wise mean (float32) of the sources' generator state dicts; non-float entries from the first."""
    states = [generator_weights(source) for source in sources]
    first = states[0]
    for source, state in zip(sources[1:], states[1:]):
        if set(state) != set(first) or any(state[k].shape != first[k].shape for k in first):
            raise SystemExit(f"{source}: its generator does not match {sources[0]}'s (keys or shapes differ)")
    return {key: torch.stack([s[key].float() for s in states]).mean(0) if value.is_floating_point() else value
            for key, value in first.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+", help="bundle directories, model.pt files or Lightning checkpoints")
    parser.add_argument("--template", required=True, help="a Lightning checkpoint of the same architecture")
    parser.add_argument("--output", required=True, help="the checkpoint to write (must not exist)")
    args = parser.parse_args()
    output = Path(args.output)
    if output.exists():
        raise SystemExit(f"{output} exists: give a new path")
    template = torch.load(args.template, map_location="cpu", weights_only=False)
    averaged = average_generators(args.sources)
    own = {k[len("generator."):] for k in template["state_dict"] if k.startswith("generator.")}
    if own != set(averaged):
        raise SystemExit(f"--template {args.template}: its generator does not match the sources'")
    state = {"state_dict": {**{k: v for k, v in template["state_dict"].items() if not k.startswith("generator.")},
                            **{f"generator.{k}": v for k, v in averaged.items()}},
             "hyper_parameters": template["hyper_parameters"], "global_step": 0,
             # The data settings (the T1 input floor among them) the sources were trained with.
             **{k: template[k] for k in ("datamodule_hparams_name", "datamodule_hyper_parameters") if k in template},
             "averaged_from": list(args.sources)}
    save_torch(state, output)
    print(f"{output}: generator averaged over {len(args.sources)} source(s): {', '.join(args.sources)}")


if __name__ == "__main__":
    main()
