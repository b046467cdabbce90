"""Benchmark: images/s of one GAN training step (D step + G step) — ours vs an official-style step.

"Ours" is `training.trainer.Trainer.step`. The "official-style" baseline runs the same networks and
losses, but with the two computations the official implementation writes differently:
- the generator steps the delta rule on the full S×S fast-weight matrix, two bmm per step
  (retrieve W k_t, then W += u_t k_tᵀ), as the official painter does, instead of `models.delta`;
- the discriminator's local attention unfolds keys/values and contracts them with einsum, as
  lightweight-gan does, instead of our shifted-copy formulation.
Both run in one process, interleaved, on the same batch; steps without the gradient penalty are timed
(step 0, which has it, is the warm-up). Prints a Markdown table.

    OMP_NUM_THREADS=2 python tools/bench_train.py [--configs default,paper] [--repeats 3] [--batch paper=4]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from fpa_export.models import FPAConfig, FPAGenerator
from fpa_export.training.discriminator import LinearAttention
from fpa_export.training.trainer import Trainer, TrainConfig

CONFIGS = {  # name: (model config, train config, batch)
    "default": (FPAConfig(image_size=32, channels=1, num_steps=16, latent_size=128, hidden_size=256),
                dict(fmap_max=64, attn_res_layers=(), attn_heads=2, attn_dim_head=16), 32),
    "paper": (FPAConfig(), dict(), 20),
}


class OfficialStyleFPA(FPAGenerator):
    """Same weights and painting instructions; the canvas is built by the S×S loop of the official code."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        c = self.config
        keys, values, lrs = self.painting_instructions(z)  # (N, T, S), (N, T, S), (N, T, r)
        weights = torch.bmm(values[:, 0].unsqueeze(2), keys[:, 0].unsqueeze(1))  # (N, S, S)
        for t in range(1, c.num_steps):
            key = keys[:, t].unsqueeze(2)  # (N, S, 1)
            retrieved = torch.bmm(weights, key).squeeze(2)  # (N, S)
            write = lrs[:, t] * (values[:, t] - retrieved)
            weights = weights + torch.bmm(write.unsqueeze(2), key.transpose(1, 2))
        return self.finish(weights.reshape(-1, c.channels, c.image_size, c.image_size))


def unfold_local_attention(self: LinearAttention, fmap: torch.Tensor) -> torch.Tensor:
    """lightweight-gan's formulation: unfold the 3×3 neighbourhoods, contract with einsum."""
    b, _, height, width = fmap.shape
    size, pad, bh = self.kernel_size, self.kernel_size // 2, b * self.heads
    q = self.to_q(fmap).reshape(bh, self.dim_head, height * width).transpose(1, 2) * self.scale
    k, v = (F.unfold(t.reshape(bh, self.dim_head, height, width), size, padding=pad)
            .reshape(bh, self.dim_head, size * size, -1).permute(0, 3, 2, 1)
            for t in self.to_kv(fmap).chunk(2, dim=1))  # (B·h, N, j, d)
    sim = torch.einsum("bid,bijd->bij", q, k)
    attn = (sim - sim.amax(dim=-1, keepdim=True).detach()).softmax(dim=-1)
    out = torch.einsum("bij,bijd->bid", attn, v)
    return out.transpose(1, 2).reshape(b, -1, height, width)


def make_trainer(name: str, official: bool, batch: int) -> tuple[Trainer, torch.Tensor]:
    model, train_kwargs, _ = CONFIGS[name]
    torch.manual_seed(0)
    generator = OfficialStyleFPA(model) if official else FPAGenerator(model)
    trainer = Trainer(model, TrainConfig(batch_size=batch, **train_kwargs), generator=generator)
    if official:
        for module in trainer.discriminator.modules():
            if isinstance(module, LinearAttention):
                module._local = unfold_local_attention.__get__(module)
    reals = torch.rand(batch, model.channels, model.image_size, model.image_size)
    trainer.step([reals])  # warm-up, includes the gradient penalty (step 0)
    return trainer, reals


def time_step(trainer: Trainer, reals: torch.Tensor) -> float:
    if trainer.step_count % trainer.config.gp_every == 0:
        trainer.step_count += 1  # time only steps without the penalty, for both sides alike
    start = time.perf_counter()
    trainer.step([reals])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="default,paper")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", action="append", default=[], metavar="NAME=B",
                        help="override a config's batch, e.g. --batch paper=4")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, CPU")
    print("| config | batch | ours img/s | official-style img/s | ours / official |")
    print("|---|---|---|---|---|")
    batches = {name: spec[2] for name, spec in CONFIGS.items()}
    batches.update({k: int(v) for k, v in (item.split("=") for item in args.batch)})
    for name in args.configs.split(","):
        batch = batches[name]
        ours, official = make_trainer(name, False, batch), make_trainer(name, True, batch)
        times = {"ours": [], "official": []}
        for _ in range(args.repeats):  # interleaved, so load changes hit both sides
            times["ours"].append(time_step(*ours))
            times["official"].append(time_step(*official))
        rate = {k: batch / statistics.median(v) for k, v in times.items()}
        print(f"| {name} | {batch} | {rate['ours']:.1f} | {rate['official']:.1f} | "
              f"{rate['ours'] / rate['official']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
