"""The exact kernels/*.cu source, run on the CPU through the host emulator.

Grid sweeps: one block of one thread (every element visited by one thread's
grid-stride loop), a few threads (uneven tails), many more threads than
elements (most threads idle), and a grid sized to the data as on the GPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from handprop.engines import get_engine
from handprop.engines.base import ACTIVATIONS
from handprop.engines.cuda.source import kernel_dir
from handprop.errors import ConfigError, DataError, ShapeError

cuda_emulation = pytest.importorskip("cuda_emulation")
if cuda_emulation.compiler() is None:
    pytest.skip("no C++ compiler (g++ or $CXX) to build the host emulation", allow_module_level=True)

from cuda_emulation import emulated_engine  # noqa: E402

GRIDS = [(1, 1), (2, 3), (64, 32), (None, 4)]  # (blocks, threads); None sizes the grid to the data
GRID_IDS = ["1x1", "2x3", "64x32-more-threads-than-data", "sized-to-data"]
TOL = {np.float32: dict(rtol=2e-6, atol=1e-6), np.float64: dict(rtol=1e-13, atol=1e-14)}


@pytest.fixture(scope="module")
def cpu():
    return get_engine("cpu")


def _close(actual, expected, dtype, what):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    np.testing.assert_allclose(actual, expected, err_msg=what, **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("grid,block", GRIDS, ids=GRID_IDS)
def test_every_kernel_matches_the_reference_across_grids(grid, block, dtype, cpu):
    emu = emulated_engine(grid=grid, block=block)
    rng = np.random.default_rng(7)
    rows, cols = 5, 7  # 35 elements: fewer than 64x32 threads, more than 2x3
    z = (rng.standard_normal((rows, cols)) * 3).astype(dtype)
    z[0, :3] = [0.0, -0.0, 40.0]  # zero and saturation
    b = rng.standard_normal(cols).astype(dtype)
    g = rng.standard_normal((rows, cols)).astype(dtype)

    for kind in ACTIVATIONS:
        out = emu.bias_act(z, b, kind, alpha=0.1)
        ref = cpu.bias_act(z, b, kind, alpha=0.1)
        _close(out, ref, dtype, f"bias_act {kind}")
        _close(emu.activation(z, kind, alpha=0.1), cpu.activation(z, kind, alpha=0.1), dtype,
               f"activation {kind}")
        _close(emu.act_backward(g, ref, kind, alpha=0.1), cpu.act_backward(g, ref, kind, alpha=0.1),
               dtype, f"act_backward {kind}")

    labels = rng.integers(0, cols, rows)
    loss, grad = emu.softmax_xent(z, labels)
    ref_loss, ref_grad = cpu.softmax_xent(z, labels)
    loss = emu.to_float(loss)
    assert loss == pytest.approx(ref_loss, rel=TOL[dtype]["rtol"] * 10)
    _close(grad, ref_grad, dtype, "softmax_xent grad")

    _close(emu.bias_grad(g), cpu.bias_grad(g), dtype, "bias_grad")
    assert emu.sum_squares(g) == pytest.approx(cpu.sum_squares(g), rel=TOL[dtype]["rtol"] * 10)

    for wd in (0.0, 0.01):
        p1, p2 = z.copy(), z.copy()
        emu.sgd_update(p1, g, lr=0.1, weight_decay=wd)
        cpu.sgd_update(p2, g, lr=0.1, weight_decay=wd)
        _close(p1, p2, dtype, f"sgd wd={wd}")
        for nesterov in (False, True):
            p1, p2 = z.copy(), z.copy()
            v1, v2 = g.copy(), g.copy()
            for _ in range(2):
                emu.momentum_update(p1, g, v1, lr=0.1, momentum=0.9, weight_decay=wd, nesterov=nesterov)
                cpu.momentum_update(p2, g, v2, lr=0.1, momentum=0.9, weight_decay=wd, nesterov=nesterov)
            _close(p1, p2, dtype, f"momentum nesterov={nesterov}")
            _close(v1, v2, dtype, f"velocity nesterov={nesterov}")
        p1, p2 = z.copy(), z.copy()
        s1 = [np.zeros_like(z), np.zeros_like(z)]
        s2 = [np.zeros_like(z), np.zeros_like(z)]
        for step in (1, 2, 3):
            emu.adam_update(p1, g * step, *s1, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, step=step,
                            weight_decay=wd)
            cpu.adam_update(p2, g * step, *s2, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, step=step,
                            weight_decay=wd)
        _close(p1, p2, dtype, f"adam wd={wd}")
        _close(s1[1], s2[1], dtype, "adam v")

    # The kernels really ran, with the launch shape asked for.
    expected_block = block
    assert emu.launches and all(bk == expected_block for _, _, bk in emu.launches)
    if grid is not None:
        assert all(gr == grid for _, gr, _ in emu.launches)
    suffix = "f32" if dtype == np.float32 else "f64"
    assert {name.rsplit("_", 1)[1] for name, _, _ in emu.launches} == {suffix}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_softmax_xent_is_stable_for_huge_logits(dtype, cpu):
    emu = emulated_engine(grid=1, block=2)
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, 1e4]], dtype=dtype)
    labels = np.array([1, 0, 2])
    loss, grad = emu.softmax_xent(logits, labels)
    ref_loss, ref_grad = cpu.softmax_xent(logits, labels)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    _close(grad, ref_grad, dtype, "grad at 1e4")
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-6)


@pytest.mark.parametrize("bad", [-1, 3, 2**40])
def test_out_of_range_labels_are_flagged(bad):
    emu = emulated_engine(grid=3, block=2)
    logits = np.zeros((4, 3), dtype=np.float32)
    labels = np.array([0, 1, bad, 2], dtype=np.int64)
    with pytest.raises(DataError, match=r"outside \[0, 3\)"):
        emu.softmax_xent(logits, labels)


def test_int32_labels_are_accepted_and_float_labels_refused(cpu):
    emu = emulated_engine()
    logits = np.arange(12, dtype=np.float64).reshape(4, 3) / 7
    loss, _ = emu.softmax_xent(logits, np.array([0, 1, 2, 1], dtype=np.int32))
    assert loss == pytest.approx(cpu.softmax_xent(logits, np.array([0, 1, 2, 1]))[0], rel=1e-13)
    with pytest.raises(ConfigError, match="integer class labels"):
        emu.softmax_xent(logits, np.array([0.0, 1.0, 2.0, 1.0]))


def test_leaky_relu_alpha_and_lecun_tanh_constants():
    emu = emulated_engine(grid=1, block=1)
    z = np.array([[-2.0, 0.0, 1.5]])
    b = np.zeros(3)
    np.testing.assert_allclose(emu.bias_act(z, b, "leaky_relu", alpha=0.2), [[-0.4, 0.0, 1.5]])
    np.testing.assert_allclose(emu.bias_act(z, b, "lecun_tanh"), 1.7159 * np.tanh(2.0 / 3.0 * z),
                               rtol=1e-15)


def test_non_contiguous_inputs_are_copied_and_in_place_updates_fall_back(cpu):
    emu = emulated_engine()
    rng = np.random.default_rng(3)
    zt = rng.standard_normal((6, 4)).T  # (4, 6), not C-contiguous
    b = rng.standard_normal(6)
    np.testing.assert_allclose(emu.bias_act(zt, b, "tanh"), cpu.bias_act(zt, b, "tanh"), rtol=1e-14)
    emu.launches.clear()
    p1 = rng.standard_normal((6, 4)).T
    p2 = p1.copy()
    g = np.ones_like(p2)
    emu.sgd_update(p1, g, lr=0.5)
    cpu.sgd_update(p2, g, lr=0.5)
    np.testing.assert_allclose(p1, p2)  # a kernel could not write through the strided view
    assert emu.launches == []


def test_unsupported_dtypes_fall_back_to_the_reference(cpu):
    emu = emulated_engine()
    z16 = np.linspace(-2, 2, 12, dtype=np.float16).reshape(3, 4)
    b16 = np.ones(4, dtype=np.float16)
    np.testing.assert_array_equal(emu.bias_act(z16, b16, "sigmoid"), cpu.bias_act(z16, b16, "sigmoid"))
    assert emu.launches == []  # no float16 kernel
    # Mixed float32/float64: the reference promotes, then the activation kernel runs.
    z32 = z16.astype(np.float32)
    b64 = b16.astype(np.float64)
    out = emu.bias_act(z32, b64, "sigmoid")
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, cpu.bias_act(z32, b64, "sigmoid"), rtol=1e-14)
    assert [name for name, _, _ in emu.launches] == ["bias_act_f64"]


def test_shapes_and_foreign_arrays_are_refused_before_launch():
    emu = emulated_engine()
    z = np.zeros((3, 4), dtype=np.float32)
    with pytest.raises(ShapeError, match=r"\(units,\)"):
        emu.bias_act(z, np.zeros(5, dtype=np.float32), "relu")
    with pytest.raises(ShapeError, match="same shape"):
        emu.act_backward(z, np.zeros((4, 3), dtype=np.float32), "relu")
    with pytest.raises(ShapeError, match="labels of shape"):
        emu.softmax_xent(z, np.zeros(4, dtype=np.int64))
    with pytest.raises(ShapeError, match="parameter's shape"):
        emu.adam_update(z, z, z, np.zeros(3, dtype=np.float32), 0.1, 0.9, 0.99, 1e-8, 1)
    with pytest.raises(ConfigError, match="unknown activation"):
        emu.bias_act(z, np.zeros(4, dtype=np.float32), "swish")
    with pytest.raises(ConfigError, match="Mixing NumPy and CuPy"):
        emu.bias_act(z, [0.0, 0.0, 0.0, 0.0], "relu")  # not an array of this engine
    with pytest.raises(ConfigError, match="step >= 1"):
        emu.adam_update(z, z, z.copy(), z.copy(), 0.1, 0.9, 0.99, 1e-8, 0)
    assert emu.launches == []


def test_launcher_checks_scalar_and_array_types_against_the_signature():
    # The trap this guards: a Python float is passed as a double, which a
    # float parameter would misread. The emulator refuses it outright.
    from cuda_emulation import load_module

    kernel = load_module("optimizers.cu").get_function("sgd_update_f32")
    assert [k for k, _ in kernel.signature] == ["p", "p", "s", "s", "s"]
    p = np.ones(4, dtype=np.float32)
    g = np.ones(4, dtype=np.float32)
    with pytest.raises(TypeError, match="float where the kernel takes c_float"):
        kernel(1, 1, (p, g, np.int32(4), 0.5, np.float32(0)))
    with pytest.raises(TypeError, match="float64 where the kernel reads c_float"):
        kernel(1, 1, (p, g.astype(np.float64), np.int32(4), np.float32(0.5), np.float32(0)))
    kernel(1, 1, (p, g, np.int32(4), np.float32(0.5), np.float32(0)))
    np.testing.assert_array_equal(p, 0.5)


def test_unknown_activation_code_poisons_the_output():
    from cuda_emulation import load_module

    kernel = load_module("activations.cu").get_function("bias_act_f64")
    z = np.ones((2, 2))
    out = np.zeros_like(z)
    kernel(1, 4, (z, z, out, np.int32(4), np.int32(2), np.int32(99), np.float64(0.01), np.int32(0)))
    assert np.isnan(out).all()


def test_empty_arrays_do_not_launch(cpu):
    emu = emulated_engine()
    z = np.zeros((0, 3), dtype=np.float32)
    assert emu.bias_act(z, np.zeros(3, dtype=np.float32), "relu").shape == (0, 3)
    assert emu.sum_squares(z) == 0.0
    assert emu.launches == []


# -------------------------------------------------------------- AddressSanitizer
def _libasan() -> str | None:
    cxx = cuda_emulation.compiler()
    path = subprocess.run([cxx, "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


LIBASAN = _libasan()
needs_asan = pytest.mark.skipif(LIBASAN is None, reason="libasan is not installed for this compiler")

ASAN_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np
    sys.path.insert(0, {tests!r})
    import cuda_emulation as ce
    from handprop.engines.cuda.source import KERNEL_FILES, kernel_dir

    if sys.argv[1] == "buggy":
        kernel = ce.EmulatedModule(ce.build_library(Path(sys.argv[2]), sanitize=True)).get_function("copy_off_by_one")
        x = np.ones(10, dtype=np.float32)
        y = np.zeros(10, dtype=np.float32)
        kernel(2, 4, (x, y, np.int32(10)))
        print("NOT CAUGHT")
    else:
        # Real kernels built with ASan, driven by the engine's own wrappers.
        for name in KERNEL_FILES:
            ce._modules[name] = ce.EmulatedModule(ce.build_library(kernel_dir() / name, sanitize=True))
        rng = np.random.default_rng(0)
        for grid, block in [(1, 1), (3, 5), (40, 8), (None, 16)]:
            e = ce.emulated_engine(grid=grid, block=block)
            for dtype in (np.float32, np.float64):
                z = rng.standard_normal((7, 3)).astype(dtype)
                b = rng.standard_normal(3).astype(dtype)
                for kind in ("sigmoid", "lecun_tanh"):
                    e.act_backward(z, e.bias_act(z, b, kind), kind)
                e.softmax_xent(z, rng.integers(0, 3, 7))
                e.bias_grad(z); e.sum_squares(z)
                p = z.copy(); m = np.zeros_like(z); v = np.zeros_like(z)
                e.sgd_update(p, z, 0.1, 0.01); e.momentum_update(p, z, m, 0.1, 0.9, nesterov=True)
                e.adam_update(p, z, m, v, 0.1, 0.9, 0.999, 1e-8, 1, 0.01)
                _, x_hat, inv_std, _, _ = e.batch_norm_forward(z, b, b, 1e-5)
                e.batch_norm_backward(z, x_hat, inv_std, b)
                x = rng.standard_normal((2, 3, 7, 6)).astype(dtype)
                for kernel, stride, padding in [((3, 2), (2, 1), (1, 0, 2, 1)),
                                                ((3, 3), (1, 1), (3, 3, 3, 3)),
                                                ((7, 6), (1, 1), (0, 0, 0, 0))]:
                    cols = e.im2col(x, kernel, stride, padding)
                    e.col2im(cols, x.shape, kernel, stride, padding)
                for size, stride in [((2, 2), (2, 2)), ((3, 2), (1, 3)), ((7, 6), (1, 1))]:
                    out, arg = e.max_pool_forward(x, size, stride)
                    e.max_pool_backward(out, arg, x.shape, size, stride)
                    e.avg_pool_backward(e.avg_pool_forward(x, size, stride), x.shape, size, stride)
        print("CLEAN", len(e.launches))
    """
)

BUGGY_KERNEL = """
extern "C" __global__ void copy_off_by_one(const float* x, float* y, int n) {
    // Bug on purpose: <= reads and writes one element past the end.
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i <= n; i += blockDim.x * gridDim.x)
        y[i] = x[i];
}
"""


def _run_under_asan(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["LD_PRELOAD"] = LIBASAN  # Python itself is not built with ASan
    env["ASAN_OPTIONS"] = "detect_leaks=0"
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    script = ASAN_SCRIPT.format(tests=str(Path(__file__).resolve().parents[1] / "support"))
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          env=env, timeout=240)


@needs_asan
def test_asan_catches_an_out_of_bounds_kernel(tmp_path):
    cu = tmp_path / "buggy.cu"
    cu.write_text(BUGGY_KERNEL)
    proc = _run_under_asan("buggy", str(cu))
    assert proc.returncode != 0, proc.stdout
    assert "NOT CAUGHT" not in proc.stdout
    assert "heap-buffer-overflow" in proc.stderr, proc.stderr[-3000:]


@needs_asan
def test_real_kernels_are_clean_under_asan():
    proc = _run_under_asan("real")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "CLEAN" in proc.stdout
    assert "AddressSanitizer" not in proc.stderr


# ------------------------------------------------------------- convolution
CONV_CASES = [  # (x shape, kernel, stride, padding); pooling uses kernel and stride
    ((2, 3, 7, 6), (3, 2), (2, 1), (1, 0, 2, 1)),
    ((1, 2, 5, 5), (3, 3), (1, 1), (1, 1, 1, 1)),
    ((3, 1, 8, 9), (2, 3), (3, 2), (0, 2, 1, 0)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("grid,block", GRIDS, ids=GRID_IDS)
def test_conv_kernels_equal_the_reference_across_grids(grid, block, dtype, cpu):
    """The gathers add in the reference's order, so every result is bit-identical."""
    rng = np.random.default_rng(11)
    emu = emulated_engine(grid=grid, block=block)
    for x_shape, kernel, stride, padding in CONV_CASES:
        x = rng.standard_normal(x_shape).astype(dtype)
        x.reshape(-1)[::5] = 0.25  # ties for the max-pool
        cols = cpu.im2col(x, kernel, stride, padding)
        np.testing.assert_array_equal(emu.im2col(x, kernel, stride, padding), cols)
        g = rng.standard_normal(cols.shape).astype(dtype)
        np.testing.assert_array_equal(emu.col2im(g, x_shape, kernel, stride, padding),
                                      cpu.col2im(g, x_shape, kernel, stride, padding))
        out, arg = emu.max_pool_forward(x, kernel, stride)
        ref_out, ref_arg = cpu.max_pool_forward(x, kernel, stride)
        np.testing.assert_array_equal(out, ref_out)
        np.testing.assert_array_equal(arg, ref_arg)
        g = rng.standard_normal(out.shape).astype(dtype)
        np.testing.assert_array_equal(emu.max_pool_backward(g, arg, x_shape, kernel, stride),
                                      cpu.max_pool_backward(g, ref_arg, x_shape, kernel, stride))
        np.testing.assert_array_equal(emu.avg_pool_forward(x, kernel, stride),
                                      cpu.avg_pool_forward(x, kernel, stride))
        np.testing.assert_array_equal(emu.avg_pool_backward(g, x_shape, kernel, stride),
                                      cpu.avg_pool_backward(g, x_shape, kernel, stride))
    suffix = "f32" if dtype == np.float32 else "f64"
    ran = {name for name, _, _ in emu.launches}
    assert ran == {f"{k}_{suffix}" for k in ("im2col", "col2im", "max_pool_forward",
                                             "max_pool_backward", "avg_pool_forward",
                                             "avg_pool_backward")}
    assert all(bk == block for _, _, bk in emu.launches)


def test_conv_kernels_index_in_64_bits():
    """im2col buffers pass 2^31 elements at large batches, so no index may be a 32-bit int.
    Running that many elements is out of reach of the CPU suite; this reads the source: the
    only ``int`` locals are the loop counters over a window (at most kh * kw), every other
    index is a ``long long`` and the element counts are widened before they are multiplied."""
    import re

    source = (kernel_dir() / "conv.cu").read_text()
    code = re.sub(r"//[^\n]*", "", source[:source.index('extern "C"')])
    int_locals = set(re.findall(r"\bint\s+(\w+)\s*=", code))
    assert int_locals == {"i", "j", "k"}, int_locals
    assert len(re.findall(r"HP_GRID_STRIDE_LOOP\(idx, total\)", code)) == 6
    for line in code.splitlines():
        if re.search(r"\b(total|width)\s*=", line):
            assert "const long long" in line and "(long long)" in line, line


def test_conv_wrappers_refuse_bad_shapes_and_foreign_arrays_before_launch():
    emu = emulated_engine()
    x = np.zeros((2, 3, 4, 4), dtype=np.float32)
    with pytest.raises(ShapeError, match="5x5 window does not fit"):
        emu.im2col(x, (5, 5), (1, 1), (0, 0, 0, 0))
    with pytest.raises(ShapeError, match=r"needs images of shape"):
        emu.max_pool_forward(x[0], (2, 2), (2, 2))
    with pytest.raises(ShapeError, match=r"needs argmax of the gradient's shape"):
        emu.max_pool_backward(np.zeros((2, 3, 2, 2), np.float32), np.zeros((2, 3, 2), np.int64),
                              x.shape, (2, 2), (2, 2))
    with pytest.raises(ConfigError, match="Mixing NumPy and CuPy"):
        emu.im2col([[[[0.0]]]], (1, 1), (1, 1), (0, 0, 0, 0))
    assert emu.launches == []
    # float16 and empty batches: the reference, no launch.
    half = emu.im2col(x.astype(np.float16), (3, 3), (1, 1), (1, 1, 1, 1))
    assert half.dtype == np.float16 and half.shape == (32, 27)
    empty, _ = emu.max_pool_forward(np.zeros((0, 3, 4, 4), np.float32), (2, 2), (2, 2))
    assert empty.shape == (0, 3, 2, 2)
    assert emu.launches == []
