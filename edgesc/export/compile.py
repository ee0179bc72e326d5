"""``edgesc compile DIR --target T``: TensorRT engines for the exported encoder and decoder.

Two build paths, chosen by the installed TensorRT major version:

- **TensorRT 10**: weakly typed by default; an fp16 target on an fp32 graph sets ``BuilderFlag.FP16``. A graph
  exported with ``--precision fp16`` is built strongly typed (its fp32 islands stay fp32).
- **TensorRT 11**: strongly typed only (the precision flags were removed: source ``migration_11`` in
  ``trt_onnx_rules.toml``). An fp16 target needs an fp16 graph; an fp32 graph is refused with a message.

Every dynamic input gets an optimisation profile from the target file resolved against the manifest;
integer control inputs that TensorRT treats as shape tensors get value ranges from the manifest's control
specs. Builds use a timing cache, and engines are cached by a key over graph sha256 + TensorRT version + GPU +
compute capability + precision + profile. GPU name, compute capability and TensorRT version are recorded per
engine in the manifest's ``engines``. The equivalent ``trtexec`` command is returned for the user.

Everything except :func:`build_engine` runs without a GPU and is unit-tested here.
"""
from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesc.errors import ExportError
from edgesc.export.audit import parse_version, version_str
from edgesc.export.manifest import check_graph_files, read_manifest, sha256_file, write_manifest
from edgesc.export.targets import Target, TargetError, load_target, resolve_profile


class CompileUnavailable(ExportError):
    """No NVIDIA GPU or no TensorRT on this machine: nothing can be built (exit code 1, not a user error)."""


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "8.7"


@dataclass
class BuildPlan:
    """Everything needed to build one engine, decided without touching the GPU."""

    graph: str
    onnx_path: Path
    graph_sha256: str
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]
    shape_values: dict[str, tuple[int, int, int]]
    precision: str  # engine precision: fp32 | fp16
    strongly_typed: bool
    fp16_flag: bool
    workspace_mb: int
    tensorrt: str
    notes: list[str] = field(default_factory=list)

    def profile_dict(self) -> dict[str, Any]:
        return {"shapes": {k: {"min": list(v[0]), "opt": list(v[1]), "max": list(v[2])} for k, v in self.shapes.items()},
                "values": {k: {"min": v[0], "opt": v[1], "max": v[2]} for k, v in self.shape_values.items()}}


# ---- profiles -------------------------------------------------------------------------------------------------
def input_profiles(manifest: dict[str, Any], graph: str, target: Target) -> dict[str, tuple[tuple[int, ...], ...]]:
    """min/opt/max shapes for every input of ``graph`` that has a named (dynamic) dimension."""
    batch = manifest.get("export", {}).get("batch", "dynamic")
    dims = resolve_profile(target, manifest, None if batch == "dynamic" else int(batch))
    out: dict[str, tuple[tuple[int, ...], ...]] = {}
    for spec in manifest["graphs"][graph]["inputs"]:
        shape = spec["shape"]
        if all(isinstance(d, int) for d in shape):
            continue
        lo, opt, hi = [], [], []
        for d in shape:
            if isinstance(d, int):
                lo.append(d), opt.append(d), hi.append(d)
                continue
            if d not in dims:
                raise TargetError(f"target {target.name} has no profile for dimension '{d}' of {graph} input "
                                  f"'{spec['name']}' (it defines {', '.join(sorted(dims))})")
            a, b, c = dims[d]
            lo.append(a), opt.append(b), hi.append(c)
        out[spec["name"]] = (tuple(lo), tuple(opt), tuple(hi))
    return out


def control_value_ranges(manifest: dict[str, Any], graph: str) -> dict[str, tuple[int, int, int]]:
    """(min, opt=default, max) for the integer controls of ``graph`` (candidates for TensorRT shape tensors)."""
    out: dict[str, tuple[int, int, int]] = {}
    for name, spec in manifest["controls"].get(graph, {}).items():
        if spec.get("dtype") in ("int64", "int32"):
            lo, hi = int(spec["min"]), int(spec["max"])
            opt = int(spec.get("default", hi))
            out[name] = (lo, min(max(opt, lo), hi), hi)
    return out


# ---- precision and version logic --------------------------------------------------------------------------------
def precision_plan(graph_precision: str, target_precision: str, tensorrt: str, target_name: str) -> tuple[str, bool, bool, list[str]]:
    """(engine precision, strongly_typed, fp16 builder flag, notes) for a graph/target/TensorRT combination."""
    major = parse_version(tensorrt)[0]
    notes: list[str] = []
    if graph_precision not in ("fp32", "fp16") or target_precision not in ("fp32", "fp16"):
        raise ExportError(f"unknown precision: graph {graph_precision!r}, target {target_precision!r}")
    if major >= 11:
        if target_precision == "fp16" and graph_precision == "fp32":
            raise ExportError(
                f"TensorRT {tensorrt} builds strongly typed networks only (no FP16 builder flag): target "
                f"'{target_name}' wants fp16 but the graphs are fp32 — re-export with `edgesc export ... "
                f"--precision fp16`")
        if target_precision == "fp32" and graph_precision == "fp16":
            notes.append("strongly typed build: the fp16 graph's types decide, although the target asks for fp32")
        return graph_precision, True, False, notes
    if major < 10:
        raise ExportError(f"TensorRT {tensorrt} is not supported by edgesc compile (10.x and 11.x are)")
    if graph_precision == "fp16":
        if target_precision == "fp32":
            notes.append("the graph is fp16: built strongly typed, the graph's types decide")
        return "fp16", True, False, notes
    if target_precision == "fp16":
        return "fp16", False, True, notes
    return "fp32", False, False, notes


def check_version_expected(installed: str, target: Target) -> list[str]:
    """Warnings when the installed TensorRT is not one the target expects (``"10"`` in a target = any 10.x)."""
    iv = parse_version(installed)
    for v in target.tensorrt:
        ev = parse_version(v)
        major_only = "." not in v.strip().lower().removesuffix(".x")
        if (major_only and ev[0] == iv[0]) or ev == iv:
            return []
    return [f"target '{target.name}' expects TensorRT {', '.join(target.tensorrt)} but {installed} is installed: "
            f"the engine will only run with TensorRT {installed}"]


# ---- cache keys and paths ---------------------------------------------------------------------------------------
def cache_key(graph_sha256: str, tensorrt: str, gpu: GpuInfo, precision: str, profile: dict[str, Any],
              strongly_typed: bool = False) -> str:
    """sha256 over everything that makes an engine differ; equal keys → the cached engine is reused."""
    payload = json.dumps({"graph": graph_sha256, "tensorrt": tensorrt, "gpu": gpu.name,
                          "cc": gpu.compute_capability, "precision": precision, "profile": profile,
                          "strongly_typed": strongly_typed}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", s).strip("-").lower() or "gpu"


def engine_path(out_dir: Path, graph: str, target: str, key: str) -> Path:
    return out_dir / "engines" / f"{graph}.{target}.{key[:16]}.engine"


def timing_cache_path(out_dir: Path, tensorrt: str, gpu: GpuInfo) -> Path:
    return out_dir / "engines" / f"timing.trt{tensorrt}.{_slug(gpu.name)}.sm{gpu.compute_capability}.cache"


# ---- trtexec ---------------------------------------------------------------------------------------------------
def _shape_str(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape) if shape else "scalar"


def trtexec_command(plan: BuildPlan, engine: Path, timing_cache: Path) -> str:
    """The trtexec command equivalent to :func:`build_engine` for ``plan`` (shape-tensor values excepted)."""
    args = ["trtexec", f"--onnx={plan.onnx_path}", f"--saveEngine={engine}"]
    if plan.shapes:
        for flag, idx in (("--minShapes", 0), ("--optShapes", 1), ("--maxShapes", 2)):
            args.append(flag + "=" + ",".join(f"{n}:{_shape_str(s[idx])}" for n, s in plan.shapes.items()))
    if plan.fp16_flag:
        args.append("--fp16")
    if plan.strongly_typed and parse_version(plan.tensorrt)[0] < 11:
        args.append("--stronglyTyped")  # opt-in on 10.x, always on (flag accepted) in 11.x
    args.append(f"--memPoolSize=workspace:{plan.workspace_mb}M")
    args.append(f"--timingCacheFile={timing_cache}")
    cmd = " ".join(shlex.quote(a) for a in args)
    if plan.shape_values:
        cmd += "  # shape-tensor inputs " + ", ".join(
            f"{n} in [{v[0]}, {v[2]}]" for n, v in plan.shape_values.items()) + " take their values at run time"
    return cmd


# ---- environment ----------------------------------------------------------------------------------------------
def tensorrt_module() -> Any:
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except ImportError:
        raise CompileUnavailable("TensorRT is not installed (pip install tensorrt, or use JetPack's python3-libnvinfer): "
                                 "cannot build engines on this machine") from None
    return trt


def detect_gpu() -> GpuInfo:
    """Name and compute capability of CUDA device 0 (cuda-python, then pycuda, then nvidia-smi)."""
    try:
        try:
            from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]
        except ImportError:
            from cuda import cudart  # type: ignore[import-not-found,no-redef]
        err, props = cudart.cudaGetDeviceProperties(0)
        if int(err) == 0:
            name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
            return GpuInfo(name.strip("\x00 "), f"{props.major}.{props.minor}")
    except Exception:  # noqa: BLE001 - try the next binding
        pass
    try:
        import pycuda.driver as drv  # type: ignore[import-not-found]

        drv.init()
        dev = drv.Device(0)
        major, minor = dev.compute_capability()
        return GpuInfo(dev.name(), f"{major}.{minor}")
    except Exception:  # noqa: BLE001
        pass
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            res = subprocess.run([smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=20, check=True)
            line = res.stdout.strip().splitlines()[0]
            name, cc = (s.strip() for s in line.rsplit(",", 1))
            return GpuInfo(name, cc)
        except Exception:  # noqa: BLE001
            pass
    raise CompileUnavailable("no NVIDIA GPU found (tried cuda-python, pycuda and nvidia-smi): TensorRT engines are "
                             "built on the GPU that will run them")


# ---- planning and building ------------------------------------------------------------------------------------
def plan_builds(out_dir: str | Path, target: Target, tensorrt: str) -> tuple[dict[str, Any], list[BuildPlan]]:
    """Read the export, resolve profiles and precision for ``target`` under TensorRT ``tensorrt``."""
    out = Path(out_dir)
    manifest = read_manifest(out)
    paths = check_graph_files(out, manifest)
    if target.runtime != "tensorrt":
        raise TargetError(f"target '{target.name}' runs on {target.runtime}: there is no engine to compile")
    graph_precision = manifest.get("export", {}).get("precision", "fp32")
    plans = []
    for gname, p in paths.items():
        prec, strong, flag, notes = precision_plan(graph_precision, target.precision, tensorrt, target.name)
        plans.append(BuildPlan(
            graph=gname, onnx_path=p, graph_sha256=manifest["graphs"][gname].get("sha256") or sha256_file(p),
            shapes=input_profiles(manifest, gname, target), shape_values=control_value_ranges(manifest, gname),
            precision=prec, strongly_typed=strong, fp16_flag=flag, workspace_mb=target.workspace_mb,
            tensorrt=tensorrt, notes=notes))
    return manifest, plans


def build_engine(plan: BuildPlan, timing_cache: Path, trt: Any) -> bytes:  # pragma: no cover - needs a GPU
    """Parse the ONNX file and build a serialized engine with the TensorRT Python API (10.x / 11.x)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if plan.strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(plan.onnx_path)):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse {plan.onnx_path.name}: {errs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_mb << 20)
    if plan.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        if t.is_shape_tensor:
            if t.name not in plan.shape_values:
                raise ExportError(f"TensorRT treats input '{t.name}' as a shape tensor but the manifest gives no "
                                  "integer range for it")
            lo, opt, hi = plan.shape_values[t.name]
            profile.set_shape_input(t.name, [lo], [opt], [hi])
        elif any(d < 0 for d in t.shape):
            if t.name not in plan.shapes:
                raise ExportError(f"input '{t.name}' has dynamic dims {tuple(t.shape)} but no profile")
            profile.set_shape(t.name, *plan.shapes[t.name])
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT failed to build an engine for {plan.onnx_path.name} (see the log above)")
    timing_cache.parent.mkdir(parents=True, exist_ok=True)
    timing_cache.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(serialized))


@dataclass
class CompileReport:
    engines: dict[str, dict[str, Any]]
    commands: dict[str, str]
    warnings: list[str]
    reused: list[str]


def compile_export(out_dir: str | Path, target_name: str, force: bool = False) -> CompileReport:
    """Build (or reuse) the engines of an export directory for a target and record them in the manifest."""
    out = Path(out_dir)
    target = load_target(target_name)  # unknown target → TargetError (exit 2) before any GPU check
    read_manifest(out)  # a bad directory is a user error even without a GPU
    if target.runtime != "tensorrt":
        raise TargetError(f"target '{target.name}' runs on {target.runtime}: there is no engine to compile")
    trt = tensorrt_module()
    gpu = detect_gpu()
    installed = version_str(parse_version(trt.__version__))
    warnings = check_version_expected(installed, target)
    if target.jetpack and "orin" not in gpu.name.lower():
        warnings.append(f"target '{target.name}' is a Jetson but this GPU is '{gpu.name}': engines only run on the "
                        "GPU model that built them — build on the device")
    manifest, plans = plan_builds(out, target, installed)
    engines, commands, reused = dict(manifest.get("engines") or {}), {}, []
    tcache = timing_cache_path(out, installed, gpu)
    for plan in plans:
        warnings += [f"{plan.graph}: {n}" for n in plan.notes]
        prof = plan.profile_dict()
        key = cache_key(plan.graph_sha256, installed, gpu, plan.precision, prof, plan.strongly_typed)
        path = engine_path(out, plan.graph, target.name, key)
        commands[plan.graph] = trtexec_command(plan, path, tcache)
        if path.is_file() and not force:
            reused.append(plan.graph)
        else:
            data = build_engine(plan, tcache, trt)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        engines[plan.graph] = {"file": str(path.relative_to(out)), "sha256": sha256_file(path), "gpu": gpu.name,
                               "compute_capability": gpu.compute_capability, "tensorrt": trt.__version__,
                               "precision": plan.precision, "strongly_typed": plan.strongly_typed,
                               "profile": prof, "target": target.name, "cache_key": key,
                               "version_compatible": False, "hardware_compatibility": "none"}
    manifest["engines"] = engines
    write_manifest(out, manifest)
    return CompileReport(engines=engines, commands=commands, warnings=warnings, reused=reused)
