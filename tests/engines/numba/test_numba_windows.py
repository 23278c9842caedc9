"""The numba engine's window and pooling primitives and their kernels: which inputs take them, which fall back
to the reference, warm-up, kernel flags, and a convolutional training run against ``cpu``."""

from __future__ import annotations

import types

import numpy as np
import pytest

from handprop.engines import engine_status, get_engine

if not engine_status("numba").available:
    pytest.skip(f"numba engine unavailable: {engine_status('numba').reason}",
                allow_module_level=True)

from numba.core.registry import CPUDispatcher  # noqa: E402

from handprop.engines.numba import (direct_kernels, engine as numba_engine,  # noqa: E402
                                    pool_kernels, simd, threads as numba_threads,
                                    window_kernels)

CPU = get_engine("cpu")
KERNEL_MODULES = (window_kernels, pool_kernels, direct_kernels)
#: Every kernel of the window and pooling primitives, by name, with the module holding it.
KERNELS = {name: module for module in KERNEL_MODULES for name, obj in vars(module).items()
           if isinstance(obj, CPUDispatcher) and not name.startswith("_")
           and obj.py_func.__module__ == module.__name__}
CONV_KERNELS = {"im2col", "col2im", "max_pool_forward", "max_pool_forward_2x2",
                "max_pool_forward_2x2_nhwc", "max_pool_backward",
                "max_pool_backward_nhwc", "max_pool_backward_tiled_nhwc", "avg_pool_forward",
                "avg_pool_backward", "im2col_matmul", "im2col_t_matmul", "matmul_col2im",
                "act_backward_bias_grad_blocks", "direct_conv_forward", "direct_conv_weight_grad",
                "direct_conv_input_grad", "direct_conv_act_weight_grad"}


@pytest.fixture
def nb(monkeypatch):
    """The numba engine with its direct convolutions on, as on a CPU with AVX-512 (elsewhere
    they are right but slow, and the engine keeps the tiled GEMMs)."""
    engine = get_engine("numba")
    monkeypatch.setattr(engine, "direct_convolution", True)
    return engine


@pytest.fixture
def spy(nb, monkeypatch):
    """Records the name of every window or pooling kernel called, in order."""
    calls = []
    for name, module in KERNELS.items():
        kernel = getattr(module, name)

        def call(*args, name=name, kernel=kernel):
            calls.append(name)
            return kernel(*args)

        monkeypatch.setattr(module, name, call)
    return types.SimpleNamespace(calls=calls)


def run_all(engine, x):
    cols = engine.im2col(x, (3, 3), (1, 1), (1, 1, 1, 1))
    engine.col2im(cols, x.shape, (3, 3), (1, 1), (1, 1, 1, 1))
    out, arg = engine.max_pool_forward(x, (2, 2), (2, 2))
    engine.max_pool_backward(out, arg, x.shape, (2, 2), (2, 2))
    engine.avg_pool_backward(engine.avg_pool_forward(x, (2, 2), (2, 2)), x.shape, (2, 2), (2, 2))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_float_images_use_the_kernels(nb, spy, rng, dtype):
    run_all(nb, rng.standard_normal((2, 3, 6, 6)).astype(dtype))
    assert spy.calls == ["im2col", "col2im", "max_pool_forward_2x2", "max_pool_backward",
                         "avg_pool_forward", "avg_pool_backward"]
    spy.calls.clear()
    nb.max_pool_forward(rng.standard_normal((1, 2, 5, 5)).astype(dtype), (3, 3), (1, 1))
    assert spy.calls == ["max_pool_forward"]


@pytest.mark.parametrize("size", [(2, 2), (3, 2)])
def test_a_nan_reruns_the_nan_aware_max_pool(nb, spy, size):
    x = np.arange(36, dtype=np.float32).reshape(1, 1, 6, 6)
    x[0, 0, 1, 0] = np.nan
    out, arg = nb.max_pool_forward(x, size, (2, 2))
    assert spy.calls[-1] == "max_pool_forward"  # run again, NaN-aware
    ref_out, ref_arg = CPU.max_pool_forward(x, size, (2, 2))
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(arg, ref_arg)
    assert np.isnan(out[0, 0, 0, 0]) and arg[0, 0, 0, 0] == size[1]  # the NaN's position


def test_views_reach_the_kernels_without_a_copy(nb, monkeypatch, rng):
    """A convolution's output (channels-last memory seen as NCHW) reaches the channels-last
    kernel as that memory; any other view reaches the NCHW kernel as it is."""
    rows = rng.standard_normal((2, 6, 6, 3)).astype("float32")
    conv_output = rows.transpose(0, 3, 1, 2)
    other = rng.standard_normal((2, 3, 6, 6)).astype("float32").transpose(0, 1, 3, 2)
    seen = {}

    def recorder(name):
        kernel = getattr(pool_kernels, name)

        def record(x, *args):
            seen[name] = x
            return kernel(x, *args)
        return record

    for name in ("max_pool_forward_2x2", "max_pool_forward_2x2_nhwc"):
        monkeypatch.setattr(pool_kernels, name, recorder(name))

    def same_memory(a, b):
        return a.ctypes.data == b.ctypes.data and a.strides == b.strides and a.shape == b.shape

    nb.max_pool_forward(conv_output, (2, 2), (2, 2))
    assert same_memory(seen["max_pool_forward_2x2_nhwc"], rows)
    nb.max_pool_forward(other, (2, 2), (2, 2))
    assert same_memory(seen["max_pool_forward_2x2"], other)


@pytest.mark.parametrize("size", [(2, 2), (3, 3)])
def test_channels_last_pooling_keeps_its_layout_down_to_the_gradient(nb, rng, size):
    """Pooling a convolution's output keeps its memory layout in out, argmax and dx, so the
    convolution's backward pass sees its gradient as rows (N*H*W, C) without a copy."""
    rows = rng.standard_normal((2 * 8 * 8, 4)).astype("float32")
    x = rows.reshape(2, 8, 8, 4).transpose(0, 3, 1, 2)
    out, argmax = nb.max_pool_forward(x, size, (2, 2))
    ref_out, ref_arg = CPU.max_pool_forward(np.ascontiguousarray(x), size, (2, 2))
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(argmax, ref_arg)
    for layout in (out, argmax):
        assert layout.transpose(0, 2, 3, 1).flags.c_contiguous
    grad = rng.standard_normal(out.shape).astype("float32")  # NCHW, as col2im or Flatten give
    dx = nb.max_pool_backward(grad, argmax, x.shape, size, (2, 2))
    np.testing.assert_allclose(dx, CPU.max_pool_backward(grad, ref_arg, x.shape, size, (2, 2)),
                               rtol=1e-6, atol=1e-6)
    grad_rows = np.reshape(dx.transpose(0, 2, 3, 1), (-1, 4))  # what Conv2D.backward does
    assert np.shares_memory(grad_rows, dx)


@pytest.mark.parametrize("dtype", ["float16", "int64"])
def test_other_dtypes_fall_back_to_the_reference(nb, spy, dtype):
    x = np.arange(2 * 3 * 6 * 6).reshape(2, 3, 6, 6).astype(dtype)
    cols = nb.im2col(x, (3, 3), (1, 1), (1, 1, 1, 1))
    np.testing.assert_array_equal(cols, CPU.im2col(x, (3, 3), (1, 1), (1, 1, 1, 1)))
    out, arg = nb.max_pool_forward(x, (2, 2), (2, 2))
    np.testing.assert_array_equal(out, CPU.max_pool_forward(x, (2, 2), (2, 2))[0])
    assert spy.calls == []


def test_mixed_dtypes_and_int32_argmax(nb, spy, rng):
    x = rng.standard_normal((1, 2, 4, 4))
    out, arg = CPU.max_pool_forward(x, (2, 2), (2, 2))
    got = nb.max_pool_backward(out, arg.astype(np.int32), x.shape, (2, 2), (2, 2))
    np.testing.assert_array_equal(got, CPU.max_pool_backward(out, arg, x.shape, (2, 2), (2, 2)))
    assert spy.calls == ["max_pool_backward"]


def test_warmup_compiles_every_conv_kernel_for_each_dtype(nb):
    nb.warmup(dtypes=("float32", "float64"))
    # (helpers named with a leading underscore are compiled into the kernels that call them)
    assert set(KERNELS) == CONV_KERNELS
    for name, module in KERNELS.items():
        sigs = " ".join(str(s) for s in getattr(module, name).signatures)
        assert "float32" in sigs and "float64" in sigs, name


@pytest.mark.parametrize("filters, weight_grad_kernel", [(12, "im2col_t_matmul"),
                                                        (16, "direct_conv_weight_grad")])
def test_window_products_give_the_same_bits_on_any_number_of_threads(nb, rng, monkeypatch,
                                                                     filters,
                                                                     weight_grad_kernel):
    """The tiles (images, for the direct kernels) of a big call are shared between threads,
    each running its BLAS products on one BLAS thread; the weight gradient sums fixed groups
    of images in order, so the bits do not depend on the thread count. BLAS gets its thread
    count back afterwards."""
    from threadpoolctl import threadpool_info

    x = rng.standard_normal((20, 16, 14, 14)).astype("float32")
    x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)  # a conv's output
    w = rng.standard_normal((16 * 25, filters)).astype("float32")
    g = rng.standard_normal((20 * 14 * 14, filters)).astype("float32")
    window = ((5, 5), (1, 1), (2, 2, 2, 2))

    def everything():
        return [nb.im2col_matmul(x, w, *window), nb.im2col_t_matmul(x, g, *window),
                nb.matmul_col2im(g, np.ascontiguousarray(w.T), x.shape, *window)]

    monkeypatch.setattr(numba_threads, "kernel_threads", lambda: 1)
    serial = everything()
    # (after the first call, which loads the BLAS the kernels call if nothing had yet)
    blas_threads = [lib["num_threads"] for lib in threadpool_info()]
    monkeypatch.setattr(numba_threads, "kernel_threads", lambda: 3)
    module = KERNELS[weight_grad_kernel]
    threads, kernel = set(), getattr(module, weight_grad_kernel)

    def recording(*args):
        threads.add(__import__("threading").get_ident())
        return kernel(*args)

    monkeypatch.setattr(module, weight_grad_kernel, recording)
    split = everything()
    assert len(threads) == 3  # 20 images: 3 groups of 8, one per thread
    for a, b in zip(serial, split):
        np.testing.assert_array_equal(a, b)
    assert [lib["num_threads"] for lib in threadpool_info()] == blas_threads


@pytest.mark.parametrize("blas_threads", [1, 2])
def test_each_tile_product_runs_on_one_blas_thread_whatever_the_kernel_threads(
        nb, rng, monkeypatch, blas_threads):
    """The property the bits rest on: every BLAS product inside a shared kernel call runs on
    one BLAS thread, on one kernel thread as on several, so a tile's product is computed the
    same way however the call is split (OpenBLAS's AVX2 kernel gives other bits when it
    splits one product between its threads). BLAS gets its thread count back after."""
    from threadpoolctl import threadpool_info, threadpool_limits

    x = rng.standard_normal((12, 8, 10, 10)).astype("float32")
    w = rng.standard_normal((8 * 9, 8)).astype("float32")
    monkeypatch.setattr(nb, "direct_convolution", False)  # the tiled GEMMs, any CPU
    seen = []
    kernel = window_kernels.im2col_matmul

    def recording(*args):
        seen.append({lib["num_threads"] for lib in threadpool_info()
                     if lib["internal_api"] == "openblas"})
        return kernel(*args)

    nb.im2col_matmul(x, w, (3, 3), (1, 1), (1, 1, 1, 1))  # loads the BLAS the kernels call
    monkeypatch.setattr(window_kernels, "im2col_matmul", recording)
    monkeypatch.setattr(numba_threads, "PARALLEL_MIN_ELEMENTS", 1)
    results = []
    with threadpool_limits(limits=blas_threads, user_api="blas"):
        before = [lib["num_threads"] for lib in threadpool_info()]
        for threads in (1, 2, 3):
            monkeypatch.setattr(numba_threads, "kernel_threads", lambda t=threads: t)
            results.append(nb.im2col_matmul(x, w, (3, 3), (1, 1), (1, 1, 1, 1)))
        assert [lib["num_threads"] for lib in threadpool_info()] == before
    assert seen and all(counts == {1} for counts in seen), seen
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)


def test_conv_kernels_are_serial_cached_and_not_fastmath():
    for name, module in KERNELS.items():
        kernel = getattr(module, name)
        assert not kernel.targetoptions.get("parallel"), name
        assert not kernel.targetoptions.get("fastmath"), name
        assert kernel._cache.__class__.__name__ == "FunctionCache", name


def test_big_calls_split_over_the_batch_and_give_the_same_bits(nb, rng, monkeypatch):
    """Above PARALLEL_MIN_ELEMENTS a call runs as one chunk of the batch per thread, at once;
    every image is independent, so the results equal one call over the whole batch."""
    x = rng.standard_normal((7, 8, 30, 30)).astype("float32")  # 50,400 x 200 cols
    conv_output = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)

    def everything():
        cols = nb.im2col(x, (5, 5), (1, 1), (2, 2, 2, 2))
        results = [cols, nb.col2im(cols, x.shape, (5, 5), (1, 1), (2, 2, 2, 2))]
        for image in (x, conv_output):
            for size, stride in (((2, 2), (2, 2)), ((3, 3), (1, 1))):
                out, argmax = nb.max_pool_forward(image, size, stride)
                results += [out, argmax, nb.max_pool_backward(np.ascontiguousarray(out), argmax,
                                                              x.shape, size, stride)]
            avg = nb.avg_pool_forward(image, (3, 3), (2, 2))
            results += [avg, nb.avg_pool_backward(avg, x.shape, (3, 3), (2, 2))]
        return results

    monkeypatch.setattr(numba_threads, "kernel_threads", lambda: 1)
    serial = everything()
    assert numba_threads.threads_for_units(7, x.size * 25) == 1
    monkeypatch.setattr(numba_threads, "kernel_threads", lambda: 3)
    assert numba_threads.threads_for_units(7, x.size * 25) == 3
    assert numba_threads.threads_for_units(7, 1000) == 1  # small: one thread
    assert numba_threads.threads_for_units(2, x.size * 25) == 2  # never more than the units
    threads = set()
    kernel = window_kernels.im2col

    def im2col(*args):
        threads.add(__import__("threading").get_ident())
        return kernel(*args)

    monkeypatch.setattr(window_kernels, "im2col", im2col)
    split = everything()
    assert len(threads) == 3
    for a, b in zip(serial, split):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(split[1], CPU.col2im(split[0], x.shape, (5, 5), (1, 1),
                                                       (2, 2, 2, 2)))


def test_kernel_threads_follow_numba_num_threads(monkeypatch):
    import os

    cores = len(os.sched_getaffinity(0))
    monkeypatch.setenv("NUMBA_NUM_THREADS", "1")
    assert numba_threads.kernel_threads() == 1
    monkeypatch.setenv("NUMBA_NUM_THREADS", "64")
    assert numba_threads.kernel_threads() == min(64, cores)  # never more than the cores


FORK_CHILD = """
import multiprocessing, sys
import numpy as np
from handprop.engines import get_engine
from handprop.engines.numba import threads

threads.kernel_threads = lambda: 2
x = np.random.default_rng(0).standard_normal((4, 16, 28, 28)).astype("float32")
engine = get_engine("numba")
want = engine.im2col(x, (5, 5), (1, 1), (2, 2, 2, 2))  # the parent's pool exists now

def child(x):
    return get_engine("numba").im2col(x, (5, 5), (1, 1), (2, 2, 2, 2))

with multiprocessing.get_context("fork").Pool(1) as pool:
    got = pool.apply_async(child, (x,)).get(timeout=120)
print("same" if np.array_equal(got, want) else "different")
"""


def test_a_forked_child_gets_its_own_threads():
    """Worker threads do not survive a fork: a child (a sweep worker) makes its own. In a
    fresh interpreter, since forking this one (which may hold JAX's threads) is unsafe."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", FORK_CHILD], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "same"


def _blas_threads():
    from threadpoolctl import threadpool_info

    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_a_conv_model_runs_with_blas_on_one_thread_and_a_dense_model_keeps_its_threads(
        nb, monkeypatch):
    """The conv kernels bring their own threads; OpenBLAS's spinning ones would share the
    cores with them, so a model with convolutions or pooling gets one BLAS thread while it
    trains (Trainer.fit enters ``threads_for``), and gets its threads back after."""
    from handprop.nn import Conv2D, Dense, Flatten, MaxPool2D, Sequential
    from handprop.train.trainer import Trainer

    monkeypatch.setattr(numba_threads, "kernel_threads", lambda: 2)
    before = _blas_threads()
    conv = Sequential([Conv2D(2, 3, activation="relu"), MaxPool2D(2), Flatten(), Dense(3)],
                      input_shape=(1, 6, 6), engine=nb, seed=0)
    dense = Sequential([Dense(4, activation="relu"), Dense(3)], input_shape=(5,), engine=nb,
                       seed=0)
    with nb.threads_for(conv):
        assert set(_blas_threads()) == {1}
    with nb.threads_for(dense):
        assert _blas_threads() == before
    with CPU.threads_for(conv):
        assert _blas_threads() == before
    seen = []
    forward = conv.layers[0].forward
    monkeypatch.setattr(conv.layers[0], "forward",
                        lambda x, training=False: seen.append(_blas_threads()) or forward(x, training))
    from handprop.optim import SGD

    trainer = Trainer(conv, "softmax_cross_entropy", SGD(lr=0.1), batch_size=4, epochs=1, seed=0,
                      progress=False, checkpoint_dir=None)
    rng = np.random.default_rng(0)
    trainer.fit(rng.random((8, 1, 6, 6)).astype("float32"), rng.integers(0, 3, 8))
    assert seen and all(set(threads) == {1} for threads in seen)
    assert _blas_threads() == before
    monkeypatch.setattr(numba_threads, "kernel_threads", lambda: 1)
    with nb.threads_for(conv):  # nothing to share the cores with
        assert _blas_threads() == before


def test_a_big_bias_gradient_sums_fixed_blocks_on_any_number_of_threads(nb, rng, monkeypatch):
    """A convolution's bias gradient (column sums of 100,000 rows) is summed in fixed blocks
    shared between threads: the same bits on one thread or three, and the reference's
    value."""
    grad = rng.standard_normal((3 * numba_engine.BIAS_BLOCK_ROWS + 5, 16)).astype("float32")
    monkeypatch.setattr(numba_threads, "kernel_threads", lambda: 1)
    serial = nb.bias_grad(grad)
    monkeypatch.setattr(numba_threads, "kernel_threads", lambda: 3)
    threads, kernel = set(), nb.kernels.bias_grad_blocks

    def recording(*args):
        threads.add(__import__("threading").get_ident())
        return kernel(*args)

    monkeypatch.setattr(nb.kernels, "bias_grad_blocks", recording)
    split = nb.bias_grad(grad)
    assert len(threads) == 3
    np.testing.assert_array_equal(serial, split)
    assert split.dtype == np.float32
    np.testing.assert_allclose(split, grad.astype(np.float64).sum(axis=0), rtol=1e-6, atol=1e-4)


# (x shape, window, stride, padding, filters) and the kernels the three products take. The
# direct kernels need the filters (the channels, for the input gradient) in whole vectors;
# the forward pass and weight gradient window rows of 16+ values, or else a stride-1 window
# 3 or 5 wide; the input gradient stride 1, a window 3 or 5 wide and padding smaller than
# the window.
FORWARD, WEIGHT_GRAD, INPUT_GRAD = ("direct_conv_forward", "direct_conv_weight_grad",
                                    "direct_conv_input_grad")
TILED = ("im2col_matmul", "im2col_t_matmul", "matmul_col2im")
DIRECT_GEOMETRIES = [
    (((3, 16, 14, 14), (5, 5), (1, 1), (2, 2, 2, 2), 32),  # the MNIST CNN's second layer
     (FORWARD, WEIGHT_GRAD, INPUT_GRAD)),
    (((2, 1, 12, 12), (5, 5), (1, 1), (2, 2, 2, 2), 16),  # a one-channel first layer
     (FORWARD, WEIGHT_GRAD, TILED[2])),
    (((2, 2, 9, 9), (4, 4), (1, 1), (1, 2, 1, 2), 16), TILED),  # short rows, no slide width
    (((2, 16, 9, 10), (5, 3), (1, 1), (2, 2, 1, 1), 32),  # a 5x3 window
     (FORWARD, WEIGHT_GRAD, INPUT_GRAD)),
    (((2, 16, 7, 30), (3, 3), (1, 1), (1, 1, 1, 1), 16),  # rows of 30: blocks of 14, 14, 2
     (FORWARD, WEIGHT_GRAD, INPUT_GRAD)),
    (((2, 16, 9, 9), (3, 3), (2, 1), (1, 1, 1, 1), 16),  # row stride 2
     (FORWARD, WEIGHT_GRAD, TILED[2])),
    (((2, 8, 9, 11), (3, 2), (2, 1), (1, 0, 2, 1), 48),  # strided, ragged, asymmetric
     (FORWARD, WEIGHT_GRAD, TILED[2])),
    (((1, 32, 5, 5), (4, 4), (1, 1), (1, 2, 1, 2), 64),  # an even window, "same"
     (FORWARD, WEIGHT_GRAD, TILED[2])),
    (((2, 20, 6, 5), (1, 1), (1, 1), (0, 0, 0, 0), 16),  # 1x1
     (FORWARD, WEIGHT_GRAD, TILED[2])),
    (((2, 16, 4, 4), (3, 3), (1, 1), (3, 3, 3, 3), 16),  # windows wholly in the padding
     (FORWARD, WEIGHT_GRAD, TILED[2])),
    # filters in part of a vector (18: not whole for vectors of 4, 8 or 16 values)
    (((2, 16, 8, 8), (3, 3), (1, 1), (1, 1, 1, 1), 18), (TILED[0], TILED[1], INPUT_GRAD)),
    (((2, 10, 8, 8), (3, 3), (1, 1), (1, 1, 1, 1), 18), TILED),  # and channels too
]


def _direct_case(rng, case, dtype, layout):
    x_shape, kernel, stride, padding, filters = case
    x = rng.standard_normal(x_shape).astype(dtype)
    if layout == "channels-last":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    cols = CPU.im2col(np.ascontiguousarray(x), kernel, stride, padding)
    w = rng.standard_normal((cols.shape[1], filters)).astype(dtype)
    g = rng.standard_normal((cols.shape[0], filters)).astype(dtype)
    return x, cols, w, g


def _window_products(engine, x, w, g, kernel, stride, padding):
    return (engine.im2col_matmul(x, w, kernel, stride, padding),
            engine.im2col_t_matmul(x, g, kernel, stride, padding),
            engine.matmul_col2im(g, np.ascontiguousarray(w.T), x.shape, kernel, stride, padding))


@pytest.mark.parametrize("layout", ["contiguous", "channels-last"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case, kernels", DIRECT_GEOMETRIES,
                         ids=[f"{'x'.join(map(str, c[0]))}-{'x'.join(map(str, c[1]))}-f{c[4]}"
                              for c, _ in DIRECT_GEOMETRIES])
def test_direct_convolutions_agree_with_im2col_around_a_gemm(nb, spy, rng, monkeypatch, case,
                                                             kernels, dtype, layout):
    """The direct kernels (register-blocked vector loops, no window tile) give what the
    reference's im2col/col2im around one GEMM gives, and what the tiled GEMMs give; each
    product takes the kernel its shapes call for."""
    x_shape, kernel, stride, padding, filters = case
    x, cols, w, g = _direct_case(rng, case, dtype, layout)
    z, dw, dx = _window_products(nb, x, w, g, kernel, stride, padding)
    assert list(dict.fromkeys(spy.calls)) == list(kernels)  # (once per thread sharing a call)
    want = (cols @ w, cols.T @ g, CPU.col2im(g @ w.T, x_shape, kernel, stride, padding))
    terms = (cols.shape[1], cols.shape[0], filters * kernel[0] * kernel[1])
    tol = {"float32": 2e-6, "float64": 1e-14}[dtype]
    for got, ref, n_terms in zip((z, dw, dx), want, terms):
        assert got.dtype == np.dtype(dtype) and got.shape == ref.shape
        # each a sum of ``n_terms`` products, to round-off of its size
        np.testing.assert_allclose(got, ref, rtol=0, atol=tol * n_terms * np.abs(ref).max())
    spy.calls.clear()
    monkeypatch.setattr(nb, "direct_convolution", False)
    tiled = _window_products(nb, x, w, g, kernel, stride, padding)
    assert list(dict.fromkeys(spy.calls)) == list(TILED)
    for got, ref, n_terms in zip((z, dw, dx), tiled, terms):
        np.testing.assert_allclose(got, ref, rtol=0, atol=tol * n_terms * np.abs(ref).max())


def test_the_vector_kernels_follow_the_cpu_they_are_compiled_for(monkeypatch):
    """AVX-512 or AVX2 (with FMA) by the target the kernels are compiled for: the host, or
    NUMBA_CPU_NAME and NUMBA_CPU_FEATURES as set; no vector kernels for any other target."""
    import numba
    from llvmlite import binding

    host_features = binding.get_host_cpu_features()
    host = ("avx512" if host_features.get("avx512f") else
            "avx2" if host_features.get("avx2") and host_features.get("fma") else "")
    for name, features, want in [(None, None, host), ("host", None, host),
                                 ("generic", None, ""), ("skylake-avx512", None, "avx512"),
                                 ("haswell", None, "avx2"), ("znver4", None, "avx512"),
                                 ("x86-64", None, ""), (None, "+avx2,+fma,-avx512f", "avx2"),
                                 (None, "+avx2,-fma,-avx512f", ""),
                                 (None, "+avx2,+fma,+avx512f", "avx512")]:
        monkeypatch.setattr(numba.config, "CPU_NAME", name)
        monkeypatch.setattr(numba.config, "CPU_FEATURES", features)
        assert simd.target_isa() == want, (name, features)
        assert simd.wide_vectors() is (want == "avx512")
        assert simd.vector_kernels() is (want != "")


def test_convolution_outputs_start_on_a_cache_line(nb, rng):
    """The arrays the direct kernels write whole vectors into start on 64-byte boundaries
    (NumPy's own start 16 bytes past one), and are ordinary C-contiguous arrays."""
    x = rng.standard_normal((3, 16, 14, 14)).astype("float32")
    w = rng.standard_normal((16 * 25, 32)).astype("float32")
    window = ((5, 5), (1, 1), (2, 2, 2, 2))
    z = nb.im2col_matmul(x, w, *window, None, "relu")
    dz, _ = nb.act_backward_bias_grad(z, z, "relu")
    dx = nb.matmul_col2im(dz, np.ascontiguousarray(w.T), x.shape, *window)
    for a in (z, dz, dx.transpose(0, 2, 3, 1)):
        assert a.ctypes.data % 64 == 0 and a.flags.c_contiguous and a.flags.writeable


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case, kernels", DIRECT_GEOMETRIES,
                         ids=[f"{'x'.join(map(str, c[0]))}-{'x'.join(map(str, c[1]))}-f{c[4]}"
                              for c, _ in DIRECT_GEOMETRIES])
def test_a_first_layers_fused_backward_is_act_backward_then_the_weight_gradient(
        nb, spy, rng, case, kernels, dtype, activation):
    """``act_backward_weight_grad`` (dz made an image at a time, never the whole batch's) gives
    the reference's act_backward, bias_grad and im2col_t_matmul; it runs as one direct kernel
    where the weight gradient would (relu and leaky_relu), else as those three."""
    x_shape, kernel, stride, padding, filters = case
    x, cols, _, _ = _direct_case(rng, case, dtype, "channels-last")
    out = CPU.activation(rng.standard_normal((cols.shape[0], filters)).astype(dtype), activation)
    grad = rng.standard_normal(out.shape).astype(dtype)
    dw, db = nb.act_backward_weight_grad(x, grad, out, activation, 0.01, kernel, stride, padding)
    fused = kernels[1] == WEIGHT_GRAD and activation != "tanh"
    assert ("direct_conv_act_weight_grad" in spy.calls) is fused
    dz = CPU.act_backward(grad, out, activation)
    want_dw, want_db = cols.T @ dz, CPU.bias_grad(dz)
    tol = {"float32": 2e-6, "float64": 1e-14}[dtype]
    assert dw.dtype == db.dtype == np.dtype(dtype)
    assert dw.shape == want_dw.shape and db.shape == want_db.shape
    np.testing.assert_allclose(dw, want_dw, rtol=0,
                               atol=tol * cols.shape[0] * np.abs(want_dw).max())
    np.testing.assert_allclose(db, want_db, rtol=0,
                               atol=tol * cols.shape[0] * np.abs(want_db).max())


@pytest.mark.parametrize("case, kernels", DIRECT_GEOMETRIES,
                         ids=[f"{'x'.join(map(str, c[0]))}-{'x'.join(map(str, c[1]))}-f{c[4]}"
                              for c, _ in DIRECT_GEOMETRIES])
def test_the_implementation_table_names_the_kernel_that_runs(nb, monkeypatch, case, kernels):
    """``window_implementations`` (what doctor and the run header print) says "direct" exactly
    where the direct kernel runs, and "tiled" everywhere once the direct ones are off."""
    x_shape, kernel, stride, padding, filters = case
    chosen = nb.window_implementations(filters, x_shape[1], kernel, stride, padding)
    ran = dict(zip(("im2col_matmul", "im2col_t_matmul", "matmul_col2im"), kernels))
    for product, name in ran.items():
        assert chosen[product] == ("direct" if name.startswith("direct") else "tiled"), product
    assert chosen["act_backward_weight_grad"] == ("direct" if ran["im2col_t_matmul"].startswith(
        "direct") else "reference")
    monkeypatch.setattr(nb, "direct_convolution", False)
    off = nb.window_implementations(filters, x_shape[1], kernel, stride, padding)
    assert off == {"im2col_matmul": "tiled", "im2col_t_matmul": "tiled",
                   "act_backward_weight_grad": "reference", "matmul_col2im": "tiled"}


def test_the_run_header_names_each_convolutions_implementations(nb, monkeypatch):
    from handprop.nn import Conv2D, Dense, Flatten, MaxPool2D, Sequential
    from handprop.optim import SGD
    from handprop.train.run import describe_path
    from handprop.train.trainer import Trainer

    model = Sequential([Conv2D(16, 5, padding="same", activation="relu"), MaxPool2D(2),
                        Conv2D(32, 5, padding="same", activation="relu"), Flatten(),
                        Dense(10)], input_shape=(1, 12, 12), engine=nb, seed=0)
    trainer = Trainer(model, "softmax_cross_entropy", SGD(lr=0.1), progress=False,
                      checkpoint_dir=None)
    lines = describe_path(trainer).splitlines()
    assert lines[0].startswith("path: layer by layer (layer 0 (Conv2D")
    assert lines[1:] == [
        "  layer 0 Conv2D(16, 5x5, same, relu): forward direct, backward weights and bias direct",
        "  layer 2 Conv2D(32, 5x5, same, relu): forward direct, backward weights direct, inputs "
        "direct"]
    monkeypatch.setattr(nb, "direct_convolution", False)
    assert describe_path(trainer).splitlines()[2].endswith(
        "forward tiled, backward weights tiled, inputs tiled")
