"""Export a checkpoint (or a model) to ``encoder.onnx``, ``decoder.onnx`` and ``manifest.json`` (docs/contract.md).

- The inference form of the codec (``model.encoder.inference()`` / ``model.decoder.inference()``: skipped
  work is really not computed) goes through ``torch.onnx.export(..., dynamo=True)`` at opset 20 with
  ``external_data=False`` and a dynamic batch ``B`` (``torch.export.Dim``); the decoder also has a dynamic token
  count ``K`` in [0, M(+1)] (erased tokens are dropped by the runtime) and, with several ratio levels, a
  dynamic ``S``.
- Dynamic export: the controls the preset has are 0-d graph inputs. Frozen controls (``--static`` freezes all,
  or the ones given with ``--budget/--depth/...``) are passed as Python constants, so the exporter folds them:
  with a frozen budget, ``k`` is a constant and TopK gets a constant K.
- The graphs carry ``edgesc.model_hash`` / ``edgesc.model_id`` in ``metadata_props``; the manifest records
  sha256 of both files, the control specs, the FLOP-model parameters, the exporter versions, the validation
  report (``validate.py``) and the TensorRT audit (``audit.py``), and is written atomically.
- ``precision="fp16"``: :mod:`edgesc.export.fp16` converts both graphs (I/O and decisions stay fp32) and the
  validation compares against the fp32 PyTorch model with the fp16 tolerances.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import onnx
import torch
from torch import nn

from edgesc.config import ModelConfig
from edgesc.errors import CheckpointError, ExportError
from edgesc.export.audit import AuditResult, audit_for_targets
from edgesc.export.controls import all_specs, check_frozen, control_names
from edgesc.export.manifest import FORMAT, describe_io, sha256_file, write_manifest
from edgesc.export.targets import list_targets, load_targets

ENCODER_OUTPUTS = ["symbols", "token_index", "layer_tokens", "width_units"]


def decoder_outputs(cfg: ModelConfig) -> list[str]:
    return ["image" if cfg.task == "reconstruction" else "logits", "layer_tokens", "width_units"]


@dataclass
class ExportResult:
    out_dir: Path
    manifest: dict[str, Any]
    manifest_path: Path
    valid: bool
    audit_ok: bool
    sizes: dict[str, int] = field(default_factory=dict)
    validation: dict[str, Any] | None = None
    audit_reports: list[str] = field(default_factory=list)


# ---- loading ---------------------------------------------------------------------------------------------------
def _load_checkpoint(path: Path) -> tuple[ModelConfig, nn.Module, dict[str, Any]]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    from edgesc.train.checkpoint import load_checkpoint

    return load_checkpoint(path)


def resolve_model(ckpt_or_model: str | Path | nn.Module) -> tuple[ModelConfig, nn.Module, str, str]:
    """(cfg, model in eval mode, model id, weights hash) from a checkpoint path or a built model."""
    from edgesc.train.checkpoint import weights_sha256

    if isinstance(ckpt_or_model, nn.Module):
        model = ckpt_or_model.eval()
        cfg = getattr(model, "cfg", None)
        if not isinstance(cfg, ModelConfig):
            raise ExportError("export_model needs an edgesc model (SemanticCodec with .cfg) or a checkpoint path")
        return cfg, model, cfg.name, weights_sha256(model.state_dict())
    path = Path(ckpt_or_model)
    cfg, model, _meta = _load_checkpoint(path)
    return cfg, model.eval(), path.stem, weights_sha256(model.state_dict())


# ---- wrappers with the contract's input order -----------------------------------------------------------------------
class _Side(nn.Module):
    """Positional wrapper: data inputs, then the dynamic controls; frozen controls as Python constants."""

    def __init__(self, inner: nn.Module, n_data: int, dynamic: list[str], frozen: dict[str, float | int]) -> None:
        super().__init__()
        self.inner, self.n_data, self.dynamic, self.frozen = inner, n_data, list(dynamic), dict(frozen)

    def forward(self, *args: torch.Tensor):  # noqa: D102
        data, ctrl = args[: self.n_data], args[self.n_data :]
        kwargs: dict[str, Any] = dict(zip(self.dynamic, ctrl))
        for name, value in self.frozen.items():
            kwargs[name] = torch.tensor(value, dtype=torch.int64 if isinstance(value, int) else torch.float32)
        return self.inner(*data, **kwargs)


def _control_tensor(spec: dict[str, Any], value: float | int | None = None) -> torch.Tensor:
    v = spec["default"] if value is None else value
    return torch.tensor(v, dtype=torch.int64 if spec["dtype"] == "int64" else torch.float32)


@contextlib.contextmanager
def _quiet():
    """The dynamo exporter is chatty (progress lines, torchvision notices); keep the CLI output readable."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript")]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lvl in zip(loggers, old):
            lg.setLevel(lvl)


def _export(module: nn.Module, args: tuple, input_names: list[str], output_names: list[str],
            dynamic_shapes: tuple, opset: int, what: str) -> onnx.ModelProto:
    try:
        with _quiet():
            prog = torch.onnx.export(module, args, dynamo=True, opset_version=opset, input_names=input_names,
                                     output_names=output_names, dynamic_shapes={"args": dynamic_shapes}, external_data=False,
                                     optimize=True, verbose=False)
    except Exception as exc:  # noqa: BLE001 - exporter failures are many and deep: one line for the user
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"exporting the {what} failed: {type(exc).__name__}: {first[:300]}") from exc
    return prog.model_proto


def _name_dims(model: onnx.ModelProto, names: dict[str, list[str | None]]) -> None:
    """Give the contract's names (B, K, S) to symbolic dims of graph I/O (positions with a name in ``names``)."""
    for vi in list(model.graph.input) + list(model.graph.output):
        want = names.get(vi.name)
        if not want:
            continue
        for d, n in zip(vi.type.tensor_type.shape.dim, want):
            if n and not d.HasField("dim_value"):
                d.dim_param = n


def _set_metadata(model: onnx.ModelProto, values: dict[str, str]) -> None:
    keep = [p for p in model.metadata_props if p.key not in values]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for k, v in values.items():
        model.metadata_props.add(key=k, value=v)


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("edgesc", "torch", "onnx", "onnxruntime", "onnxscript"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def _model_section(cfg: ModelConfig, model_id: str, model_hash: str) -> dict[str, Any]:
    return {"id": model_id, "preset": cfg.name, "hash": model_hash, "task": cfg.task, "image_size": cfg.image_size,
            "channels": cfg.channels, "patch_size": cfg.patch_size, "num_patches": cfg.num_patches,
            "embed_dim": cfg.embed_dim, "heads": cfg.heads, "mlp_dim": cfg.mlp_dim, "mlp_groups": cfg.mlp_groups,
            "num_classes": cfg.num_classes, "class_token": cfg.class_token, "encoder_layers": cfg.encoder.layers,
            "decoder_layers": cfg.decoder.layers, "symbols_per_token": list(cfg.coder.symbols)}


def _width_info(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Width chunking of the inference forms (contract: recorded by the exporter): chunks and units per chunk."""
    out: dict[str, dict[str, Any]] = {}
    for side in ("encoder", "decoder"):
        inf = getattr(model, side).inference()
        chunks, chunk = getattr(inf, "width_chunks", None), getattr(getattr(inf, "side", None), "chunk", None)
        if chunks is not None and chunk is not None:
            out[side] = {"width_chunks": int(chunks), "chunk": [int(c) for c in chunk]}
    return out


def _flops_section(cfg: ModelConfig, width: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    width = width or {}
    return {"convention": "FLOPs = 2*MACs, matmul-class ops",
            "encoder": {"halting": cfg.depth.enabled, "tokens": cfg.tokens.enabled, "coder_hidden": cfg.coder.hidden,
                        "specials": cfg.specials, "select_at": cfg.tokens.select_at if cfg.tokens.enabled else 0,
                        **width.get("encoder", {})},
            "decoder": {"halting": cfg.depth.enabled, "coder_hidden": cfg.coder.hidden, "head": cfg.task,
                        **width.get("decoder", {})}}


def param_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and persistent buffers at float32."""
    return sum(t.numel() * 4 for t in model.state_dict().values() if torch.is_floating_point(t))


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the initializers (and Constant tensors) stored in an ONNX graph, subgraphs included."""
    from onnx import numpy_helper

    total = 0

    def walk(g: onnx.GraphProto) -> None:
        nonlocal total
        total += sum(numpy_helper.to_array(i).nbytes for i in g.initializer)
        for n in g.node:
            for a in n.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    total += numpy_helper.to_array(a.t).nbytes
                elif a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for sg in a.graphs:
                        walk(sg)

    walk(model.graph)
    return total


# ---- building the two graphs ------------------------------------------------------------------------------------------
def export_encoder(cfg: ModelConfig, model: nn.Module, frozen: dict[str, float | int], opset: int = 20,
                   batch: str | int = "dynamic") -> tuple[onnx.ModelProto, nn.Module, tuple]:
    """Export only the encoder (device graph); returns (graph, the wrapped module, its example args)."""
    specs = all_specs(cfg)
    dyn = [n for n in control_names(cfg, "encoder") if n not in frozen]
    b_ex = 2 if batch == "dynamic" else int(batch)
    bdim = torch.export.Dim("B", min=1, max=4096) if batch == "dynamic" else None
    enc_frozen = {k: v for k, v in frozen.items() if k in control_names(cfg, "encoder")}
    enc = _Side(model.encoder.inference().eval(), 1, dyn, enc_frozen).eval()
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(b_ex, cfg.channels, cfg.image_size, cfg.image_size, generator=gen)
    enc_args = (image, *(_control_tensor(specs["encoder"][n]) for n in dyn))
    shapes = ({0: bdim} if bdim is not None else None, *(None for _ in dyn))
    proto = _export(enc, enc_args, ["image", *dyn], ENCODER_OUTPUTS, shapes, opset, "encoder")
    _name_dims(proto, {"image": ["B"], "symbols": ["B", "K", "S"], "token_index": ["B", "K"], "layer_tokens": ["B"]})
    return proto, enc, enc_args


def build_graphs(cfg: ModelConfig, model: nn.Module, frozen: dict[str, float | int], opset: int = 20,
                 batch: str | int = "dynamic") -> tuple[onnx.ModelProto, onnx.ModelProto, dict[str, list[str]]]:
    """Export the encoder and decoder inference forms; returns (encoder, decoder, dynamic controls per side)."""
    specs = all_specs(cfg)
    dyn = {s: [n for n in control_names(cfg, s) if n not in frozen] for s in ("encoder", "decoder")}
    m, b_ex = cfg.num_patches, 2 if batch == "dynamic" else int(batch)
    bdim = torch.export.Dim("B", min=1, max=4096) if batch == "dynamic" else None

    enc_onnx, enc, enc_args = export_encoder(cfg, model, frozen, opset, batch)
    dec_inf = model.decoder.inference().eval()
    dec_frozen = {k: v for k, v in frozen.items() if k in control_names(cfg, "decoder")}
    dec = _Side(dec_inf, 2, dyn["decoder"], dec_frozen).eval()
    with torch.no_grad():
        sym, idx, _, _ = enc(*enc_args)
    k_ex = sym.shape[1]
    if k_ex < 2:  # dims of size 0/1 are specialised by torch.export: example with 2 tokens
        sym = torch.cat([sym, sym], dim=1)[:, :2]
        idx = torch.arange(2).expand(b_ex, 2).contiguous()
    ratio_frozen = "ratio" in frozen or len(cfg.coder.symbols) == 1
    kdim = torch.export.Dim("K", min=0, max=m + int(cfg.class_token))
    sdim = None if ratio_frozen else torch.export.Dim("S", min=1, max=max(cfg.coder.symbols))
    dec_args = (sym.contiguous(), idx.contiguous(), *(_control_tensor(specs["decoder"][n]) for n in dyn["decoder"]))
    sym_shape: dict[int, Any] = {1: kdim}
    if bdim is not None:
        sym_shape[0] = bdim
    if sdim is not None:
        sym_shape[2] = sdim
    idx_shape: dict[int, Any] = {1: kdim, **({0: bdim} if bdim is not None else {})}
    dec_shapes = (sym_shape, idx_shape, *(None for _ in dyn["decoder"]))
    out_names = decoder_outputs(cfg)
    dec_onnx = _export(dec, dec_args, ["symbols", "token_index", *dyn["decoder"]], out_names, dec_shapes, opset,
                       "decoder")
    _name_dims(dec_onnx, {"symbols": ["B", "K", "S"], "token_index": ["B", "K"], out_names[0]: ["B"],
                          "layer_tokens": ["B"]})
    return enc_onnx, dec_onnx, dyn


# ---- the public entry point ----------------------------------------------------------------------------------------
def export_model(ckpt_or_model: str | Path | nn.Module, out_dir: str | Path, dynamic: bool = True,
                 frozen_controls: dict[str, float | int] | None = None, opset: int = 20, precision: str = "fp32",
                 batch: str | int = "dynamic", validate: bool = True, targets: Sequence[str] | None = None,
                 validation_settings: int = 20) -> ExportResult:
    """Export, validate and audit; write graphs and ``manifest.json`` (or ``manifest.invalid.json``) to ``out_dir``.

    ``dynamic=False`` freezes every control (given values, else defaults); with ``dynamic=True`` only the
    controls in ``frozen_controls`` are frozen. ``targets`` (names) select the TensorRT versions audited;
    ``None`` audits for every shipped TensorRT target.
    """
    if precision not in ("fp32", "fp16"):
        raise ExportError(f"precision must be fp32 or fp16, got {precision!r}")
    if batch != "dynamic" and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise ExportError(f"batch must be 'dynamic' or a positive integer, got {batch!r}")
    if not (18 <= opset <= 23):
        raise ExportError(f"opset {opset} is not supported here: the dynamo exporter targets opset 18-23 (default 20)")
    tlist = load_targets(list(targets) if targets is not None else
                         [t for t in list_targets() if load_targets([t])[0].runtime == "tensorrt"])
    cfg, model, model_id, model_hash = resolve_model(ckpt_or_model)
    frozen = check_frozen(cfg, dict(frozen_controls or {}))
    specs = all_specs(cfg)
    if not dynamic:
        for side in ("encoder", "decoder"):
            for name, spec in specs[side].items():
                frozen.setdefault(name, spec["default"])
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)

    enc32, dec32, dyn = build_graphs(cfg, model, frozen, opset, batch)
    graphs = {"encoder": enc32, "decoder": dec32}
    fp16_report: dict[str, Any] = {}
    if precision == "fp16":
        from edgesc.export.fp16 import convert_to_fp16

        for g in list(graphs):
            graphs[g], rep = convert_to_fp16(graphs[g])
            fp16_report[g] = rep.to_dict()
    meta = {"edgesc.model_hash": model_hash, "edgesc.model_id": model_id, "edgesc.format": FORMAT}
    graph_section: dict[str, Any] = {}
    sizes: dict[str, int] = {}
    for g, proto in graphs.items():
        _set_metadata(proto, {**meta, "edgesc.graph": g})
        try:
            onnx.checker.check_model(proto)
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"the exported {g} graph is not valid ONNX: {str(exc).splitlines()[0]}") from None
        path = out / f"{g}.onnx"
        tmp = out / f".{g}.onnx.tmp"
        onnx.save(proto, str(tmp))
        os.replace(tmp, path)
        sizes[g] = path.stat().st_size
        graph_section[g] = {"file": path.name, "sha256": sha256_file(path), **describe_io(proto)}

    pbytes = param_bytes(model)
    wbytes = {g: weight_bytes(p) for g, p in graphs.items()}
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "model": _model_section(cfg, model_id, model_hash),
        "graphs": graph_section,
        "controls": {side: {n: specs[side][n] for n in dyn[side]} for side in ("encoder", "decoder")},
        "frozen": {side: {n: v for n, v in frozen.items() if n in control_names(cfg, side)}
                   for side in ("encoder", "decoder")},
        "flops": _flops_section(cfg, _width_info(model)),
        "export": {"dynamic": dynamic, "opset": opset, "precision": precision, "batch": batch,
                   "external_data": False, "versions": _versions(),
                   "weights": {"parameter_bytes_fp32": pbytes, "graph_weight_bytes": wbytes,
                               "ratio_to_parameters": (sum(wbytes.values()) / pbytes) if pbytes else None},
                   **({"fp16": fp16_report} if fp16_report else {})},
        "validation": None,
        "audit": None,
        "engines": {},
    }

    versions = {t.name: list(t.tensorrt) for t in tlist if t.runtime == "tensorrt"}
    audit = audit_for_targets({g: out / f"{g}.onnx" for g in graphs}, versions) if versions else {"ok": True}
    manifest["audit"] = audit
    reports = []
    for g in graphs:
        for v, res in (audit.get(g) or {}).items():
            r = AuditResult.from_dict(res)
            if not r.ok:
                reports.append(r.report(f"audit {g}"))  # every offending node, then the warnings
            else:
                line = r.report(f"audit {g}").splitlines()[0]
                if r.data_dependent_shapes:
                    line += " — data-dependent shapes: the TensorRT runtime needs an output allocator, no CUDA graphs"
                reports.append(line)

    valid = True
    if validate:
        from edgesc.export.validate import validate_export

        report = validate_export(model, cfg, out, manifest, settings=validation_settings)
        manifest["validation"] = report
        valid = bool(report["ok"])
    else:
        manifest["validation"] = {"ok": None, "skipped": True, "summary": "skipped (--no-validate)"}
    path = write_manifest(out, manifest, valid=valid)
    return ExportResult(out_dir=out, manifest=manifest, manifest_path=path, valid=valid, audit_ok=bool(audit["ok"]),
                        sizes=sizes, validation=manifest["validation"], audit_reports=reports)
