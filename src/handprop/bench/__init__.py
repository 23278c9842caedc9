"""Throughput measurement behind ``handprop bench`` (the ``bench/`` suites use it too).

What is measured (float32, MNIST-shaped data taken from the packaged MNIST):

* whole training steps through the library's own loop (``Trainer.fit``,
  ``progress=False``, no validation, no checkpoints, and no per-epoch
  gradient-norm probe, ``gradient_probe=0``, which no comparator runs): one timed epoch is
  exactly ``steps`` mini-batches; a warm-up epoch runs first (JIT, first
  allocations), and the engine is synchronised before the clock is read
  (``Trainer.fit`` does it at the end of every epoch);
* the same model and batches in PyTorch CPU eager (autograd, ``torch.optim``,
  ``torch.set_num_threads`` = BLAS threads), starting from the same weights;
* the GEMM-only ceiling: only each step's matrix products, exactly those the
  library's ``Dense`` does (forward ``x @ W``, backward ``x.T @ dz`` and
  ``dz @ W.T``, the input gradient of the first layer skipped), into
  preallocated outputs;
* sgemm GFLOP/s at a large square size.

The MNIST CNN of the convolution issue (``CNN_MODEL``, ``CNN_PLAN``: batch 64/128,
SGD and Adam; ``handprop bench --cnn``) runs through the same runners: handprop's
``Sequential`` of Conv2D/MaxPool2D/Flatten/Dense, the same network in PyTorch
(``torch_cnn``) and JAX (``lax.conv_general_dilated``), and a ceiling of only its
conv and dense GEMMs on preallocated im2col-shaped buffers (``CnnCeilingRunner``).

Engines, PyTorch and the ceiling are timed side by side: every repeat runs
each of them once, in a rotating order, so slow drifts of a shared machine
hit all of them alike. Each figure keeps min/median/max over the repeats;
ratios are ratios of medians.

Modules: ``stats`` (repeats, timing), ``workload`` (models, data, engines),
``runners`` (handprop and the GEMM ceiling), ``torch_runner`` (PyTorch),
``measure`` (side by side), ``environment`` (what is recorded about the
machine, from ``handprop.host``), ``report`` (tables, compare, plot).
"""

from ..host import blas_kernel, blas_threads
from .environment import environment
from .measure import interleave, measure_config, measure_training
from .report import (ROW_KEY, compare_rows, format_comparison, format_side_by_side,
                     format_training_table, load_rows, plot_rows, side_by_side)
from .runners import CeilingRunner, CnnCeilingRunner, HandpropRunner, ceiling_runner, sgemm_gflops
from .stats import Stat, throughput, time_call
from .torch_runner import TorchLoop, TorchRunner, torch_cnn, torch_mlp, torch_optimizer
from .workload import (BATCHES, BENCH_OPTIMIZERS, CLASSES, CNN_MODEL, CNN_PLAN, INPUT_DIM,
                       LEARNING_RATES, MIN_EPOCH_SAMPLES, MODELS, PLAN, SAMPLES_PER_TIMING, bench_data, bench_engines,
                       bench_model, default_steps, handprop_cnn, handprop_model, is_cnn,
                       jax_available, mlp_name, mnist_slice, model_dims, model_name,
                       model_step_flops, plan_configs, resolve_model, step_flops,
                       torch_available)

__all__ = [
    "BATCHES", "BENCH_OPTIMIZERS", "CLASSES", "CNN_MODEL", "CNN_PLAN", "INPUT_DIM",
    "LEARNING_RATES", "MIN_EPOCH_SAMPLES", "MODELS", "ROW_KEY", "SAMPLES_PER_TIMING", "CeilingRunner",
    "CnnCeilingRunner", "HandpropRunner", "Stat", "TorchLoop", "bench_data", "bench_model",
    "ceiling_runner", "handprop_cnn", "is_cnn", "model_name", "model_step_flops", "torch_cnn",
    "TorchRunner", "bench_engines", "blas_kernel", "blas_threads", "compare_rows",
    "default_steps", "environment", "format_comparison", "format_side_by_side", "format_training_table", "side_by_side",
    "handprop_model", "interleave", "PLAN", "plan_configs", "jax_available", "load_rows", "measure_config",
    "measure_training", "mlp_name", "mnist_slice", "model_dims", "plot_rows", "resolve_model",
    "sgemm_gflops", "step_flops", "throughput", "time_call", "torch_available", "torch_mlp",
    "torch_optimizer",
]
