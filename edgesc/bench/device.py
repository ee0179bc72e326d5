"""Which device a benchmark runs on: presence checks, device profiles from the target files, Jetson power state.

Device kinds: ``cpu`` (always present), ``cuda`` (an NVIDIA GPU visible to the driver and a CUDA-capable
backend: ONNX Runtime's CUDA provider or TensorRT), ``jetson`` (an NVIDIA Jetson module: ``/etc/nv_tegra_release``
or a device-tree model naming Jetson). Asking for a device that is not present raises
:class:`~edgesc.bench.errors.DeviceNotPresent` (the CLI exits with code 2); nothing is ever simulated.

Device profiles are the deployment targets ``export/targets/*.toml`` (package ``edgesc_targets``), read here
with :mod:`tomllib` so that the benchmark layer does not import the exporter. On a Jetson the power mode
(``nvpmodel -q``), the clock state (``jetson_clocks --show``) and one power sample (``tegrastats``) are recorded
only when those tools exist; a missing tool is recorded as ``null``, never guessed.
"""
from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from edgesc.bench.errors import BenchError, DeviceNotPresent

DEVICES = ("cpu", "cuda", "jetson")
_TEGRA_RELEASE = Path("/etc/nv_tegra_release")
_DT_MODEL = Path("/proc/device-tree/model")


@dataclass(frozen=True)
class TargetProfile:
    """The parts of a deployment target the benchmark uses."""

    name: str
    description: str
    runtime: str
    precision: str
    datasheet: dict[str, Any]
    jetpack: str | None
    path: str

    @property
    def device_kind(self) -> str:
        if self.jetpack is not None or self.name.startswith("jetson"):
            return "jetson"
        return "cuda" if self.runtime == "tensorrt" else "cpu"


def targets_dir() -> Path:
    return Path(str(resources.files("edgesc_targets"))) / "targets"


def load_profiles() -> dict[str, TargetProfile]:
    """Every shipped target, by name."""
    out: dict[str, TargetProfile] = {}
    for path in sorted(targets_dir().glob("*.toml")):
        out[path.stem] = load_profile(path)
    return out


def load_profile(name_or_path: str | Path) -> TargetProfile:
    """One target by name (``jetson-orin-nx``) or path; :class:`BenchError` naming the file when unusable."""
    s = str(name_or_path)
    path = Path(s) if (s.endswith(".toml") or "/" in s) else targets_dir() / f"{s}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in targets_dir().glob("*.toml"))) or "(none)"
        raise BenchError(f"unknown target '{s}' (known: {known})")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BenchError(f"{path}: not valid TOML ({exc})") from None
    for key in ("name", "runtime", "precision"):
        if not isinstance(raw.get(key), str):
            raise BenchError(f"{path}: target needs a string '{key}'")
    ds = raw.get("datasheet", {})
    if not isinstance(ds, dict):
        raise BenchError(f"{path}: [datasheet] must be a table")
    jp = raw.get("jetpack")
    return TargetProfile(name=raw["name"], description=str(raw.get("description", "")), runtime=raw["runtime"],
                         precision=raw["precision"], datasheet=dict(ds), jetpack=None if jp is None else str(jp),
                         path=str(path))


def profiles_for(kind: str) -> list[TargetProfile]:
    """Targets that describe a device of ``kind``."""
    return [p for p in load_profiles().values() if p.device_kind == kind]


# ---- presence ---------------------------------------------------------------------------------------------
def _read(path: Path) -> str:
    try:
        return path.read_bytes().replace(b"\x00", b"").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def jetson_model() -> str | None:
    """The Jetson module's name, or None when this is not a Jetson."""
    model = _read(_DT_MODEL)
    if "jetson" in model.lower():
        return model
    if _TEGRA_RELEASE.is_file():
        if model:
            return model
        release = _read(_TEGRA_RELEASE)
        return release.splitlines()[0] if release else "NVIDIA Jetson"
    return None


def nvidia_gpus() -> list[str]:
    """Names of the NVIDIA GPUs the driver exposes (``/proc/driver/nvidia/gpus``, else ``nvidia-smi``)."""
    names: list[str] = []
    root = Path("/proc/driver/nvidia/gpus")
    if root.is_dir():
        for info in sorted(root.glob("*/information")):
            m = re.search(r"^Model:\s*(.+)$", _read(info), re.M)
            names.append(m.group(1).strip() if m else info.parent.name)
    if not names and shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=10, check=False).stdout
            names = [line.strip() for line in out.splitlines() if line.strip()]
        except (OSError, subprocess.SubprocessError):
            names = []
    return names


def cuda_backends() -> list[str]:
    """CUDA-capable backends importable here: ``onnxruntime-cuda`` and/or ``tensorrt``."""
    found: list[str] = []
    try:
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            found.append("onnxruntime-cuda")
    except ImportError:
        pass
    try:
        import importlib.util

        if importlib.util.find_spec("tensorrt") is not None:
            found.append("tensorrt")
    except (ImportError, ValueError):
        pass
    return found


def cpu_name() -> str:
    m = re.search(r"^model name\s*:\s*(.+)$", _read(Path("/proc/cpuinfo")), re.M)
    return m.group(1).strip() if m else (platform.processor() or platform.machine())


@dataclass
class DeviceInfo:
    """What the benchmark ran on (stored in the JSON under ``device``)."""

    kind: str
    name: str
    cpu: str
    cores: int
    platform: str
    gpus: list[str] = field(default_factory=list)
    cuda_backends: list[str] = field(default_factory=list)
    jetson: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "cpu": self.cpu, "cores": self.cores,
                "platform": self.platform, "gpus": list(self.gpus), "cuda_backends": list(self.cuda_backends),
                "jetson": self.jetson}


def require_device(kind: str) -> DeviceInfo:
    """Check that ``kind`` is present and describe it; :class:`DeviceNotPresent` (exit 2) when it is not."""
    if kind not in DEVICES:
        raise BenchError(f"unknown device {kind!r}; choose one of {', '.join(DEVICES)}")
    cores = os.cpu_count() or 1
    plat = f"{platform.system()} {platform.release()} {platform.machine()}"
    cpu = cpu_name()
    if kind == "cpu":
        return DeviceInfo("cpu", cpu, cpu, cores, plat)
    hint = "; use --estimate to predict its latency from the target's datasheet instead"
    jet = jetson_model()
    if kind == "jetson":
        if jet is None:
            raise DeviceNotPresent(f"device 'jetson' is not present: this is not a Jetson (no {_TEGRA_RELEASE}, "
                                   f"no Jetson in {_DT_MODEL}){hint}")
        backends = cuda_backends()
        return DeviceInfo("jetson", jet, cpu, cores, plat, gpus=[jet], cuda_backends=backends,
                          jetson=jetson_power_state())
    gpus = nvidia_gpus() or ([jet] if jet else [])
    if not gpus:
        raise DeviceNotPresent(f"device 'cuda' is not present: no NVIDIA GPU is visible (no /proc/driver/nvidia, "
                               f"no nvidia-smi){hint}")
    backends = cuda_backends()
    if not backends:
        raise DeviceNotPresent(f"device 'cuda' has GPU {gpus[0]!r} but no CUDA backend is installed "
                               f"(onnxruntime-gpu or tensorrt){hint}")
    return DeviceInfo("cuda", gpus[0], cpu, cores, plat, gpus=gpus, cuda_backends=backends,
                      jetson=jetson_power_state() if jet else None)


def jetson_target_for(model: str | None) -> TargetProfile | None:
    """The shipped Jetson target matching a device-tree model string (Orin Nano / Orin NX / AGX Orin)."""
    if not model:
        return None
    low = model.lower()
    for key, name in (("nano", "jetson-orin-nano"), ("agx", "jetson-agx-orin"), (" nx", "jetson-orin-nx")):
        if key in low:
            try:
                return load_profile(name)
            except BenchError:
                return None
    return None


# ---- Jetson power state (only from the real tools) --------------------------------------------------------
def _run_tool(args: list[str], timeout: float = 10.0) -> str | None:
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def parse_tegrastats_power(line: str) -> dict[str, int]:
    """Instantaneous power per rail in mW from one tegrastats line (``VDD_IN 5123mW/5000mW`` → 5123)."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"\b([A-Z][A-Z0-9_]+) (\d+)mW/\d+mW", line)}


def tegrastats_sample(timeout: float = 5.0) -> str | None:
    """One tegrastats line (tegrastats prints one line per interval until killed)."""
    exe = shutil.which("tegrastats")
    if exe is None:
        return None
    try:
        proc = subprocess.Popen([exe, "--interval", "200"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True)
    except OSError:
        return None
    try:
        line = proc.stdout.readline() if proc.stdout else ""
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return line.strip() or None


def jetson_power_state() -> dict[str, Any]:
    """nvpmodel mode, jetson_clocks state and a tegrastats power sample; ``None`` for every absent tool."""
    tools = {t: shutil.which(t) for t in ("nvpmodel", "jetson_clocks", "tegrastats")}
    mode = None
    if tools["nvpmodel"]:
        out = _run_tool([tools["nvpmodel"], "-q"])
        if out:
            m = re.search(r"NV Power Mode:\s*(.+)", out)
            mode = m.group(1).strip() if m else out.strip().splitlines()[0]
    clocks = None
    if tools["jetson_clocks"]:
        out = _run_tool([tools["jetson_clocks"], "--show"])
        clocks = out.strip() if out else None
    line = tegrastats_sample() if tools["tegrastats"] else None
    return {
        "tools": {k: v for k, v in tools.items()},
        "nvpmodel_mode": mode,
        "jetson_clocks": clocks,
        "tegrastats_line": line,
        "power_mw": parse_tegrastats_power(line) if line else None,
    }
