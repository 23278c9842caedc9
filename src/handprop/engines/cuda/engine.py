"""The ``cuda`` engine: CuPy arrays, cuBLAS GEMMs and the fused kernels of ``cuda/kernels/*.cu``.

Two layers live here:

* ``CudaKernelEngine`` holds the Python side of every fused kernel: shape,
  dtype and array-type checks, the scalar types the kernel signature wants,
  the launch configuration and the fallback to the reference. It launches
  through one hook, ``_launch``, so the very same wrappers also drive the
  host emulation of the kernels used by the CPU test suite.
* ``CupyEngine`` launches through ``cupy.RawModule``: each ``.cu`` file is
  compiled lazily, once per process (CuPy caches the binary on disk under
  ``CUPY_CACHE_DIR``), and the kernel objects are kept between calls.

CuPy is imported only when the engine is probed or built, never at import of
this module, so ``import handprop`` stays light.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from ...errors import ConfigError, DataError, EngineUnavailableError, ShapeError
from ..base import Engine, activation_code
from .windows import CudaConvKernels
from .source import kernel_file_of, kernel_source

_INT32_MAX = 2**31 - 1
_KERNEL_DTYPES = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}

CUPY_MISSING = (
    "CuPy is not installed (pip install 'handprop[cuda]', which brings cupy-cuda12x; "
    "with a CUDA 13 driver install cupy-cuda13x instead)"
)


class CudaKernelEngine(CudaConvKernels, Engine):
    """Wrappers around the ``kernels/*.cu`` entry points, independent of how they launch
    (those of ``conv.cu`` in ``windows.py``).

    Subclasses set ``_array_type`` (the one array class they accept),
    ``_raw`` (``numpy`` or ``cupy``, for allocation) and implement ``_launch``.
    Arguments reach ``_launch`` as arrays and NumPy scalars whose types match
    the kernel signature exactly (``numpy.float32`` for a ``float``; a Python
    float would arrive as a ``double``).
    """

    fused_kernels = True
    threads_per_block = 256
    max_blocks = 1024
    _array_type: ClassVar[type] = object
    _raw: Any = np

    # ------------------------------------------------------------- launching
    def _launch(self, kernel: str, grid: int, block: int, args: tuple) -> None:
        raise NotImplementedError

    def _launch_config(self, n: int) -> tuple[int, int]:
        """(blocks, threads): enough threads for ``n`` items, capped; loops stride the rest."""
        block = self.threads_per_block
        return max(1, min(-(-n // block), self.max_blocks)), block

    # ---------------------------------------------------------------- checks
    def _check_native(self, op: str, *arrays) -> None:
        """Refuse arrays of another library (the NumPy/CuPy mix-up) with a clear message."""
        for a in arrays:
            if not isinstance(a, self._array_type):
                raise ConfigError(
                    f"{op} on the {self.name!r} engine got a {type(a).__module__}.{type(a).__name__}; "
                    f"it needs {self._array_type.__module__}.{self._array_type.__name__} arrays. "
                    f"Mixing NumPy and CuPy arrays is refused: move data with engine.asarray(...) "
                    f"and back with engine.to_numpy(...)."
                )

    @staticmethod
    def _dtype_suffix(*arrays) -> str | None:
        """Kernel suffix when every array has the same float32/float64 dtype, else None."""
        dtype = arrays[0].dtype
        if any(a.dtype != dtype for a in arrays):
            return None
        return _KERNEL_DTYPES.get(np.dtype(dtype))

    def _contiguous(self, a):
        return self._raw.ascontiguousarray(a)

    @staticmethod
    def _is_contiguous(a) -> bool:
        return bool(a.flags.c_contiguous)

    # ----------------------------------------------------------- activations
    def activation(self, z, kind: str, alpha: float = 0.01):
        code = activation_code(kind)
        self._check_native("activation", z)
        suffix = self._dtype_suffix(z)
        if suffix is None or z.size == 0 or z.size > _INT32_MAX:
            return super().activation(z, kind, alpha)
        z = self._contiguous(z)
        out = self._raw.empty_like(z)
        t = z.dtype.type
        n = z.size
        # has_bias = 0: the kernel never reads b, so z stands in for it.
        self._run(f"bias_act_{suffix}", n, (z, z, out, np.int32(n), np.int32(1), np.int32(code),
                                          t(alpha), np.int32(0)))
        return out

    def bias_act(self, z, b, kind: str, alpha: float = 0.01):
        code = activation_code(kind)
        self._check_native("bias_act", z, b)
        self.check_bias_shapes(z, b)
        suffix = self._dtype_suffix(z, b)
        if suffix is None or z.size == 0 or z.size > _INT32_MAX:
            return super().bias_act(z, b, kind, alpha)
        z, b = self._contiguous(z), self._contiguous(b)
        out = self._raw.empty_like(z)
        t = z.dtype.type
        n = z.size
        self._run(f"bias_act_{suffix}", n, (z, b, out, np.int32(n), np.int32(z.shape[1]),
                                          np.int32(code), t(alpha), np.int32(1)))
        return out

    def act_backward(self, grad, out, kind: str, alpha: float = 0.01):
        code = activation_code(kind)
        self._check_native("act_backward", grad, out)
        if tuple(grad.shape) != tuple(out.shape):
            raise ShapeError(
                f"act_backward needs grad and out of the same shape; got {tuple(grad.shape)} "
                f"and {tuple(out.shape)}"
            )
        suffix = self._dtype_suffix(grad, out)
        if suffix is None or grad.size == 0 or grad.size > _INT32_MAX:
            return super().act_backward(grad, out, kind, alpha)
        grad, out = self._contiguous(grad), self._contiguous(out)
        dz = self._raw.empty_like(grad)
        n = grad.size
        self._run(f"act_backward_{suffix}", n, (grad, out, dz, np.int32(n), np.int32(code),
                                              grad.dtype.type(alpha)))
        return dz

    # ------------------------------------------------------------ reductions
    def bias_grad(self, grad):
        self._check_native("bias_grad", grad)
        suffix = self._dtype_suffix(grad)
        if suffix is None or len(grad.shape) != 2 or grad.size == 0 or grad.size > _INT32_MAX:
            return super().bias_grad(grad)
        grad = self._contiguous(grad)
        rows, cols = grad.shape
        out = self._raw.empty((cols,), dtype=grad.dtype)
        self._run(f"bias_grad_{suffix}", cols, (grad, out, np.int32(rows), np.int32(cols)))
        return out

    def sum_squares(self, w) -> float:
        self._check_native("sum_squares", w)
        suffix = self._dtype_suffix(w)
        if suffix is None or w.size == 0 or w.size > _INT32_MAX:
            return super().sum_squares(w)
        w = self._contiguous(w)
        grid, block = self._launch_config(w.size)
        # One double per launched thread; the kernel writes every slot.
        partials = self._raw.empty((grid * block,), dtype=np.float64)
        self._launch(f"sum_squares_{suffix}", grid, block, (w, partials, np.int32(w.size)))
        return self.to_float(self.xp.sum(partials))

    # --------------------------------------------------- batch normalization
    def batch_norm_forward(self, x, gamma, beta, eps: float):
        self._check_native("batch_norm_forward", x, gamma, beta)
        if (len(x.shape) != 2 or tuple(gamma.shape) != (x.shape[1],)
                or tuple(beta.shape) != (x.shape[1],)):
            raise ShapeError(f"batch_norm_forward needs x of shape (batch, features) and gamma, "
                             f"beta of shape (features,); got {tuple(x.shape)}, "
                             f"{tuple(gamma.shape)} and {tuple(beta.shape)}")
        suffix = self._dtype_suffix(x, gamma, beta)
        if suffix is None or x.size == 0 or x.size > _INT32_MAX:
            return super().batch_norm_forward(x, gamma, beta, eps)
        x, gamma, beta = self._contiguous(x), self._contiguous(gamma), self._contiguous(beta)
        rows, cols = x.shape
        out, x_hat = self._raw.empty_like(x), self._raw.empty_like(x)
        inv_std, mean, var = (self._raw.empty((cols,), dtype=x.dtype) for _ in range(3))
        self._run(f"batch_norm_forward_{suffix}", cols,
                  (x, gamma, beta, x.dtype.type(eps), out, x_hat, inv_std, mean, var,
                   np.int32(rows), np.int32(cols)))
        return out, x_hat, inv_std, mean, var

    def batch_norm_backward(self, grad, x_hat, inv_std, gamma):
        self._check_native("batch_norm_backward", grad, x_hat, inv_std, gamma)
        if (len(grad.shape) != 2 or tuple(x_hat.shape) != tuple(grad.shape)
                or tuple(inv_std.shape) != (grad.shape[1],)
                or tuple(gamma.shape) != (grad.shape[1],)):
            raise ShapeError(f"batch_norm_backward needs grad and x_hat of one shape (batch, "
                             f"features) and inv_std, gamma of shape (features,); got "
                             f"{tuple(grad.shape)}, {tuple(x_hat.shape)}, "
                             f"{tuple(inv_std.shape)} and {tuple(gamma.shape)}")
        suffix = self._dtype_suffix(grad, x_hat, inv_std, gamma)
        if suffix is None or grad.size == 0 or grad.size > _INT32_MAX:
            return super().batch_norm_backward(grad, x_hat, inv_std, gamma)
        grad, x_hat = self._contiguous(grad), self._contiguous(x_hat)
        inv_std, gamma = self._contiguous(inv_std), self._contiguous(gamma)
        rows, cols = grad.shape
        dx = self._raw.empty_like(grad)
        dgamma, dbeta = self._raw.empty_like(inv_std), self._raw.empty_like(inv_std)
        self._run(f"batch_norm_backward_{suffix}", cols,
                  (grad, x_hat, inv_std, gamma, dx, dgamma, dbeta, np.int32(rows),
                   np.int32(cols)))
        return dx, dgamma, dbeta

    # ---------------------------------------------------------------- losses
    def softmax_xent(self, logits, labels):
        self._check_native("softmax_xent", logits, labels)
        if len(logits.shape) != 2 or tuple(labels.shape) != (logits.shape[0],):
            raise ShapeError(
                f"softmax_xent needs logits of shape (batch, classes) and labels of shape (batch,); "
                f"got logits {tuple(logits.shape)} and labels {tuple(labels.shape)}"
            )
        if labels.dtype.kind not in "iu":
            raise ConfigError(
                f"softmax_xent needs integer class labels, got dtype {labels.dtype}; "
                "convert one-hot targets with argmax first"
            )
        suffix = self._dtype_suffix(logits)
        rows, cols = logits.shape
        if suffix is None or logits.size == 0 or logits.size > _INT32_MAX:
            return super().softmax_xent(logits, labels)
        logits = self._contiguous(logits)
        labels = self._contiguous(labels.astype(np.int64, copy=False))
        grad = self._raw.empty_like(logits)
        row_loss = self._raw.empty((rows,), dtype=logits.dtype)
        bad_label = self._raw.zeros((1,), dtype=np.int32)
        self._run(f"softmax_xent_{suffix}", rows,
                  (logits, labels, grad, row_loss, bad_label, np.int32(rows), np.int32(cols)))
        loss = self.xp.sum(row_loss) / rows
        if self.is_gpu:
            # Stay on the device: reading the loss would wait for the GPU every
            # step. A bad label makes the loss NaN, which the trainer's NaN
            # check reports; datasets' labels are checked once up front.
            return loss, grad
        if not math.isfinite(self.to_float(loss)) and int(self.to_numpy(bad_label)[0]):
            raise DataError(
                f"softmax_xent: a label lies outside [0, {cols}) for logits with {cols} classes; "
                "check the dataset's labels against the model's number of outputs"
            )
        return loss, grad

    # ------------------------------------------------------------ optimizers
    def _update_suffix(self, op: str, param, *state):
        """Kernel suffix for an in-place update, or None to use the reference."""
        self._check_native(op, param, *state)
        for s in state:
            if tuple(s.shape) != tuple(param.shape):
                raise ShapeError(
                    f"{op} needs arrays of the parameter's shape {tuple(param.shape)}; "
                    f"got {tuple(s.shape)}"
                )
        if param.size == 0 or param.size > _INT32_MAX:
            return None
        # In place needs contiguous buffers the kernel can write through.
        if not all(self._is_contiguous(a) for a in (param, *state[1:])):
            return None
        return self._dtype_suffix(param, *state)

    def sgd_update(self, param, grad, lr: float, weight_decay: float = 0.0) -> None:
        suffix = self._update_suffix("sgd_update", param, grad)
        if suffix is None:
            return super().sgd_update(param, grad, lr, weight_decay)
        t = param.dtype.type
        n = param.size
        self._run(f"sgd_update_{suffix}", n,
                  (param, self._contiguous(grad), np.int32(n), t(lr), t(weight_decay)))

    def momentum_update(self, param, grad, velocity, lr: float, momentum: float,
                        weight_decay: float = 0.0, nesterov: bool = False) -> None:
        suffix = self._update_suffix("momentum_update", param, grad, velocity)
        if suffix is None:
            return super().momentum_update(param, grad, velocity, lr, momentum, weight_decay,
                                           nesterov)
        t = param.dtype.type
        n = param.size
        self._run(f"momentum_update_{suffix}", n,
                  (param, self._contiguous(grad), velocity, np.int32(n), t(lr), t(momentum),
                   t(weight_decay), np.int32(bool(nesterov))))

    def adam_update(self, param, grad, m, v, lr: float, beta1: float, beta2: float, eps: float,
                    step: int, weight_decay: float = 0.0) -> None:
        if step < 1:
            raise ConfigError(f"adam_update needs step >= 1, got {step}")
        suffix = self._update_suffix("adam_update", param, grad, m, v)
        if suffix is None:
            return super().adam_update(param, grad, m, v, lr, beta1, beta2, eps, step,
                                       weight_decay)
        t = param.dtype.type
        n = param.size
        # Bias corrections in double on the host, exactly as the reference.
        step_size = lr / (1.0 - beta1**step)
        sqrt_bc2 = math.sqrt(1.0 - beta2**step)
        self._run(f"adam_update_{suffix}", n,
                  (param, self._contiguous(grad), m, v, np.int32(n), t(beta1), t(1.0 - beta1),
                   t(beta2), t(1.0 - beta2), t(eps), t(step_size), t(sqrt_bc2),
                   t(weight_decay)))

    def _run(self, kernel: str, n: int, args: tuple) -> None:
        grid, block = self._launch_config(n)
        self._launch(kernel, grid, block, args)


# --------------------------------------------------------------------- probing
_CUDA_ERROR_NO_DEVICE = 100
_CUDA_ERROR_INSUFFICIENT_DRIVER = 35
_CUDA_ERROR_DEVICES_UNAVAILABLE = 46
_CUDA_ERROR_NO_KERNEL_IMAGE = 209
_CUDA_ERROR_UNSUPPORTED_PTX = 222


def _versions(cupy) -> str:
    try:
        runtime = cupy.cuda.runtime.runtimeGetVersion()
        driver = cupy.cuda.runtime.driverGetVersion()
    except Exception:  # the version query itself may be what fails
        return ""
    fmt = lambda v: f"{v // 1000}.{v % 1000 // 10}"  # noqa: E731
    return f" (CUDA runtime {fmt(runtime)}, driver supports up to CUDA {fmt(driver)})"


def _driver_version(cupy) -> int | None:
    try:
        return int(cupy.cuda.runtime.driverGetVersion())
    except Exception:
        return None


def _runtime_error_reason(cupy, exc: Exception) -> str:
    status = getattr(exc, "status", None)
    if status == _CUDA_ERROR_NO_DEVICE:
        return "no CUDA device"
    if status == _CUDA_ERROR_INSUFFICIENT_DRIVER and _driver_version(cupy) == 0:
        # The runtime reports "insufficient driver" when there is no driver at all.
        return "no CUDA device (no NVIDIA driver is loaded on this machine)"
    if status in (_CUDA_ERROR_INSUFFICIENT_DRIVER, _CUDA_ERROR_UNSUPPORTED_PTX):
        return (
            f"driver too old for the runtime{_versions(cupy)}: update the NVIDIA driver, or "
            "install the CuPy build matching it (cupy-cuda12x for CUDA 12 drivers, "
            "cupy-cuda13x for CUDA 13)"
        )
    if status == _CUDA_ERROR_DEVICES_UNAVAILABLE:
        return "the CUDA device is busy or unavailable (exclusive-process mode, or taken by another job)"
    if status == _CUDA_ERROR_NO_KERNEL_IMAGE:
        return f"this CuPy build has no code for this GPU's architecture: {exc}"
    return f"the CUDA runtime failed: {exc}"


def probe_gpu(cupy=None) -> str:
    """"" when CuPy imports *and* a GPU is usable, else the precise reason.

    ``import cupy`` succeeds on machines without a GPU; the first device
    query or allocation is what fails, so both are tried. ``cupy`` can be
    injected by tests.
    """
    if cupy is None:
        try:
            import cupy
        except ImportError:
            return CUPY_MISSING
        except Exception as exc:  # a broken install raises other errors at import
            return f"CuPy is installed but failed to import ({type(exc).__name__}: {exc})"
    runtime_error = cupy.cuda.runtime.CUDARuntimeError
    try:
        if cupy.cuda.runtime.getDeviceCount() == 0:
            return "no CUDA device"
    except runtime_error as exc:
        return _runtime_error_reason(cupy, exc)
    except Exception as exc:  # e.g. libcudart or libcuda missing
        return f"the CUDA runtime could not start ({type(exc).__name__}: {exc})"
    try:
        # An allocation and one tiny compiled kernel: needs the driver, the
        # device and NVRTC, which is what the engine needs too.
        probe = cupy.zeros((1,), dtype=cupy.float32) + 1
        cupy.cuda.get_current_stream().synchronize()
        del probe
    except runtime_error as exc:
        return _runtime_error_reason(cupy, exc)
    except Exception as exc:
        text = str(exc)
        if "nvrtc" in text.lower():
            return (
                f"CuPy cannot load NVRTC to compile kernels ({text}); "
                "pip install nvidia-cuda-nvrtc-cu12 or install the CUDA toolkit"
            )
        return f"the GPU is present but not usable ({type(exc).__name__}: {text})"
    return ""


class CupyEngine(CudaKernelEngine):
    """CuPy arrays on the current CUDA device; fused primitives run ``kernels/*.cu``."""

    name = "cuda"
    is_gpu = True
    window_implementation_name = "cuda kernels"

    _reason: ClassVar[str | None] = None
    # Compiled once per process and shared by every instance.
    _modules: ClassVar[dict] = {}
    _kernels: ClassVar[dict] = {}

    @classmethod
    def unavailable_reason(cls) -> str:
        """"" when usable, else why not (probed once per process)."""
        if cls._reason is None:
            cls._reason = probe_gpu()
        return cls._reason

    def __init__(self):
        reason = self.unavailable_reason()
        if reason:
            raise EngineUnavailableError(f"engine 'cuda' is not usable on this machine: {reason}")
        import array_api_compat
        import cupy

        # The namespace of a real CuPy array is array_api_compat.cupy; asking
        # an array rather than importing that module lets the CPU test suite
        # run this class on a stand-in for CuPy.
        super().__init__(array_api_compat.array_namespace(cupy.empty((0,), dtype=cupy.float32)))
        self._raw = cupy
        type(self)._array_type = cupy.ndarray
        sms = cupy.cuda.Device().attributes["MultiProcessorCount"]
        # Enough resident blocks to fill the GPU; grid-stride loops do the rest.
        self.max_blocks = 32 * sms

    # ------------------------------------------------------------------ arrays
    def asarray(self, array, dtype=None):
        cupy = self._raw
        if isinstance(array, cupy.ndarray):  # already on the device: no host trip
            return array if dtype is None else array.astype(np.dtype(dtype), copy=False)
        return super().asarray(array, dtype)

    def to_numpy(self, array) -> np.ndarray:
        if isinstance(array, self._raw.ndarray):
            return self._raw.asnumpy(array)
        return np.asarray(array)

    def synchronize(self) -> None:
        self._raw.cuda.get_current_stream().synchronize()

    def describe(self) -> dict:
        cupy = self._raw
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"]
        info = super().describe()
        info.update(
            device=name.decode() if isinstance(name, bytes) else str(name),
            compute_capability=f"{props['major']}.{props['minor']}",
            cupy=cupy.__version__,
            cuda_runtime=cupy.cuda.runtime.runtimeGetVersion(),
        )
        return info

    # ---------------------------------------------------------------- kernels
    def _kernel(self, name: str):
        kernel = self._kernels.get(name)
        if kernel is None:
            file_name = kernel_file_of(name)
            module = self._modules.get(file_name)
            if module is None:
                # No --std: NVRTC 12 defaults to C++17, which the compile tests
                # use; CuPy adds the -arch of the current device itself.
                module = self._raw.RawModule(code=kernel_source(file_name))
                self._modules[file_name] = module
            kernel = self._kernels[name] = module.get_function(name)
        return kernel

    def _launch(self, kernel: str, grid: int, block: int, args: tuple) -> None:
        self._kernel(kernel)((grid,), (block,), args)
