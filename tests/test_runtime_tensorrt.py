"""edgesc_runtime.backends.tensorrt without a GPU, plus real-GPU tests that are skipped here.

What runs here: the engine/machine compatibility rules, the output allocator's bookkeeping, and the backend's
whole run path (set_input_shape, host vs device tensors, set_tensor_address, execute_async_v3, data-dependent
outputs through the IOutputAllocator, copies back) against IN-MEMORY STAND-INS for the ``tensorrt`` module and
the CUDA binding defined below: ``FakeTRT`` "deserialises" an engine file that is really an ONNX graph and
executes it with ONNX Runtime, ``FakeMemory`` is a dict of bytearrays posing as device memory. They follow the
TensorRT 10 Python API's names and call order (checked against NVIDIA's docs), not its behaviour in full.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from test_runtime_graphs import build_model_dir, sha256_file  # noqa: E402

from edgesc_runtime import BackendUnavailable, Encoder, InputError, ModelMismatchError  # noqa: E402
from edgesc_runtime.backends import tensorrt as trtb  # noqa: E402
from edgesc_runtime.manifest import EngineInfo  # noqa: E402


def _engine(tensorrt: str = "10.3.0.30", gpu: str = "Orin", cc: str = "8.7", profile: dict | None = None) -> EngineInfo:
    flags = profile or {}
    return EngineInfo(role="encoder", path=Path("encoder.engine"), sha256="0" * 64, gpu=gpu, compute_capability=cc,
                      tensorrt=tensorrt, precision="fp16", version_compatible=bool(flags.get("version_compatible")),
                      hardware_compatibility=flags.get("hardware_compatibility", "none"))


# --- compatibility rules -------------------------------------------------------------------------------

def test_matching_engine_is_accepted() -> None:
    trtb.check_engine_compat(_engine(), "10.3.0.30", "Orin", "8.7")
    trtb.check_engine_compat(_engine(), "10.3.0.26", "orin ", "8.7")  # build number and case/space ignored


@pytest.mark.parametrize("engine, live, msg", [
    (_engine(), ("10.8.0.43", "Orin", "8.7"), "built with TensorRT 10.3.0.30, this machine has 10.8.0.43"),
    (_engine(tensorrt="11.0.0"), ("10.3.0", "Orin", "8.7"), "TensorRT 11.0.0"),
    (_engine(), ("10.3.0", "NVIDIA GeForce RTX 4090", "8.9"), "compute capability 8.7 \\(Orin\\), this GPU"),
    (_engine(gpu="NVIDIA A10", cc="8.6"), ("10.3.0", "NVIDIA GeForce RTX 3090", "8.6"),
     "built on GPU 'NVIDIA A10', this GPU is 'NVIDIA GeForce RTX 3090'"),
    (_engine(profile={"version_compatible": True}), ("11.1.0", "Orin", "8.7"), "same major"),
    (_engine(profile={"version_compatible": True, "tensorrt": "x"}, tensorrt="10.8.0"), ("10.3.0", "Orin", "8.7"),
     "not older"),
    (_engine(profile={"hardware_compatibility": "ampere_plus"}), ("10.3.0", "Tesla T4", "7.5"), "Ampere"),
    (_engine(profile={"hardware_compatibility": "maxwell"}), ("10.3.0", "Orin", "8.7"), "unknown hardware"),
])
def test_mismatched_engine_is_refused_naming_both_sides(engine: EngineInfo, live: tuple, msg: str) -> None:
    with pytest.raises(ModelMismatchError, match=msg):
        trtb.check_engine_compat(engine, *live)


def test_compatibility_levels_relax_what_they_say() -> None:
    trtb.check_engine_compat(_engine(profile={"version_compatible": True}), "10.8.0", "Orin", "8.7")
    trtb.check_engine_compat(_engine(gpu="NVIDIA A10", cc="8.6", profile={"hardware_compatibility":
                                                                          "same_compute_capability"}),
                             "10.3.0", "NVIDIA GeForce RTX 3090", "8.6")
    trtb.check_engine_compat(_engine(profile={"hardware_compatibility": "ampere_plus"}), "10.3.0", "NVIDIA H100", "9.0")


# --- in-memory stand-ins -------------------------------------------------------------------------------

class FakeMemory:
    """Stand-in for the CUDA binding: 'device pointers' index bytearrays; counts allocations and frees."""

    def __init__(self, gpu: str = "Orin", cc: str = "8.7") -> None:
        self.mem: dict[int, bytearray] = {}
        self.next = 1 << 16
        self.frees = 0
        self.stream_handle = 7
        self.syncs = 0
        self._info = (gpu, cc)

    def alloc(self, nbytes: int) -> int:
        ptr = self.next
        self.next += max(nbytes, 1) + 256 - (max(nbytes, 1) % 256)
        self.mem[ptr] = bytearray(nbytes)
        return ptr

    def free(self, ptr: int) -> None:
        del self.mem[ptr]
        self.frees += 1

    def htod(self, ptr: int, host: np.ndarray) -> None:
        self.mem[ptr][: host.nbytes] = host.tobytes()

    def dtoh(self, host: np.ndarray, ptr: int) -> None:
        host.reshape(-1).view(np.uint8)[:] = np.frombuffer(bytes(self.mem[ptr][: host.nbytes]), np.uint8)

    def read(self, ptr: int, nbytes: int) -> bytes:
        return bytes(self.mem[ptr][:nbytes])

    def synchronize(self) -> None:
        self.syncs += 1

    def device_info(self) -> tuple[str, str]:
        return self._info


def make_fake_trt(memory: FakeMemory, version: str = "10.3.0.30", host_inputs: tuple[str, ...] = ("budget",),
                  max_batch: int = 8):
    import onnxruntime as ort

    class IOutputAllocator:
        def __init__(self) -> None:
            self.initialised = True

    class Context:
        def __init__(self, engine) -> None:
            self.engine, self.shapes, self.addr, self.alloc = engine, {}, {}, {}

        def set_input_shape(self, name, shape):
            self.shapes[name] = tuple(shape)
            return not (len(shape) and shape[0] > max_batch)

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr
            return True

        def set_output_allocator(self, name, alloc):
            assert getattr(alloc, "initialised", False), "IOutputAllocator.__init__ was not called"
            self.alloc[name] = alloc
            return True

        def execute_async_v3(self, stream):
            assert stream == memory.stream_handle
            feeds = {}
            for name in self.engine.inputs:
                dt, shape = self.engine.dt[name], self.shapes[name]
                nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
                raw = ctypes.string_at(self.addr[name], nbytes) if name in host_inputs else memory.read(
                    self.addr[name], nbytes)
                feeds[name] = np.frombuffer(raw, dt).reshape(shape)
            outs = self.engine.sess.run(self.engine.outputs, feeds)
            for name, arr in zip(self.engine.outputs, outs):
                ptr = self.alloc[name].reallocate_output_async(name, 0, arr.nbytes, 256, stream)
                memory.mem[ptr][: arr.nbytes] = arr.tobytes()
                self.alloc[name].notify_shape(name, arr.shape)
            return True

    class Engine:
        def __init__(self, sess) -> None:
            self.sess = sess
            self.inputs = [i.name for i in sess.get_inputs()]
            self.outputs = [o.name for o in sess.get_outputs()]
            types = {"tensor(float)": np.dtype(np.float32), "tensor(int64)": np.dtype(np.int64)}
            self.dt = {i.name: types[i.type] for i in sess.get_inputs() + sess.get_outputs()}
            self.num_io_tensors = len(self.inputs) + len(self.outputs)

        def get_tensor_name(self, i):
            return (self.inputs + self.outputs)[i]

        def get_tensor_mode(self, name):
            return FakeTRT.TensorIOMode.INPUT if name in self.inputs else FakeTRT.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return self.dt[name]

        def get_tensor_location(self, name):
            return FakeTRT.TensorLocation.HOST if name in host_inputs else FakeTRT.TensorLocation.DEVICE

        def create_execution_context(self):
            return Context(self)

    class FakeTRT:
        __version__ = version

        class Logger:
            WARNING = 2

            def __init__(self, level) -> None:
                self.level = level

        class TensorIOMode:
            INPUT, OUTPUT = "input", "output"

        class TensorLocation:
            DEVICE, HOST = "device", "host"

        @staticmethod
        def nptype(dtype):
            return dtype

        class Runtime:
            def __init__(self, logger) -> None:
                self.logger = logger

            def deserialize_cuda_engine(self, data: bytes):
                try:
                    return Engine(ort.InferenceSession(data, providers=["CPUExecutionProvider"]))
                except Exception:
                    return None

    FakeTRT.IOutputAllocator = IOutputAllocator
    return FakeTRT


def test_output_buffers_grow_only_when_needed_and_free_everything() -> None:
    mem = FakeMemory()
    buf = trtb.OutputBuffers(mem)
    p1 = buf.reallocate("symbols", 1000)
    assert buf.reallocate("symbols", 800) == p1 and buf.allocations == 1        # fits: reused
    p2 = buf.reallocate("symbols", 3000)
    assert p2 != p1 and buf.allocations == 2 and mem.frees == 1                # grown: old one freed
    assert buf.buffers["symbols"][1] >= 3000
    assert buf.reallocate("token_index", 0) != 0                               # K = 0: still a valid pointer
    buf.notify_shape("symbols", (2, 0, 8, 2))
    assert buf.shapes["symbols"] == (2, 0, 8, 2)
    buf.release()
    assert not mem.mem and not buf.buffers


def test_allocator_subclass_calls_base_init_and_delegates() -> None:
    mem = FakeMemory()
    fake = make_fake_trt(mem)
    buffers = trtb.OutputBuffers(mem)
    alloc = trtb.make_output_allocator(fake, buffers)
    assert isinstance(alloc, fake.IOutputAllocator) and alloc.initialised
    ptr = alloc.reallocate_output_async("x", 0, 64, 256, 7)
    assert alloc.reallocate_output("x", ptr, 32, 256) == ptr
    alloc.notify_shape("x", [4, 4])
    assert buffers.shapes == {"x": (4, 4)}


@pytest.fixture()
def engine_dir(tmp_path: Path) -> Path:
    d = build_model_dir(tmp_path / "m")
    shutil.copy(d / "encoder.onnx", d / "encoder.engine")  # the stand-in "engine" is the ONNX graph itself
    m = json.loads((d / "manifest.json").read_text())
    m["engines"] = {"encoder": {"file": "encoder.engine", "sha256": sha256_file(d / "encoder.engine"),
                                "gpu": "Orin", "compute_capability": "8.7", "tensorrt": "10.3.0.30",
                                "precision": "fp32", "strongly_typed": False, "target": "test",
                                "profile": {"image": [[1, 3, 32, 32], [4, 3, 32, 32], [8, 3, 32, 32]]}}}
    (d / "manifest.json").write_text(json.dumps(m))
    return d


def test_backend_run_path_matches_onnxruntime(engine_dir: Path, monkeypatch) -> None:
    mem = FakeMemory()
    monkeypatch.setattr(trtb, "import_tensorrt", lambda: make_fake_trt(mem))
    monkeypatch.setattr(trtb, "load_cuda", lambda binding="auto", device=0: mem)
    enc_trt = Encoder(engine_dir, backend="tensorrt")
    enc_ort = Encoder(engine_dir, backend="onnxruntime")
    assert enc_trt.backend.name == "tensorrt" and enc_trt.backend.on_host["budget"]
    img = np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32)
    for budget in (1.0, 0.25, 0.5):  # K changes between calls: the output buffers are reused or grown
        a = enc_trt.encode(img, budget=budget, depth=3, ratio=1)
        b = enc_ort.encode(img, budget=budget, depth=3, ratio=1)
        np.testing.assert_array_equal(a.symbols, b.symbols)
        np.testing.assert_array_equal(a.token_index, b.token_index)
        np.testing.assert_array_equal(a.flops, b.flops)
    assert enc_trt.backend.buffers.allocations == 4  # one per output, sized by the first (largest) call
    with pytest.raises(InputError, match="optimisation profile"):
        enc_trt.encode(np.zeros((9, 3, 32, 32), np.float32))
    enc_trt.backend.close()
    assert not mem.mem


def test_auto_backend_prefers_engine_and_falls_back_on_mismatch(engine_dir: Path, monkeypatch) -> None:
    mem = FakeMemory(gpu="NVIDIA GeForce RTX 4090", cc="8.9")
    monkeypatch.setattr(trtb, "import_tensorrt", lambda: make_fake_trt(mem))
    monkeypatch.setattr(trtb, "load_cuda", lambda binding="auto", device=0: mem)
    with pytest.raises(ModelMismatchError, match="compute capability 8.7"):
        Encoder(engine_dir, backend="tensorrt")
    with pytest.warns(RuntimeWarning, match="falling back to ONNX Runtime"):
        assert Encoder(engine_dir, backend="auto").backend.name == "onnxruntime"
    monkeypatch.setattr(trtb, "load_cuda", lambda binding="auto", device=0: FakeMemory())
    assert Encoder(engine_dir, backend="auto").backend.name == "tensorrt"


def test_missing_tensorrt_is_backend_unavailable(engine_dir: Path, monkeypatch) -> None:
    def missing():
        raise BackendUnavailable("TensorRT is not installed here")

    monkeypatch.setattr(trtb, "import_tensorrt", missing)
    with pytest.raises(BackendUnavailable, match="not installed"):
        Encoder(engine_dir, backend="tensorrt")
    assert Encoder(engine_dir, backend="auto").backend.name == "onnxruntime"


def test_unknown_cuda_binding() -> None:
    with pytest.raises(BackendUnavailable, match="unknown CUDA binding"):
        trtb.load_cuda("opencl")


# --- real GPU (skipped on this machine) ----------------------------------------------------------------

gpu = pytest.mark.skipif(not trtb.available(), reason="no NVIDIA GPU/TensorRT on this machine")


@pytest.mark.gpu
@gpu
def test_real_engine_matches_onnxruntime(tmp_path: Path) -> None:
    import tensorrt as trt

    d = build_model_dir(tmp_path / "m")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse((d / "encoder.onnx").read_bytes()), parser.get_error(0)
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("image", (1, 3, 32, 32), (4, 3, 32, 32), (8, 3, 32, 32))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    assert plan is not None
    (d / "encoder.engine").write_bytes(bytes(plan))
    mem = trtb.load_cuda()
    name, cc = mem.device_info()
    m = json.loads((d / "manifest.json").read_text())
    m["engines"] = {"encoder": {"file": "encoder.engine", "sha256": sha256_file(d / "encoder.engine"), "gpu": name,
                                "compute_capability": cc, "tensorrt": trt.__version__, "precision": "fp32",
                                "profile": {}}}
    (d / "manifest.json").write_text(json.dumps(m))
    img = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    a = Encoder(d, backend="tensorrt").encode(img, budget=0.5)
    b = Encoder(d, backend="onnxruntime").encode(img, budget=0.5)
    np.testing.assert_allclose(a.symbols, b.symbols, atol=1e-4)
    np.testing.assert_array_equal(a.token_index, b.token_index)


def test_manifest_engine_flags_are_read_from_the_entry(engine_dir: Path, monkeypatch) -> None:
    m = json.loads((engine_dir / "manifest.json").read_text())
    m["engines"]["encoder"]["hardware_compatibility"] = "same_compute_capability"
    (engine_dir / "manifest.json").write_text(json.dumps(m))
    mem = FakeMemory(gpu="Jetson AGX Orin 64GB", cc="8.7")  # another name, same capability
    monkeypatch.setattr(trtb, "import_tensorrt", lambda: make_fake_trt(mem))
    monkeypatch.setattr(trtb, "load_cuda", lambda binding="auto", device=0: mem)
    enc = Encoder(engine_dir, backend="tensorrt")
    assert enc.manifest.engines["encoder"].hardware_compatibility == "same_compute_capability"
    assert enc.encode(np.zeros((1, 3, 32, 32), np.float32)).symbols.shape == (1, 16, 8, 2)
