"""What a MODEL argument is — the one place that decides it — and its contents, loaded once per run.

    model = open_model("ckpt.pt")     # or None (the embedded default), an .onnx, an engine, a generator
    model.kind                        # "checkpoint" | "onnx" | "tensorrt" | "generator"
    model.config, model.generator     # read once, then shared by every consumer of the run
    model.identity()                  # what a sample folder records: the checkpoint's sha256, precision

Exported graphs and engines are traced back to the checkpoint they came from through their export
record, so the same weights sampled with torch, onnxruntime or TensorRT share one identity. The record
is the JSON sidecar only when it states this very file's sha256; otherwise an .onnx is described by
the record embedded in it (`read_export_record`). A graph replaced after its sidecar was written (an
export killed between the two files) is therefore known as what it is, never as the old model.

A checkpoint already in the export cache is described from there (its config from the graph's record,
its description line from the entry; `runtime.cache.known_export`): until something needs its weights,
the checkpoint is not loaded and torch is not imported.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import os
from pathlib import Path
from typing import Optional, Union

from fpa_export.common.errors import FpaError, not_a_file
from fpa_export.export.options import ENGINE_SUFFIXES  # torch-free
from fpa_export.models import DEFAULT_MODEL  # torch-free


class ModelFileError(FpaError):
    """A model file that cannot be used as it is (one line, naming the file and the fix)."""


def kind_of(model) -> str:
    """'checkpoint' (None = the embedded default), 'onnx', 'tensorrt' or 'generator'."""
    if isinstance(model, ModelFile):
        return model.kind
    if model is None:
        return "checkpoint"
    if not isinstance(model, (str, os.PathLike)):
        return "generator"
    suffix = Path(model).suffix.lower()
    return "onnx" if suffix == ".onnx" else "tensorrt" if suffix in ENGINE_SUFFIXES else "checkpoint"


@dataclass
class ModelFile:
    """One model argument, opened: its kind, its path (None for the embedded default) and, loaded on
    first use and kept, its generator, config and export record."""
    kind: str
    path: Optional[Path]
    label: str
    _generator: object = None
    _record: Optional[dict] = None
    _sha256: Optional[str] = None
    _cache: dict = field(default_factory=dict)

    @property
    def generator(self):
        """The fp32 FPAGenerator (checkpoints and generator objects only), loaded once."""
        if self.kind not in ("checkpoint", "generator"):
            raise ModelFileError(f"{self.label}: an exported {self.kind} file holds no PyTorch generator; "
                                 "pass the checkpoint it came from")
        if self._generator is None:
            from fpa_export.models import default_checkpoint_path, load_checkpoint

            self._generator, self._cache["checkpoint"] = load_checkpoint(self.path or default_checkpoint_path())
        return self._generator

    @property
    def summary(self) -> str:
        """One line for the command lines: the model, its training step and which weights (EMA) it holds."""
        from fpa_export.models.summary import describe, describe_config

        if self.kind == "generator":
            return f"{self.label}: a generator object"
        if self.kind == "checkpoint":
            known = self._known() if self._generator is None else None
            if known and known["describe"]:
                return f"{self.label}: {known['describe']}"
            self.generator  # loads the checkpoint once
            return f"{self.label}: {describe(self._cache['checkpoint'])}"
        return f"{self.label}: {self.kind} export of {describe_config(self.record.get('config') or {})}"

    @property
    def record(self) -> dict:
        """The export record of a graph or engine (its sidecar), checked against the file's digest."""
        if self._record is None:
            self._record = _checked_record(self.path, self.kind)
        return self._record

    @property
    def spec(self):
        from fpa_export.export.spec import ExportSpec

        return ExportSpec.from_dict(self.record["inputs"]["spec"])

    @property
    def config(self):
        from fpa_export.models import FPAConfig

        if self.kind == "checkpoint" and self._generator is None and self._known():
            return FPAConfig.from_dict(self._known()["config"])
        if self.kind in ("checkpoint", "generator"):
            return self.generator.config
        return FPAConfig.from_dict(self.record["config"])

    def _known(self) -> Optional[dict]:
        """What the export cache knows of this checkpoint (config, description), looked up once."""
        if "known" not in self._cache:
            from .cache import cache_roots, known_export

            # no cache, nothing to know: then the checkpoint is not even hashed here
            self._cache["known"] = known_export(self.sha256()) if cache_roots() else None
        return self._cache["known"]

    @property
    def native_precision(self) -> str:
        """fp32 for weights; an exported graph's own (fp16 when exported with --fp16)."""
        if self.kind in ("checkpoint", "generator"):
            return "fp32"
        return "fp16" if self.spec.fp16 else "fp32"

    @property
    def checkpoint_path(self) -> Path:
        from fpa_export.models import default_checkpoint_path

        if self.kind != "checkpoint":
            raise ModelFileError(f"{self.label}: not a checkpoint")
        return self.path or default_checkpoint_path()

    def sha256(self) -> str:
        """The model's digest: the checkpoint file's sha256, or for an exported file that of the
        checkpoint it came from (its record's), else the file's own. A file, not its tensors: the
        same weights saved again (another `fpa-convert` run, another save) count as another model."""
        if self._sha256 is None:
            from .digest import file_sha256  # remembered by path, size and mtime

            if self.kind == "generator":
                self._sha256 = _generator_digest(self.generator)
            elif self.kind == "checkpoint":
                self._sha256 = file_sha256(self.checkpoint_path)
            else:
                self._sha256 = _source_digest(self.record) or file_sha256(self.path)
        return self._sha256

    def identity(self, precision: Optional[str] = None) -> dict:
        """{"sha256", "kind", "path", "precision"}: what a sample folder records about its model (the
        path absolute, so it means the same whatever folder the run started from)."""
        path = str(self.path.resolve()) if self.path is not None else self.label
        return {"sha256": self.sha256(), "kind": self.kind, "path": path,
                "precision": self.native_precision if precision is None else precision}


ModelLike = Union[None, str, os.PathLike, ModelFile, object]


def open_model(model: ModelLike = None) -> ModelFile:
    """A ModelFile for `model` (returned as is when it already is one; None or "default": the embedded
    model); nothing heavy is loaded yet, except that a missing file is refused at once."""
    if isinstance(model, ModelFile):
        return model
    if isinstance(model, str) and model == DEFAULT_MODEL:  # the embedded model, by its name
        model = None
    kind = kind_of(model)
    if kind == "generator":
        return ModelFile("generator", None, f"<{type(model).__name__}>", _generator=model)
    if model is None:
        return ModelFile("checkpoint", None, DEFAULT_MODEL)
    path = Path(model)
    if not path.is_file():
        raise ModelFileError(not_a_file(path))
    return ModelFile(kind, path, str(model))


def _checked_record(path: Path, kind: str) -> dict:
    """The graph's or engine's well-formed record (a sidecar only when it records this file's sha256),
    or the one-line refusal of `fpa_export.export.sidecar.record_or_fail`."""
    from fpa_export.export.sidecar import record_or_fail

    return record_or_fail(path, "fpa-export trt" if kind == "tensorrt" else "fpa-export onnx")


def _source_digest(record: dict) -> Optional[str]:
    """The checkpoint digest an export record names; an engine's, through the ONNX graph it was built
    from."""
    inputs = record.get("inputs", {})
    if inputs.get("checkpoint_sha256"):
        return inputs["checkpoint_sha256"]
    if record.get("onnx"):
        from fpa_export.export.onnx_meta import GraphModified
        from fpa_export.export.sidecar import read_export_record

        try:
            graph = read_export_record(Path(record["onnx"])) or {}
        except GraphModified:  # the graph changed since the engine was built: the engine's record stands
            return None
        return (graph.get("inputs") or {}).get("checkpoint_sha256")
    return None


def _generator_digest(generator) -> str:
    """A digest of an in-memory generator's config and weights (for folders sampled from an object)."""
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps(generator.config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(generator.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
