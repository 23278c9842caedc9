"""Throughput measurement behind ``handprop bench`` (the ``bench/`` suites use it too).

What is measured (float32, MNIST-shaped data taken from the packaged MNIST):

* whole training steps through the library's own loop (``Trainer.fit``,
  ``progress=False``, no validation, no checkpoints): one timed epoch is
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
from .runners import CeilingRunner, HandpropRunner, sgemm_gflops
from .stats import Stat, throughput, time_call
from .torch_runner import TorchLoop, TorchRunner, torch_mlp, torch_optimizer
from .workload import (BATCHES, BENCH_OPTIMIZERS, CLASSES, INPUT_DIM, LEARNING_RATES, MODELS,
                       PLAN, SAMPLES_PER_TIMING, bench_engines, plan_configs, default_steps, handprop_model,
                       jax_available, mlp_name, mnist_slice, model_dims, resolve_model,
                       step_flops, torch_available)

__all__ = [
    "BATCHES", "BENCH_OPTIMIZERS", "CLASSES", "INPUT_DIM", "LEARNING_RATES", "MODELS",
    "ROW_KEY", "SAMPLES_PER_TIMING", "CeilingRunner", "HandpropRunner", "Stat", "TorchLoop",
    "TorchRunner", "bench_engines", "blas_kernel", "blas_threads", "compare_rows",
    "default_steps", "environment", "format_comparison", "format_side_by_side", "format_training_table", "side_by_side",
    "handprop_model", "interleave", "PLAN", "plan_configs", "jax_available", "load_rows", "measure_config",
    "measure_training", "mlp_name", "mnist_slice", "model_dims", "plot_rows", "resolve_model",
    "sgemm_gflops", "step_flops", "throughput", "time_call", "torch_available", "torch_mlp",
    "torch_optimizer",
]
