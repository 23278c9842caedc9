"""`handprop bench`: runs, saves JSON rows with the documented keys, compares with a
saved file and flags regressions. Tiny settings; no speed is asserted."""

from __future__ import annotations

import json

import pytest

from handprop.cli import main

TINY = ["bench", "--quick", "--engines", "cpu", "--models", "0", "--batches", "16",
        "--steps", "2", "--repeats", "1", "--no-torch"]
KEYS = {"engine", "model", "batch", "optimizer", "samples_per_s", "samples_per_s_min",
        "samples_per_s_max", "ceiling_samples_per_s", "ratio_to_cpu", "ceiling_share",
        "blas_kernel", "threads"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "rows.json"
    assert main(TINY + ["--json", str(path)]) == 0
    return path


def test_json_rows_have_the_documented_keys(saved):
    rows = json.loads(saved.read_text())
    assert isinstance(rows, list) and len(rows) == 1
    row = rows[0]
    assert KEYS <= set(row)
    assert (row["engine"], row["model"], row["batch"], row["optimizer"]) == \
        ("cpu", "784-100-10 sigmoid", 16, "sgd")
    assert row["samples_per_s"] > 0 and row["ceiling_samples_per_s"] > 0
    assert row["samples_per_s_min"] <= row["samples_per_s"] <= row["samples_per_s_max"]
    assert "torch_samples_per_s" not in row  # --no-torch


def test_compare_flags_a_regression(saved, tmp_path, capsys):
    rows = json.loads(saved.read_text())
    fast = [dict(r, samples_per_s=r["samples_per_s"] * 1e6) for r in rows]  # saved much faster
    path = tmp_path / "fast.json"
    path.write_text(json.dumps(fast))
    capsys.readouterr()
    assert main(TINY + ["--compare", str(path)]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "1 regression(s)" in out


def test_compare_without_regression(saved, tmp_path, capsys):
    rows = json.loads(saved.read_text())
    slow = [dict(r, samples_per_s=r["samples_per_s"] * 1e-6) for r in rows]  # saved much slower
    path = tmp_path / "slow.json"
    path.write_text(json.dumps(slow))
    capsys.readouterr()
    assert main(TINY + ["--compare", str(path), "--threshold", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "REGRESSION" not in out and "no regression beyond 20%" in out


def test_compare_row_logic_is_threshold_based():
    from handprop.bench import compare_rows

    saved = [{"engine": "cpu", "model": "m", "batch": 8, "optimizer": "sgd",
              "samples_per_s": 100.0}]
    now = [dict(saved[0], samples_per_s=85.0)]
    assert compare_rows(now, saved, 0.10)[0]["regression"] is True
    assert compare_rows(now, saved, 0.20)[0]["regression"] is False
    assert compare_rows([dict(now[0], batch=9)], saved, 0.1) == []


@pytest.mark.parametrize("argv, message", [
    (["--compare", "/nonexistent/rows.json"], "no saved benchmark file"),
    (["--engines", "nosuch"], "unknown engine"),
    (["--models", "7"], "unknown --models entry"),
])
def test_bad_arguments_are_one_line_errors(argv, message, capsys):
    assert main(TINY + argv) == 2
    assert message in capsys.readouterr().err


def test_plot_writes_a_png(saved, tmp_path):
    from handprop.bench import load_rows, plot_rows

    out = tmp_path / "bars.png"
    plot_rows(load_rows(saved), out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_help_names_match_the_benchmark():
    """The help text is written out (no NumPy at --help); it must not drift."""
    from handprop import bench
    from handprop.bench.comparators import COMPARATORS
    from handprop.cli import bench as cli_bench

    assert cli_bench.MODEL_NAMES == tuple(bench.MODELS)
    assert cli_bench.COMPARATOR_NAMES == tuple(COMPARATORS)
    for model, batches, optimizers in bench.PLAN:
        assert (f"{model} at batch {'/'.join(map(str, batches))} with {'+'.join(optimizers)}"
                in cli_bench.PLAN_TEXT)


def test_registering_the_command_imports_no_numpy():
    import subprocess
    import sys

    code = ("import argparse, sys, handprop.cli.bench as b\n"
            "p = argparse.ArgumentParser(); b.register(p.add_subparsers())\n"
            "assert 'numpy' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("argv, message", [
    (["--comparators", "tensorflow"], "unknown --comparators entry 'tensorflow'"),
    (["--comparators", "torch"], "--no-torch contradicts --comparators torch"),
])
def test_bad_comparators_are_refused(argv, message, capsys):
    assert main(TINY + argv) == 2
    assert message in capsys.readouterr().err


def test_an_uninstalled_comparator_is_refused_not_dropped(capsys, monkeypatch):
    from handprop.bench import comparators

    monkeypatch.setattr(comparators, "jax_available", lambda: False)
    assert main(TINY + ["--comparators", "jax-scan"]) == 2
    assert "--comparators jax-scan: JAX or optax is not installed" in capsys.readouterr().err


def test_quick_leaves_torch_compile_out_and_says_so(capsys, monkeypatch):
    from handprop.bench import comparators

    monkeypatch.setattr(comparators, "jax_available", lambda: False)
    argv = [a for a in TINY if a != "--no-torch"] + ["--no-ceiling"]
    monkeypatch.setattr(comparators, "torch_available", lambda: True)
    seen = {}

    def fake_measure(*args, comparators=(), **kwargs):
        seen["comparators"] = list(comparators)
        return []

    monkeypatch.setattr("handprop.bench.measure_training", fake_measure)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert seen["comparators"] == ["torch"]
    assert "torch.compile not measured: --quick" in out
    assert "jax scan not measured: JAX or optax is not installed" in out


needs_jax = pytest.mark.skipif(
    not all(__import__("importlib").util.find_spec(m) for m in ("jax", "optax")),
    reason="JAX/optax not installed (pip install 'handprop[compare]')")


@needs_jax
def test_a_jax_comparator_row(tmp_path, capsys):
    path = tmp_path / "rows.json"
    assert main(TINY + ["--comparators", "jax-scan", "--json", str(path),
                        "--plot", str(tmp_path / "bars.png")]) == 0
    row = json.loads(path.read_text())[0]
    assert row["jax_scan_samples_per_s"] > 0 and row["ratio_to_jax_scan"] > 0
    out = capsys.readouterr().out
    assert "x jax scan" in out  # the ratio column
    assert any(line.split()[:3] == ["model", "batch", "opt"] and "jax scan" in line
               for line in out.splitlines())  # the side-by-side table's head
    assert (tmp_path / "bars.png").read_bytes()[:4] == b"\x89PNG"


def test_a_profile_measures_in_a_child_and_its_rows_name_the_kernels(tmp_path, capsys):
    path = tmp_path / "rows.json"
    argv = TINY + ["--comparators", "none", "--no-ceiling", "--profile", "all",
                   "--json", str(path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    rows = json.loads(path.read_text())
    assert [r["profile"] for r in rows] == ["as-is", "avx512", "avx2"]
    avx2 = rows[2]["kernels"]
    assert avx2["numba_cpu"] == "haswell" and "Haswell kernel" in avx2["blas"]
    assert avx2["variables"]["XLA_FLAGS"] == "--xla_cpu_max_isa=AVX2"
    assert "== CPU profile avx2: " in out and "== every profile" in out
    assert "NUMBA_CPU_NAME=haswell" in out


def test_quick_epochs_are_as_long_as_the_full_plans(monkeypatch):
    from handprop import bench
    from handprop.cli import bench as bench_cli

    seen = {}

    def fake(*args, **kwargs):
        seen.update(kwargs, models=args[0])
        return []

    monkeypatch.setattr(bench, "measure_training", fake)
    monkeypatch.setattr(bench, "sgemm_gflops", lambda **_: bench.Stat([1.0]))
    assert main(["bench", "--quick", "--engines", "cpu", "--comparators", "none"]) == 0
    assert seen.get("scale", 1.0) == 1.0 and seen["steps"] is None and seen["repeats"] == 3
    assert seen["models"] == ["784-100-10 sigmoid", "784-256-256-10 relu"]  # fewer rows
    assert bench_cli.PROFILE_NAMES == __import__("handprop.bench.profiles",
                                                 fromlist=["x"]).PROFILE_NAMES
