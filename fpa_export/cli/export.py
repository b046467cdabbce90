"""`fpa-export`: checkpoints → verified ONNX graphs (`onnx`) → TensorRT engines (`trt`)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from fpa_export.cli import ModelPath
from fpa_export.common.cli import (Group, UserError, check_applies, friendly_errors, nonempty_path,
                                   version_option)
from fpa_export.export.options import DEFAULT_MAX_BATCH, DEFAULT_OPSET, EXPORTERS, GRAPHS, LSTM_MODES

CHECKPOINT = ModelPath(path_type=Path)  # a file, or `default` (the embedded model)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@version_option("fpa-export")
def main():
    """Export Fast Weight Painter checkpoints to ONNX and TensorRT.

    \b
    Examples:
      fpa-export onnx model.pt                       # model-image.onnx + model-image.onnx.json
      fpa-export onnx model.pt --graph steps         # per-step updates and partial sums (GIFs)
      fpa-export onnx model.pt --fp16 -o g16.onnx    # float16 products, float32 softmax/canvas/tanh
      fpa-export trt model-image.onnx --max-batch 4096
    """


@main.command("onnx")
@click.argument("checkpoint", required=False, type=CHECKPOINT)
@click.option("-o", "--out", type=click.Path(), callback=nonempty_path,
              help="Output .onnx (default: <checkpoint>-<graph>[-fp16][-uint8][-rgb][-lstmop].onnx here).")
@click.option("--graph", type=click.Choice(GRAPHS), default="image", show_default=True,
              help="image: z → image; steps: z → per-step updates and partial sums.")
@click.option("--fp16", is_flag=True, help="Float16 weight products (for TensorRT); I/O stays float32.")
@click.option("--uint8", is_flag=True, help="uint8 image output (FID tools that score ONNX generators).")
@click.option("--rgb", is_flag=True,
              help="Three output channels: a greyscale model's channel repeated (Bx3xHxW, as "
                   "torch-fidelity's ONNX generator input needs).")
@click.option("--opset", type=click.IntRange(14, 23), default=DEFAULT_OPSET, show_default=True)
@click.option("--exporter", type=click.Choice(EXPORTERS), default=None,
              show_default="torchscript while this torch has it, else dynamo",
              help="torchscript takes seconds; dynamo is slower and the one torch maintains.")
@click.option("--atol", type=click.FloatRange(min=0), default=None,
              show_default="1e-4, or 2e-2 with --fp16",
              help="Verification tolerance for float outputs (uint8 outputs keep their level limits).")
@click.option("--lstm", type=click.Choice(LSTM_MODES), default="unrolled", show_default=True,
              help="unrolled: straight-line gate arithmetic; op: the ONNX LSTM op.")
@click.option("--no-verify", is_flag=True, help="Skip the onnxruntime-vs-PyTorch comparison.")
@click.option("--force", is_flag=True, help="Rebuild even when the sidecar says nothing changed; replace "
                                            "a file at -o that is not an ONNX graph.")
@friendly_errors
def onnx_command(checkpoint, out, graph, fp16, uint8, rgb, opset, exporter, atol, lstm, no_verify,
                 force):
    """Export CHECKPOINT (default: the embedded model) to ONNX, verified against PyTorch.

    The graph is checked with onnx.checker, run in onnxruntime at batch 1 and 7 on fixed seeds and
    compared with PyTorch (fails above 1e-4, or 2e-2 for --fp16, or --atol). The graph carries its
    own record in its metadata (config, spec, versions, checkpoint sha256, the figures measured), so
    every command accepts it without its JSON sidecar, which holds the same record for people to
    read; re-running with the same inputs reuses the file.

    \b
    Examples:
      fpa-export onnx model.pt
      fpa-export onnx model.pt --graph steps -o steps.onnx
      fpa-export onnx model.pt --fp16 --uint8 --exporter dynamo
      fpa-export onnx --uint8 --rgb -o fidelity.onnx   # for torch-fidelity's ONNX generator input
    """
    from fpa_export.export import export_onnx

    check_applies("atol", not no_verify, "when the graph is verified (not with --no-verify)")
    with _stage_progress("export") as progress:
        result = _lazy(export_onnx, checkpoint, out, graph=graph, fp16=fp16, opset=opset,
                       exporter=exporter, uint8=uint8, rgb=rgb, lstm=lstm, verify=not no_verify,
                       force=force, atol=atol, progress=progress)
    verdict = _verdict(result.report)
    action = "Reused (unchanged inputs)" if result.reused else "Wrote"
    click.echo(f"{action} {result.path} ({verdict}); sidecar {result.sidecar}")


@main.command("trt")
@click.argument("source", required=False, type=CHECKPOINT, metavar="[ONNX|CKPT]")
@click.option("-o", "--out", type=click.Path(), callback=nonempty_path,
              help="Output engine (default: the .onnx path with .plan).")
@click.option("--min-batch", type=click.IntRange(1), default=1, show_default=True)
@click.option("--opt-batch", type=click.IntRange(1), default=None,
              help="Batch size TensorRT tunes for  [default: 256, clamped to min..max]")
@click.option("--max-batch", type=click.IntRange(1), default=DEFAULT_MAX_BATCH, show_default=True)
@click.option("--timing-cache", type=click.Path(dir_okay=False), callback=nonempty_path,
              help="Timing cache file, read if present and updated after the build.")
@click.option("--workspace-gb", type=click.FloatRange(0, min_open=True), default=None,
              help="Workspace memory limit in GiB  [default: TensorRT's]")
@click.option("--tf32", is_flag=True, help="Allow TF32 for float32 matmuls (faster, ~1e-3 error).")
@click.option("--graph", type=click.Choice(GRAPHS), default="image", show_default=True,
              help="When SOURCE is a checkpoint: which graph to export first.")
@click.option("--fp16", is_flag=True, help="When SOURCE is a checkpoint: export the fp16 graph.")
@click.option("--force", is_flag=True, help="Rebuild even when the sidecar says nothing changed.")
@click.option("--no-verify", is_flag=True, help="Skip the engine-vs-onnxruntime comparison.")
@friendly_errors
def trt_command(source, out, min_batch, opt_batch, max_batch, timing_cache, workspace_gb, tf32,
                graph, fp16, force, no_verify):
    """Build a TensorRT engine from an exported .onnx or a checkpoint (needs TensorRT and a GPU).

    The network is strongly typed (precision as written in the ONNX file), with one optimisation
    profile over the batch axis. A new engine is run on a probe batch and compared with onnxruntime
    (refused beyond the graph's tolerance). The sidecar records the TensorRT version and GPU: engines
    run only where they were built.

    \b
    Examples:
      fpa-export onnx model.pt --fp16 -o g16.onnx && fpa-export trt g16.onnx --max-batch 4096
      fpa-export trt model.pt -o model.plan --timing-cache trt.cache
    """
    from fpa_export.export import build_engine

    for name in ("graph", "fp16"):  # an .onnx source is built as it is written
        check_applies(name, source is None or Path(source).suffix.lower() != ".onnx",
                      "when SOURCE is a checkpoint")
    with _stage_progress("tensorrt"):
        result = _lazy(build_engine, source, out, min_batch=min_batch, opt_batch=opt_batch,
                       max_batch=max_batch, timing_cache=timing_cache, workspace_gb=workspace_gb,
                       tf32=tf32, graph=graph, fp16=fp16, force=force, verify=not no_verify)
    action = "Reused (unchanged inputs)" if result.reused else "Wrote"
    checked = f"; {_verdict(result.report, 'onnxruntime')}" if not result.reused else ""
    click.echo(f"{action} {result.path} (TensorRT {result.tensorrt_version}, GPU {result.gpu}"
               f"{checked}); sidecar {result.sidecar}")


def _verdict(report: dict, reference: str = "PyTorch") -> str:
    """'max abs diff vs PyTorch: image 3e-08' (uint8 outputs in levels), or 'not verified'."""
    parts = [f"{name} {r['max_levels']} uint8 level(s)" if "max_levels" in r
             else f"{name} {r['max_abs_diff']:.2g}" for name, r in report.items()]
    return f"max abs diff vs {reference}: {', '.join(parts)}" if parts else "not verified"


def _lazy(function, *args, **kwargs):
    """Call `function`; a missing optional package becomes a one-line error naming the extra."""
    try:
        return function(*args, **kwargs)
    except ImportError as err:
        raise UserError(str(err).splitlines()[0]) from None


class _stage_progress:
    """Stage display on stderr: a one-line bar rewritten in place on a terminal; elsewhere (logs,
    pipes, CI) one plain line per stage, so logs are not filled with carriage returns."""

    def __init__(self, desc: str, stream=None):
        self.desc, self.stream, self.bar = desc, stream or sys.stderr, None

    def __enter__(self):
        if _is_tty(self.stream):
            from tqdm import tqdm

            self.bar = tqdm(total=None, desc=self.desc, file=self.stream, leave=False,
                            bar_format="{desc} [{elapsed}]")
        self.start = time.perf_counter()
        return self.update

    def update(self, stage: str) -> None:
        if self.bar is not None:
            self.bar.set_description_str(f"{self.desc}: {stage}")
        else:
            elapsed = time.perf_counter() - self.start
            click.echo(f"{self.desc}: {stage} [{elapsed:.1f} s]", file=self.stream)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
        return False


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


if __name__ == "__main__":
    main()
