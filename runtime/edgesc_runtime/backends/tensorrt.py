"""TensorRT 10/11 backend: run an engine built by ``edgesc compile`` (manifest ``engines`` entry).

What it does, in order:

1. checks the engine against this machine *before* deserialising it (:func:`check_engine_compat`): the
   TensorRT version that built it (major.minor.patch must equal the live one, unless the engine was built
   version-compatible, then only the major), the GPU's compute capability and name (unless built with a
   hardware-compatibility level) -- engines are tied to both; a mismatch raises ModelMismatchError naming both;
2. deserialises it (``trt.Runtime.deserialize_cuda_engine``) and creates one execution context;
3. per call: ``set_input_shape`` for every input, copies inputs to the device (or passes a host pointer for
   tensors TensorRT wants on the host -- shape tensors, ``get_tensor_location`` == HOST), binds them with
   ``set_tensor_address``, and runs ``execute_async_v3`` on its stream;
4. outputs have data-dependent shapes (K of ``symbols``/``token_index`` comes from the budget; the halting
   statistics from NonZero), so every output goes through an ``IOutputAllocator``: TensorRT asks for memory
   with ``reallocate_output_async`` once the size is known and reports the shape with ``notify_shape``; the
   buffers are kept and only grown, then copied back to numpy.

Device memory comes from pycuda when it is installed, else from cuda-python (NVIDIA's samples moved to it).
Everything TensorRT/CUDA-specific is imported lazily, so the runtime imports without them.
"""
from __future__ import annotations

import importlib
from typing import Any, Mapping, Protocol

import numpy as np

from ..errors import BackendUnavailable, InputError, ModelMismatchError
from ..manifest import EngineInfo

HARDWARE_LEVELS = ("none", "same_compute_capability", "ampere_plus")


# --- CUDA memory ----------------------------------------------------------------------------------------

class DeviceMemory(Protocol):
    """The few CUDA operations the backend needs (pycuda or cuda-python behind it)."""

    stream_handle: int

    def alloc(self, nbytes: int) -> int: ...
    def free(self, ptr: int) -> None: ...
    def htod(self, ptr: int, host: np.ndarray) -> None: ...
    def dtoh(self, host: np.ndarray, ptr: int) -> None: ...
    def synchronize(self) -> None: ...
    def device_info(self) -> tuple[str, str]: ...


class PyCudaMemory:
    """DeviceMemory on pycuda, in the device's primary context (the one TensorRT's runtime API uses)."""

    def __init__(self, device: int = 0) -> None:
        try:
            import pycuda.driver as cuda
        except ImportError as exc:
            raise BackendUnavailable(f"pycuda is not installed ({exc})") from None
        try:
            cuda.init()
            self._dev = cuda.Device(device)
            self._ctx = self._dev.retain_primary_context()
            self._ctx.push()
            self._stream = cuda.Stream()
        except cuda.Error as exc:
            raise BackendUnavailable(f"no usable CUDA device {device}: {exc}") from None
        self._cuda = cuda
        self._allocs: dict[int, Any] = {}
        self.stream_handle = int(self._stream.handle)

    def alloc(self, nbytes: int) -> int:
        buf = self._cuda.mem_alloc(max(int(nbytes), 1))
        self._allocs[int(buf)] = buf
        return int(buf)

    def free(self, ptr: int) -> None:
        buf = self._allocs.pop(int(ptr), None)
        if buf is not None:
            buf.free()

    def htod(self, ptr: int, host: np.ndarray) -> None:
        if host.nbytes:
            self._cuda.memcpy_htod_async(int(ptr), host, self._stream)

    def dtoh(self, host: np.ndarray, ptr: int) -> None:
        if host.nbytes:
            self._cuda.memcpy_dtoh_async(host, int(ptr), self._stream)

    def synchronize(self) -> None:
        self._stream.synchronize()

    def device_info(self) -> tuple[str, str]:
        major, minor = self._dev.compute_capability()
        return str(self._dev.name()), f"{major}.{minor}"


class CudaPythonMemory:
    """DeviceMemory on cuda-python's runtime bindings (``cuda.bindings.runtime``, or ``cuda.cudart`` < 12.6)."""

    def __init__(self, device: int = 0) -> None:
        try:
            try:
                from cuda.bindings import runtime as cudart
            except ImportError:
                from cuda import cudart  # type: ignore[no-redef]
        except ImportError as exc:
            raise BackendUnavailable(f"cuda-python is not installed ({exc})") from None
        self._rt = cudart
        self._device = device
        self._call(cudart.cudaSetDevice(device), "cudaSetDevice")
        self._stream = self._call(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self.stream_handle = int(self._stream)

    def _call(self, result: Any, what: str) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise BackendUnavailable(f"CUDA call {what} failed with error {int(err)} ({err})")
        return rest[0] if len(rest) == 1 else (tuple(rest) or None)

    def alloc(self, nbytes: int) -> int:
        return int(self._call(self._rt.cudaMalloc(max(int(nbytes), 1)), "cudaMalloc"))

    def free(self, ptr: int) -> None:
        self._call(self._rt.cudaFree(int(ptr)), "cudaFree")

    def htod(self, ptr: int, host: np.ndarray) -> None:
        if host.nbytes:
            self._call(self._rt.cudaMemcpyAsync(int(ptr), host.ctypes.data, host.nbytes,
                                                self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream),
                       "cudaMemcpyAsync(H2D)")

    def dtoh(self, host: np.ndarray, ptr: int) -> None:
        if host.nbytes:
            self._call(self._rt.cudaMemcpyAsync(host.ctypes.data, int(ptr), host.nbytes,
                                                self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream),
                       "cudaMemcpyAsync(D2H)")

    def synchronize(self) -> None:
        self._call(self._rt.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def device_info(self) -> tuple[str, str]:
        props = self._call(self._rt.cudaGetDeviceProperties(self._device), "cudaGetDeviceProperties")
        name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
        return name.rstrip("\x00"), f"{props.major}.{props.minor}"


def load_cuda(binding: str = "auto", device: int = 0) -> DeviceMemory:
    """pycuda ("pycuda"), cuda-python ("cuda-python") or the first that works ("auto")."""
    if binding not in ("auto", "pycuda", "cuda-python"):
        raise BackendUnavailable(f"unknown CUDA binding {binding!r}; choose auto, pycuda or cuda-python")
    errors = []
    for name, cls in (("pycuda", PyCudaMemory), ("cuda-python", CudaPythonMemory)):
        if binding in ("auto", name):
            try:
                return cls(device)
            except BackendUnavailable as exc:
                errors.append(str(exc))
    raise BackendUnavailable("no CUDA binding usable: " + "; ".join(errors))


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or BackendUnavailable."""
    try:
        return importlib.import_module("tensorrt")
    except Exception as exc:  # ImportError, or a broken install raising OSError on its shared libraries
        raise BackendUnavailable(f"TensorRT is not installed here ({type(exc).__name__}: {exc}); "
                                 f"pip install 'edgesc-runtime[tensorrt]'") from None


def available() -> bool:
    """True when tensorrt imports and a CUDA binding finds a device."""
    try:
        import_tensorrt()
        load_cuda("auto")
        return True
    except BackendUnavailable:
        return False


# --- compatibility --------------------------------------------------------------------------------------

def _version_tuple(v: str) -> tuple[int, ...]:
    parts = []
    for p in str(v).split("."):
        digits = "".join(ch for ch in p if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _cc_tuple(cc: str) -> tuple[int, int]:
    t = _version_tuple(cc)
    if len(t) < 2:
        raise ModelMismatchError(f"compute capability {cc!r} is not of the form MAJOR.MINOR")
    return t[0], t[1]


def check_engine_compat(engine: EngineInfo, trt_version: str, gpu_name: str, compute_capability: str) -> None:
    """Refuse an engine built for another TensorRT or GPU, naming both sides.

    TensorRT: major.minor.patch must match, or only the major (and live >= built) for an engine built
    ``version_compatible``. GPU: the compute capability must match, and the GPU name too, unless the engine's
    ``hardware_compatibility`` is ``same_compute_capability`` (capability only) or ``ampere_plus`` (any GPU of
    capability >= 8.0). Both flags are keys of the manifest's engine entry.
    """
    built, live = _version_tuple(engine.tensorrt), _version_tuple(trt_version)
    if len(built) < 2 or len(live) < 2:
        raise ModelMismatchError(f"cannot read TensorRT versions (engine {engine.tensorrt!r}, here {trt_version!r})")
    if engine.version_compatible:
        if built[0] != live[0] or live < built:
            raise ModelMismatchError(f"{engine.role} engine was built version-compatible with TensorRT "
                                     f"{engine.tensorrt}; this machine has {trt_version} (needs the same major, "
                                     f"not older)")
    elif built[:3] != live[:3]:
        raise ModelMismatchError(f"{engine.role} engine was built with TensorRT {engine.tensorrt}, this machine has "
                                 f"{trt_version}; rebuild it here with `edgesc compile`")
    level = engine.hardware_compatibility
    if level not in HARDWARE_LEVELS:
        raise ModelMismatchError(f"{engine.role} engine has unknown hardware_compatibility {level!r}")
    cc_built, cc_live = _cc_tuple(engine.compute_capability), _cc_tuple(compute_capability)
    if level == "ampere_plus":
        if cc_live < (8, 0):
            raise ModelMismatchError(f"{engine.role} engine needs an Ampere or newer GPU (compute capability >= 8.0); "
                                     f"this GPU {gpu_name!r} is {compute_capability}")
        return
    if cc_built != cc_live:
        raise ModelMismatchError(f"{engine.role} engine was built for compute capability {engine.compute_capability} "
                                 f"({engine.gpu}), this GPU {gpu_name!r} is {compute_capability}")
    if level == "none" and engine.gpu.strip().lower() != gpu_name.strip().lower():
        raise ModelMismatchError(f"{engine.role} engine was built on GPU {engine.gpu!r}, this GPU is {gpu_name!r}; "
                                 f"rebuild it here with `edgesc compile`")


# --- output allocation ----------------------------------------------------------------------------------

class OutputBuffers:
    """The bookkeeping behind the IOutputAllocator: one device buffer per output, grown when TensorRT asks for
    more than it holds (never shrunk, so repeated calls do not reallocate), plus the last notified shapes."""

    def __init__(self, memory: DeviceMemory) -> None:
        self.memory = memory
        self.buffers: dict[str, tuple[int, int]] = {}   # name -> (device pointer, capacity in bytes)
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.allocations = 0

    def reallocate(self, name: str, size: int, alignment: int = 0) -> int:
        """A device pointer to at least ``size`` bytes for output ``name`` (TensorRT's reallocateOutput)."""
        ptr, cap = self.buffers.get(name, (0, 0))
        if ptr and size <= cap and (not alignment or ptr % alignment == 0):
            return ptr
        if ptr:
            self.memory.free(ptr)
        new_cap = max(int(size), 256, 2 * cap if size > cap else 0)  # cudaMalloc is 256-byte aligned
        new = self.memory.alloc(new_cap)
        self.allocations += 1
        self.buffers[name] = (new, new_cap)
        return new

    def notify_shape(self, name: str, shape: Any) -> None:
        self.shapes[name] = tuple(int(d) for d in shape)

    def release(self) -> None:
        for ptr, _ in self.buffers.values():
            self.memory.free(ptr)
        self.buffers.clear()


def make_output_allocator(trt: Any, buffers: OutputBuffers) -> Any:
    """An instance of a ``trt.IOutputAllocator`` subclass delegating to ``buffers`` (TensorRT 10/11 call
    ``reallocate_output_async``; the synchronous ``reallocate_output`` is kept for older 10.x)."""

    class _Allocator(trt.IOutputAllocator):
        def __init__(self) -> None:
            trt.IOutputAllocator.__init__(self)
            self.buffers = buffers

        def reallocate_output(self, tensor_name: str, memory: int, size: int, alignment: int) -> int:
            return self.buffers.reallocate(tensor_name, size, alignment)

        def reallocate_output_async(self, tensor_name: str, memory: int, size: int, alignment: int,
                                    stream: int) -> int:
            return self.buffers.reallocate(tensor_name, size, alignment)

        def notify_shape(self, tensor_name: str, shape: Any) -> None:
            self.buffers.notify_shape(tensor_name, shape)

    return _Allocator()


# --- the backend ----------------------------------------------------------------------------------------

class TensorRTBackend:
    """Runs a TensorRT engine; same ``run(feeds) -> outputs`` interface as the ONNX Runtime backend.

    ``trt_module`` / ``memory`` replace the ``tensorrt`` module and the CUDA binding (tests use in-memory
    stand-ins; in production leave them None).
    """

    name = "tensorrt"

    def __init__(self, engine: EngineInfo, binding: str = "auto", device: int = 0, *, trt_module: Any = None,
                 memory: DeviceMemory | None = None) -> None:
        trt = trt_module if trt_module is not None else import_tensorrt()
        mem = memory if memory is not None else load_cuda(binding, device)
        gpu, cc = mem.device_info()
        check_engine_compat(engine, str(trt.__version__), gpu, cc)
        self.trt, self.memory, self.info = trt, mem, engine
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(engine.path.read_bytes())
        if self.engine is None:
            raise ModelMismatchError(f"TensorRT {trt.__version__} could not deserialize {engine.path.name}")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise BackendUnavailable(f"TensorRT could not create an execution context for {engine.path.name}")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = tuple(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_names = tuple(n for n in names if n not in self.input_names)
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self.on_host = {n: self.engine.get_tensor_location(n) == trt.TensorLocation.HOST for n in self.input_names}
        self.buffers = OutputBuffers(mem)
        self._allocator = make_output_allocator(trt, self.buffers)
        for n in self.output_names:
            self.context.set_output_allocator(n, self._allocator)
        self._inputs: dict[str, tuple[int, int]] = {}  # name -> (device pointer, capacity)

    def _device_input(self, name: str, arr: np.ndarray) -> int:
        ptr, cap = self._inputs.get(name, (0, 0))
        if arr.nbytes > cap or not ptr:
            if ptr:
                self.memory.free(ptr)
            cap = max(arr.nbytes, 256)
            ptr = self.memory.alloc(cap)
            self._inputs[name] = (ptr, cap)
        self.memory.htod(ptr, arr)
        return ptr

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Copy inputs in, ``execute_async_v3``, copy the (data-dependent) outputs out."""
        keep_alive = []
        for name in self.input_names:
            if name not in feeds:
                raise InputError(f"TensorRT engine {self.info.path.name} needs input {name!r}")
            arr = np.ascontiguousarray(feeds[name], dtype=self.dtypes[name])
            keep_alive.append(arr)
            if not self.context.set_input_shape(name, tuple(arr.shape)):
                raise InputError(f"input {name} of shape {list(arr.shape)} is outside the engine's optimisation "
                                 f"profile ({self.info.path.name})")
            addr = arr.ctypes.data if self.on_host[name] else self._device_input(name, arr)
            self.context.set_tensor_address(name, addr)
        if not self.context.execute_async_v3(self.memory.stream_handle):
            raise InputError(f"TensorRT execution of {self.info.path.name} failed (see the TensorRT log)")
        self.memory.synchronize()
        out: dict[str, np.ndarray] = {}
        for name in self.output_names:
            if name not in self.buffers.shapes:
                raise ModelMismatchError(f"TensorRT reported no shape for output {name}")
            host = np.empty(self.buffers.shapes[name], dtype=self.dtypes[name])
            if host.nbytes:
                self.memory.dtoh(host, self.buffers.buffers[name][0])
            out[name] = host
        self.memory.synchronize()
        return out

    def close(self) -> None:
        """Free the device buffers (the context and engine are freed with the object)."""
        self.buffers.release()
        for ptr, _ in self._inputs.values():
            self.memory.free(ptr)
        self._inputs.clear()

    def __del__(self) -> None:  # best effort; never raise from a finaliser
        try:
            self.close()
        except Exception:
            pass


__all__ = ["TensorRTBackend", "OutputBuffers", "make_output_allocator", "check_engine_compat", "load_cuda",
           "import_tensorrt", "available", "PyCudaMemory", "CudaPythonMemory", "DeviceMemory"]
