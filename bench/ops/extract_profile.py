"""Profile: how much of the extract stage's time is spent outside the network and generator passes.

Runs the extract stage's own work (``shard_work`` + ``run_work`` + ``build_index``:
planning, synthesis, atomic shard writes, the index) on one ResNet18 checkpoint with
the demo's extract params (params.yaml) on the CPU, and times, inside it, every
forward pass of the network and of the generator and every backward pass (through
both). Everything else (CMA-ES updates, random streams, Adam's update, bookkeeping,
writing shards) is "outside"; the target is under 10% of the total.

    python -m bench.ops.extract_profile                 # demo params, one checkpoint
    python -m bench.ops.extract_profile --generator deepsim_fc6
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path

import torch
import torchvision

from bench.common import write_checkpoint, write_deepsim_weights
from protoviz_core.engine import generators
from protoviz_core.infra.work import run_work
from protoviz_core.pipeline.config import load_params
from protoviz_core.prototypes.extraction import shard_work
from protoviz_core.prototypes.store import build_index, shards_dir

ROOT = Path(__file__).resolve().parents[2]


class Timer:
    """Accumulated wall time of wrapped calls, by kind (the CPU runs them synchronously)."""

    def __init__(self):
        self.seconds = {"network forward": 0.0, "generator forward": 0.0, "backward (both)": 0.0}
        self.depth = 0

    def wrap(self, kind, function):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            if self.depth:  # nested inside another timed call: counted there
                return function(*args, **kwargs)
            self.depth += 1
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[kind] += time.perf_counter() - started
                self.depth -= 1

        return timed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--generator", default=None, help="default: params.yaml's extract.generator")
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    torch.set_num_threads(torch.get_num_threads())
    timer = Timer()
    torchvision.models.ResNet.forward = timer.wrap("network forward", torchvision.models.ResNet.forward)
    for cls in (generators.FourierGenerator, generators.PixelGenerator, generators.DeePSiMGenerator):
        cls.forward = timer.wrap("generator forward", cls.forward)
    torch.Tensor.backward = timer.wrap("backward (both)", torch.Tensor.backward)

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        settings = params.extract.model_copy(update={"device": "cpu"})
        if args.generator:
            settings = settings.model_copy(update={"generator": args.generator})
        if settings.generator == "deepsim_fc6":
            settings = settings.model_copy(
                update={"generator_weights": str(write_deepsim_weights(folder / "g.pt"))}
            )
        checkpoint = write_checkpoint(folder / "epoch_0000.pt", params.data.image_size)
        started = time.perf_counter()
        work = shard_work(
            {0: checkpoint},
            settings,
            run_seed=params.seed,
            image_size=params.data.image_size,
            device=torch.device("cpu"),
        )
        run_work(list(work.values()), shards_dir(folder / "store"), log=lambda line: None)
        index = build_index(folder / "store", list(work), aug=params.aug, seed=params.seed)
        total = time.perf_counter() - started

    inside = sum(timer.seconds.values())
    print(
        f"\nextract stage work on one checkpoint: {len(index)} prototypes in {len(work)} shards, "
        f"{settings.generator}, {params.data.image_size} px, {settings.cma_steps} x {settings.cma_popsize} "
        f"evolution, {settings.adam_steps} Adam steps, CPU ({torch.get_num_threads()} threads)\n"
    )
    print("| part | seconds | share |")
    print("|---|---|---|")
    for kind, seconds in timer.seconds.items():
        print(f"| {kind} | {seconds:.2f} | {seconds / total:.1%} |")
    print(
        f"| outside the network and generator passes | {total - inside:.2f} | "
        f"{(total - inside) / total:.1%} |"
    )
    print(f"| total | {total:.2f} | 100% |")


if __name__ == "__main__":
    main()
