"""`fpa-sample`: folders of samples for FID (`fpa_export.sampling`), and real statistics (`stats`)."""
from __future__ import annotations

import os
from pathlib import Path

import click

from fpa_export.cli import ModelPath
from fpa_export.common.cli import (Command, UserError, check_applies, friendly_errors, nonempty_path,
                                   version_option)
from fpa_export.common.devices import device_option
from fpa_export.runtime.names import BACKENDS, PRECISIONS, SAMPLE_FORMATS as FORMATS

FORMAT_NAMES = (*FORMATS, "jpeg")  # jpeg: another spelling of jpg (the files are named .jpg)


def _format_name(ctx, param, value: str) -> str:
    """--format as the sampler names it (the Choice already gives it in lower case): jpeg spelt jpg."""
    return "jpg" if value == "jpeg" else value


@click.command("stats", cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@version_option("fpa-sample")
@click.argument("image_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--out", type=click.Path(dir_okay=False), callback=nonempty_path,
              help="Output .npz of statistics.")
@click.option("--write-folder", type=click.Path(file_okay=False), callback=nonempty_path, default=None,
              help="Write the real images (with -o: as well), transformed and round-tripped exactly so, "
                   "as a folder NNNNNN.jpg|png that pytorch-fid, clean-fid or torch-fidelity read (the paper's "
                   "protocol: --format jpg --jpeg-quality 75).")
@click.option("--model", default=None, type=ModelPath(), help="Model whose image size and channels the real images are "
              "brought to (checkpoint, .onnx or engine)  [default: the embedded model]")
@click.option("--format", "image_format", type=click.Choice(FORMAT_NAMES, case_sensitive=False), default="png",
              show_default=True, callback=_format_name, help="Format round trip, as the samples will be saved.")
@click.option("--jpeg-quality", type=click.IntRange(1, 100), default=95, show_default=True)
@click.option("--seeds", default="0-2", show_default=True,
              help="Feature-extractor seeds, listed: 3 (seed 3), 0-2 (a range) or 0,4,7.")
@click.option("--batch-size", type=click.IntRange(1), default=100, show_default=True)
@click.option("--device", default="cpu", show_default=True, callback=device_option, help="cpu, cuda, cuda:N or mps.")
@friendly_errors(interrupted=lambda kw: _stats_interrupted(kw.get("write_folder")))
def stats_command(image_dir, out, write_folder, model, image_format, jpeg_quality, seeds, batch_size,
                  device):
    """Prepare statistics of the real images under IMAGE_DIR once, for `fpa-sample --reference-stats`.

    Images are brought to the model's size (shorter side bilinear, centre crop) and channels and
    round-tripped through the sample format, as the paper's FID protocol does, then featurised by the
    offline extractor of `fpa-fd`.

    \b
    Examples:
      fpa-sample stats data/faces -o faces.npz --model model.pt
      fpa-sample stats data/faces -o faces-jpg.npz --model model.pt --format jpg
      fpa-sample stats data/faces --write-folder real64 --model model.pt --format jpg --jpeg-quality 75
    """
    from fpa_export.fd import metric as fd
    from fpa_export.fd.realstats import prepare_real_stats

    if out is None and write_folder is None:
        raise UserError("give -o STATS.npz, --write-folder DIR, or both")
    check_applies("jpeg_quality", image_format == "jpg", "with --format jpg")
    for name in ("seeds", "batch_size"):
        check_applies(name, out is not None, "with -o (the statistics)")
    if out is not None:
        fd.check_stats_output(out, {"the model": model})  # before the (slow) features
    if write_folder is not None:
        _write_real_folder(image_dir, write_folder, model, image_format, jpeg_quality)
        if out is None:
            return

    stats, skipped = prepare_real_stats(image_dir, out, model=model, image_format=image_format,
                                        jpeg_quality=jpeg_quality, seeds=fd.parse_seeds(seeds),
                                        batch_size=batch_size, device=device)
    note = f", {skipped} unreadable file(s) skipped" if skipped else ""
    click.echo(f"Saved statistics of {stats.n} real images ({stats.resolution} px features, seeds "
               f"{','.join(map(str, stats.seeds))}{note}) to {out}")


class _SampleWithStats(Command):
    """`fpa-sample [MODEL] [OPTIONS]` samples; `fpa-sample stats …` runs the statistics command."""

    def make_context(self, info_name, args, parent=None, **extra):
        if args and args[0] == "stats":
            return stats_command.make_context(f"{info_name or 'fpa-sample'} stats", list(args[1:]),
                                              parent=parent, **extra)
        return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx):
        return ctx.command.invoke(ctx) if ctx.command is not self else super().invoke(ctx)


@click.command(cls=_SampleWithStats, context_settings={"help_option_names": ["-h", "--help"]},
               epilog="Real statistics for --reference-stats: fpa-sample stats --help")
@version_option("fpa-sample")
@click.argument("model", required=False, type=ModelPath())
@click.option("--n", "n", type=int, required=True, help="Number of images (indices 0..n-1).")
@click.option("--outdir", type=click.Path(file_okay=False), callback=nonempty_path,
              help="Folder of {i:06d}.png files and samples.json (required unless --no-save).")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              help="auto: onnxruntime on a CPU when installed, torch (CUDA graphs) on a GPU.")
@click.option("--device", default="cpu", show_default=True, callback=device_option, help="cpu, cuda, cuda:N or mps.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=None,
              show_default="fp32; an exported graph: its own",
              help="bf16: CUDA or a CPU with bf16 instructions; fp16: CUDA. Verified against fp32 on a "
                   "probe batch before anything is written.")
@click.option("--format", "image_format", type=click.Choice(FORMAT_NAMES, case_sensitive=False), default="png",
              show_default=True, callback=_format_name, help="Image files: png, or jpg (also spelt jpeg).")
@click.option("--jpeg-quality", type=click.IntRange(1, 100), default=95, show_default=True)
@click.option("--truncation", "--trunc", "truncation", type=float, default=1.0, show_default=True,
              help="psi in (0, 1]: z is scaled toward 0 by psi (1 = no truncation).")
@click.option("--shard", default=None, metavar="I/N|env",
              help="Write only indices i with i % N == I (run N processes into one folder); env: "
                   "I/N from $RANK/$WORLD_SIZE (torchrun), and --device cuda means cuda:$LOCAL_RANK.")
@click.option("--overwrite", is_flag=True,
              help="Replace a folder made with another model, seed, precision or format (all its "
                   "images; the same run: this shard's). Needs the folder to itself: rerun the "
                   "shards of a changed run one after another, or into a new folder.")
@click.option("--verify", is_flag=True,
              help="On resume, also repaint a spread of up to 32 existing files and compare them (by "
                   "default files are only checked to decode at the right size).")
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True,
              help="Encoding/writing threads (0 = one per CPU core, at most 8; a larger number is "
                   "capped at 8 per core).")
@click.option("--threads", type=click.IntRange(0), default=0, show_default=True,
              help="CPU painting threads, each painting a batch of its own (0 = one per core; "
                   "capped to the cores).")
@click.option("--reference-stats", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Print the Fréchet distance to these real statistics (from `fpa-sample stats`).")
@click.option("--no-save", is_flag=True, help="With --reference-stats: score without writing images.")
@friendly_errors
def main(model, n, outdir, batch_size, seed, backend, device, precision, image_format, jpeg_quality,
         truncation, shard, overwrite, verify, workers, threads, reference_stats, no_save):
    """Sample N images of MODEL into a folder for FID (`python -m pytorch_fid REAL_DIR OUTDIR`).

    MODEL is a checkpoint, an exported .onnx or a TensorRT .plan; omitted, the embedded default model.
    Image i depends only on (model, seed, i): not on the batch size, backend, --n or shard. Reruns
    skip valid files, redo broken ones and refuse a folder of another model or seed.

    \b
    Examples:
      fpa-sample --n 1000 --outdir out/samples
      fpa-sample model.pt --n 50000 --outdir out/fid --format jpg
      fpa-sample model.pt --n 50000 --outdir out/fid-bf16 --precision bf16
      fpa-sample model.pt --n 50000 --outdir out/fid --shard 0/4    # one of 4 processes
      torchrun --nproc-per-node 4 --no-python -- fpa-sample model.pt --n 50000 \\
          --outdir out/fid --shard env --device cuda
      fpa-sample model.pt --n 10000 --no-save --reference-stats faces.npz
      fpa-sample stats data/faces -o faces.npz --model model.pt
    """
    from fpa_export.runtime.modelfile import open_model
    from fpa_export.sampling import SampleRun, parse_shard, sample_folder

    if shard == "env" and device == "cuda" and "LOCAL_RANK" in os.environ:
        device = f"cuda:{os.environ['LOCAL_RANK']}"  # one GPU per torchrun process
    if no_save and reference_stats is None:
        raise UserError("--no-save only makes sense with --reference-stats")
    if outdir is None and not no_save:
        raise UserError("give --outdir (or --no-save with --reference-stats)")
    check_applies("outdir", not no_save, "without --no-save (which writes no images)")
    check_applies("jpeg_quality", image_format == "jpg", "with --format jpg")
    from fpa_export.sampling.manifest import is_sample_folder

    resuming = outdir is not None and not no_save and not overwrite and is_sample_folder(outdir)
    check_applies("verify", resuming, "when a folder of samples is resumed (it checks the files there)")
    run = SampleRun(outdir or Path("."), n=n, seed=seed, batch_size=batch_size,
                    image_format=image_format, jpeg_quality=jpeg_quality, truncation=truncation,
                    shard=parse_shard(shard), overwrite=overwrite, workers=workers, threads=threads,
                    precision=precision, verify=verify)
    if reference_stats is not None and run.shard[1] > 1:
        raise UserError("--reference-stats needs every image: run it without --shard")
    if reference_stats is not None and n < 2:  # before any image is written
        raise UserError(f"--reference-stats needs --n 2 or more (feature statistics of {n} image are "
                        "undefined)")
    model = open_model(model)  # what the file is, decided and loaded once for the whole run
    if reference_stats is not None:  # statistics of other images are refused before any painting
        from fpa_export.fd.realstats import load_reference

        run.check()
        load_reference(reference_stats, model.config, run.image_format, run.jpeg_quality)
    if no_save:
        _score_only(model, run, backend, device, reference_stats)
        return
    report = sample_folder(run, model=model, backend=backend, device=device,
                           on_start=lambda choice: _announce(choice, model.summary))
    click.echo(f"Wrote {report.written} images ({report.skipped} already there"
               + (f", {report.regenerated} broken ones redone" if report.regenerated else "")
               + f") to {report.outdir} in {report.seconds:.1f} s "
               f"({report.images_per_second:.0f} img/s, {report.backend})")
    if reference_stats is not None:
        _score_folder(model, run, device, reference_stats)


def _stats_interrupted(folder) -> str:
    """What a Ctrl-C of `fpa-sample stats` leaves: a real-image folder the same command finishes, or
    one already complete (then only the statistics are left to compute, without --write-folder)."""
    if folder is None:
        return "Interrupted; finished outputs are kept."
    from fpa_export.fd.realfolder import PARTIAL

    if (Path(folder) / PARTIAL).exists() or not Path(folder).is_dir():
        return f"Interrupted; finished outputs are kept, and the same command finishes {folder}."
    return (f"Interrupted; {folder} is complete; for the statistics, rerun with -o and without "
            "--write-folder.")


def _write_real_folder(image_dir, folder, model, image_format, jpeg_quality) -> None:
    from fpa_export.fd.realfolder import write_real_folder
    from fpa_export.common.lock import folder_lock
    from fpa_export.runtime.modelfile import open_model
    from fpa_export.sampling.manifest import enclosing_sample_folder

    samples = enclosing_sample_folder(folder)
    if samples is not None:  # the real images would be scored as samples
        raise UserError(f"{folder}: inside the sample folder {samples}, whose images FID tools read as "
                        "samples; write the real images elsewhere")
    config = open_model(model).config
    with folder_lock(folder, "real-image folder"):
        written, skipped = write_real_folder(image_dir, folder, config.image_size, config.channels,
                                             image_format, jpeg_quality)
    note = f", {skipped} unreadable file(s) skipped" if skipped else ""
    click.echo(f"Wrote {written} real images ({config.image_size} px, {config.channels} channel(s), "
               f"{image_format}{f' quality {jpeg_quality}' if image_format == 'jpg' else ''}{note}) to {folder}")


def _announce(choice: dict, summary: str) -> None:
    """Two lines once the run is known valid: the model, and what the run chose (backend, precision,
    threads, PNG level)."""
    click.echo(f"Model {summary}", err=True)
    click.echo(f"Using {choice['backend']}, {choice['precision']}, {choice['painting_threads']} "
               f"painting + {choice['writing_threads']} writing threads, "
               + (f"PNG compress level {choice['png_compress_level']}" if "png_compress_level" in choice
                  else f"JPEG quality {choice['jpeg_quality']}"), err=True)


def _score_only(model, run, backend, device, reference_stats):
    from fpa_export.fd.metric import result_text
    from fpa_export.fd.realstats import score_samples
    from fpa_export.sampling import iter_samples
    from fpa_export.sampling.pipeline import open_sampler

    config = model.config
    # one batch at a time on all painting threads: the feature network shares torch's threads
    sampler = open_sampler(model, backend, device, run.thread_counts()[0], run.precision)
    batches = (images for _, images in iter_samples(sampler, range(run.n), run.seed, run.batch_size,
                                                   run.truncation))
    result = score_samples(batches, reference_stats, config, run.image_format, run.jpeg_quality, device)
    click.echo(f"{result_text(result)}\n(samples not saved: --no-save)")


def _score_folder(model, run, device, reference_stats):
    from fpa_export.fd.metric import result_text
    from fpa_export.fd.realstats import read_files, score_samples
    from fpa_export.sampling.imagefiles import file_name

    paths = [run.outdir / file_name(i, run.image_format) for i in range(run.n)]
    result = score_samples(read_files(paths), reference_stats, model.config, run.image_format,
                           run.jpeg_quality, device, decoded=True)
    click.echo(result_text(result))


if __name__ == "__main__":  # pragma: no cover
    main()
