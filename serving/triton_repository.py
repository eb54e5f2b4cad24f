"""Write a Triton model repository for deepgap's network, with batching taken from a study.

    REPO/NAME/config.pbtxt     platform onnxruntime_onnx, dynamic batching, instance group
    REPO/NAME/1/model.onnx     sut/onnx_export's fp32 export (input "input", output "logits")

`write_triton_repository` renders config.pbtxt as plain text (no dependency) and refuses
what Triton would refuse later, in one line, before writing. `read_config_pbtxt` parses
a config back with Triton's own protobuf schema (tritonclient's model_config_pb2), so a
field Triton does not know fails here too. `triton_settings_from_study` turns a saved
sweep (study.json) into max_batch_size, preferred batch size and queue delay, and says
where each came from.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from plumbing.errors import ConfigError, OutputError, StudyError, first_line
from plumbing.files import atomic_path
from sut.backends.base import MODELS, ModelSpec
from sut.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx

if TYPE_CHECKING:
    from reports.studies import Study

PLATFORM = "onnxruntime_onnx"
KINDS = ("KIND_GPU", "KIND_CPU")
# fp16 is TensorRT's, as Triton's ONNX Runtime backend offers it: the fp32 graph compiled
# by the TensorRT execution provider in FP16 (GPU instances only). Inputs stay FP32.
PRECISIONS = ("fp32", "fp16")
KNEES = ("knee_90", "knee_95")
# When a study has no Server SLO search: the Server batch timeout of deepgap's GPU
# profiles (scenarios/profiles/*.yaml), the same trade of latency for fuller batches.
DEFAULT_QUEUE_DELAY_US = 2000
CONFIG_FILE = "config.pbtxt"
_INSTALL = "parsing config.pbtxt needs Triton's schema from tritonclient: pip install 'tritonclient[grpc]'"


def write_triton_repository(out_dir: Path | str, model: str, precision: str = "fp32", image_size: int = 224,
                            max_batch_size: int = 64, preferred_batch_sizes: Sequence[int] = (),
                            max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US, instance_count: int = 1,
                            kind: str = "KIND_GPU", onnx_path: Path | str | None = None, name: str = "",
                            weights: str = "seeded", seed: int = 0, num_classes: int = 1000,
                            notes: Sequence[str] = (), overwrite: bool = False,
                            cache_dir: Path | str | None = None) -> Path:
    """REPO/NAME (NAME defaults to the model's): its config.pbtxt and 1/model.onnx, the
    given `onnx_path` or the export of (model, weights, seed, image_size). `notes` become
    comment lines at the top of config.pbtxt (say where the numbers came from)."""
    name = name or model
    preferred = [int(b) for b in preferred_batch_sizes]
    _check(model, precision, image_size, max_batch_size, preferred, max_queue_delay_us, instance_count, kind, name)
    model_dir = Path(out_dir) / name
    if model_dir.exists() and any(model_dir.iterdir()) and not overwrite:
        raise OutputError(f"{model_dir} already holds a model; choose another folder or --name, or replace it "
                          "with --overwrite")
    if onnx_path is None:
        source = export_onnx(ModelSpec(model, "fp32", weights=weights, seed=seed, image_size=image_size,
                                       num_classes=num_classes), cache_dir)
    else:
        source = Path(onnx_path)
        _check_onnx(source, image_size)
    text = render_config(name, precision, image_size, max_batch_size, preferred, max_queue_delay_us,
                         instance_count, kind, num_classes, notes)
    try:
        with atomic_path(model_dir / "1" / "model.onnx") as tmp:
            shutil.copyfile(source, tmp)
        with atomic_path(model_dir / CONFIG_FILE) as tmp:
            tmp.write_text(text)
    except OSError as exc:
        raise OutputError(f"cannot write the Triton repository {model_dir}: {exc.strerror or exc}") from None
    return model_dir


def render_config(name: str, precision: str, image_size: int, max_batch_size: int, preferred: Sequence[int],
                  max_queue_delay_us: int, instance_count: int, kind: str, num_classes: int = 1000,
                  notes: Sequence[str] = ()) -> str:
    """config.pbtxt text. With max_batch_size > 0 Triton adds the batch dimension itself,
    so dims name one sample: [3, H, W] in, [classes] out."""
    lines = [f"# {line}" for note in notes for line in str(note).splitlines()]
    lines += [
        f'name: "{name}"',
        f'platform: "{PLATFORM}"',
        f"max_batch_size: {max_batch_size}",
        "input [",
        "  {",
        f'    name: "{INPUT_NAME}"',
        "    data_type: TYPE_FP32",
        f"    dims: [ 3, {image_size}, {image_size} ]",
        "  }",
        "]",
        "output [",
        "  {",
        f'    name: "{OUTPUT_NAME}"',
        "    data_type: TYPE_FP32",
        f"    dims: [ {num_classes} ]",
        "  }",
        "]",
        "dynamic_batching {",
    ]
    if preferred:
        lines.append(f"  preferred_batch_size: [ {', '.join(str(b) for b in preferred)} ]")
    lines += [
        f"  max_queue_delay_microseconds: {max_queue_delay_us}",
        "}",
        "instance_group [",
        "  {",
        f"    count: {instance_count}",
        f"    kind: {kind}",
        "  }",
        "]",
    ]
    if precision == "fp16":
        lines += [
            "optimization {",
            "  execution_accelerators {",
            "    gpu_execution_accelerator: [",
            "      {",
            '        name: "tensorrt"',
            '        parameters { key: "precision_mode" value: "FP16" }',
            "      }",
            "    ]",
            "  }",
            "}",
        ]
    return "\n".join(lines) + "\n"


def read_config_pbtxt(path: Path | str) -> dict[str, Any]:
    """config.pbtxt parsed with Triton's ModelConfig schema, as a dict of its fields (proto
    field names; int64 values such as dims come back as strings, as protobuf's JSON does)."""
    try:
        from google.protobuf import json_format, text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise ConfigError(_INSTALL) from None
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        config = text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise ConfigError(f"{path} is not a Triton model config: {first_line(exc)}") from None
    return json_format.MessageToDict(config, preserving_proto_field_name=True)


@dataclass(frozen=True)
class TritonSettings:
    model: str
    precision: str
    backend: str
    max_batch_size: int
    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_us: int
    sources: dict[str, str] = field(default_factory=dict)  # setting -> where its value came from

    def notes(self) -> list[str]:
        return [f"{key}: {why}" for key, why in self.sources.items()]


def triton_settings_from_study(study: Path | str, model: str | None = None, precision: str | None = None,
                               backend: str | None = None, knee: str = "knee_90") -> TritonSettings:
    """Batching for one (model, precision, backend) of a saved study (STUDY_DIR or its
    study.json): max_batch_size and the preferred batch size are the Offline curve's knee
    (the smallest batch within 10% of the peak for knee_90; 5% for knee_95), a batch past
    which throughput barely grows while latency does; the queue delay is the batch timeout
    the Server SLO search met the latency bound with, else DEFAULT_QUEUE_DELAY_US. Each
    may be left out when the study holds a single group."""
    from reports.studies import load_study

    if knee not in KNEES:
        raise ConfigError(f"knee {knee!r} is not one of {', '.join(KNEES)}")
    loaded = load_study(study)
    curves = [c for c in loaded.curves if (model is None or c.model == model)
              and (precision is None or c.precision == precision) and (backend is None or c.backend == backend)]
    if len(curves) != 1:
        held = ", ".join(f"{c.model} {c.precision} {c.backend}" for c in loaded.curves) or "none"
        wanted = " ".join(x for x in (model, precision, backend) if x) or "one group"
        what = "no Offline curve" if not curves else f"{len(curves)} Offline curves"
        raise StudyError(f"{loaded.directory}: {what} for {wanted}; its curves: {held} (choose model, precision "
                         "and backend)")
    curve = curves[0]
    batch = getattr(curve, knee)
    if batch is None:
        raise StudyError(f"{loaded.directory}: the {curve.model} {curve.precision} curve records no {knee}")
    sweep = ", ".join(str(b) for b in sorted(curve.points))
    share = "90%" if knee == "knee_90" else "95%"
    sources = {
        "max_batch_size": f"Offline {knee} of {curve.model} {curve.precision} {curve.backend}: batch {batch}, the "
                          f"smallest of the sweep ({sweep}) reaching {share} of the peak "
                          f"{curve.peak:.0f} samples/s (at {curve.points.get(batch, 0):.0f})",
        "preferred_batch_size": f"[{batch}]: the same knee",
    }
    delay, where = _server_batch_timeout(loaded, curve.model, curve.precision, curve.backend)
    sources["max_queue_delay_microseconds"] = where
    return TritonSettings(model=curve.model, precision=curve.precision, backend=curve.backend,
                          max_batch_size=int(batch), preferred_batch_sizes=(int(batch),),
                          max_queue_delay_us=delay, sources=sources)


def _server_batch_timeout(study: Study, model: str, precision: str, backend: str) -> tuple[int, str]:
    for search in study.slo_searches:
        if (search.model, search.precision, search.backend) != (model, precision, backend):
            continue
        if search.batch_timeout_us is not None:
            bound = f"p{search.percentile:g} <= {search.latency_ms} ms"
            return search.batch_timeout_us, (f"{search.batch_timeout_us} us: the batch timeout the Server SLO search "
                                             f"({bound}) met the bound with, up to {search.max_qps or 0:.0f} QPS")
    return DEFAULT_QUEUE_DELAY_US, (f"{DEFAULT_QUEUE_DELAY_US} us: the study has no Server SLO search for "
                                    f"{model} {precision} {backend}; deepgap's GPU profiles' Server batch timeout")


def _check(model: str, precision: str, image_size: int, max_batch_size: int, preferred: list[int],
           max_queue_delay_us: int, instance_count: int, kind: str, name: str) -> None:
    if model not in MODELS:
        raise ConfigError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: the ONNX Runtime repository runs {', '.join(PRECISIONS)}")
    if precision == "fp16" and kind != "KIND_GPU":
        raise ConfigError("fp16 is TensorRT's execution provider, which needs KIND_GPU instances")
    if kind not in KINDS:
        raise ConfigError(f"instance kind {kind!r} is not one of {', '.join(KINDS)}")
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"model name {name!r} cannot be a folder name")
    for label, value, low in (("image size", image_size, 1), ("max_batch_size", max_batch_size, 1),
                              ("instance count", instance_count, 1), ("max queue delay", max_queue_delay_us, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{label} must be an integer of at least {low}, got {value!r}")
    for batch in preferred:
        if not 1 <= batch <= max_batch_size:
            raise ConfigError(f"preferred batch size {batch} is not within 1..max_batch_size ({max_batch_size})")
    if len(set(preferred)) != len(preferred):
        raise ConfigError(f"preferred batch sizes {preferred} list a size twice")


def _check_onnx(path: Path, image_size: int) -> None:
    """The file is an ONNX model with deepgap's input and output names and image size."""
    import onnx

    if not path.is_file():
        raise ConfigError(f"ONNX file {path}: no such file")
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:
        raise ConfigError(f"{path} is not a readable ONNX model: {first_line(exc)}") from None
    inputs = {i.name: [d.dim_value or -1 for d in i.type.tensor_type.shape.dim] for i in graph.input}
    outputs = [o.name for o in graph.output]
    if list(inputs) != [INPUT_NAME] or OUTPUT_NAME not in outputs:
        raise ConfigError(f"{path} has inputs {list(inputs)} and outputs {outputs}; config.pbtxt names "
                          f"{INPUT_NAME!r} -> {OUTPUT_NAME!r} (use sut/onnx_export's export)")
    if inputs[INPUT_NAME][1:] != [3, image_size, image_size]:
        raise ConfigError(f"{path} takes {inputs[INPUT_NAME]}, not [N,3,{image_size},{image_size}]")
