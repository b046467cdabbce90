"""`fpa-fd`: an offline Fréchet distance on features of seeded random VGG-19 networks."""
from __future__ import annotations

import json

import click

from ..common.cli import Command, check_applies, friendly_errors, nonempty_path, version_option
from fpa_export.common.devices import device_option


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@version_option("fpa-fd")
@click.argument("a")
@click.argument("b", required=False)
@click.option("--seeds", default=None, show_default="those of a given .npz, else 0-2",
              help="Extractor seeds, listed as everywhere else: 3 (seed 3), 0-7 (a range) or 1,5,9. "
                   "The FD is averaged over one random network per seed, reported as mean ± std.")
@click.option("--n", "n", type=click.IntRange(min=2), default=2000, show_default=True,
              help="Samples drawn from a model source.")
@click.option("--size", "resolution", type=click.IntRange(min=32), default=None,
              show_default="of a given .npz, else the largest model's image size, else the smallest "
                           "folder's up to 64; at least 32",
              help="Resolution in pixels at which images are compared.")
@click.option("--sample-seed", type=click.IntRange(0), default=0, show_default=True,
              help="Seed of the latent noise for model sources.")
@click.option("--save-stats", type=click.Path(dir_okay=False), callback=nonempty_path, default=None,
              help="Write the statistics of A to this .npz (with only A given: compute and save).")
@click.option("--batch-size", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--device", default="cpu", show_default=True, callback=device_option, help="cpu, cuda, cuda:N or mps.")
@click.option("--backend", type=click.Choice(["torch", "onnx", "trt", "auto"]), default=None,
              show_default="torch for checkpoints, the file's own for .onnx / engines",
              help="Runtime that samples model sources.")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default=None,
              show_default="fp32; an exported graph: its own",
              help="Precision that samples model sources (bf16: CUDA or a CPU with bf16 instructions; "
                   "fp16: CUDA).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@friendly_errors
def main(a, b, seeds, n, resolution, sample_seed, save_stats, batch_size, device, backend, precision,
         as_json):
    """Fréchet distance between A and B on random-network features (no download needed).

    A and B are each an image folder, an .npz of statistics written by --save-stats, or a model:
    a checkpoint (.pt), an exported .onnx / engine, or 'default' (the embedded model), of which --n
    samples are drawn.
    The number is a RELATIVE metric: compare it only with numbers of the same extractor, seeds,
    resolution and N, never with published (Inception) FID.

    \b
    Examples:
      fpa-fd data/faces --save-stats faces.npz          # reference statistics, once
      fpa-fd faces.npz model.pt --n 5000                # a model against them
      fpa-fd faces.npz model.pt --n 5000 --precision bf16   # its samples painted in bf16
      fpa-fd real/ fake/ --seeds 0-2 --size 64 --json
    """
    from ..fd import metric as fd

    seed_list = fd.parse_seeds(seeds) if seeds is not None else None
    options = dict(seeds=seed_list, resolution=resolution, n=n, sample_seed=sample_seed,
                   batch_size=batch_size, device=device, backend=backend, precision=precision)
    if b is None and save_stats is None:
        raise click.UsageError("give B to compare with, or --save-stats to save A's statistics")
    sampled = any(fd.classify(text).kind == "model" for text in (a, b) if text is not None)
    for name in ("n", "sample_seed", "backend", "precision"):  # they shape a model's samples only
        check_applies(name, sampled, "when A or B is a model (a checkpoint, an .onnx / engine, 'default')")
    if save_stats is not None:
        fd.check_stats_output(save_stats, {"A": a, "B": b})  # before the (slow) features
    if b is None:
        stats = fd.stats_only(a, save_stats, **options)
        record = {"a": a, "saved": str(save_stats), "n_a": stats.n, "extractor": stats.extractor,
                  "seeds": stats.seeds, "resolution": stats.resolution}
        click.echo(json.dumps(record) if as_json else
                   f"Saved statistics of {stats.n} images ({stats.extractor}, seeds "
                   f"{','.join(map(str, stats.seeds))}, {stats.resolution} px) to {save_stats}")
        return
    result = fd.fd_between(a, b, save_a=save_stats, **options)
    saved = {"saved": str(save_stats)} if save_stats else {}
    click.echo(fd.result_json(result, a=a, b=b, **saved) if as_json else fd.result_text(result))
    if save_stats and not as_json:
        click.echo(f"Statistics of A saved to {save_stats}")


if __name__ == "__main__":  # pragma: no cover
    main()
