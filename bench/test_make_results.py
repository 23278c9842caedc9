"""make_results.py renders one section per CPU profile and part, naming the kernels that
ran, and a summary across profiles; no measurement here (rows are made up)."""

from __future__ import annotations

import json

import make_results


def _env(kernel, variables):
    return {"date": "2026-12-01T00:00:00+00:00", "machine": "Test CPU", "usable_cpus": 2,
            "platform": "Linux", "versions": {"python": "3.11", "handprop": "0.1.0",
                                              "numpy": "2", "numba": "0.6", "torch": "2.13",
                                              "jax": "0.10.2", "jaxlib": "0.10.2"},
            "blas_kernel": kernel, "env": variables, "load_average": [1.0, 1.0, 1.0],
            "load_average_end": [1.0, 1.0, 1.0],
            "kernels": {"blas": kernel, "numba_cpu": "haswell" if variables else "host (x)",
                        "direct_convolutions": not variables, "variables": variables}}


def _rows(speed, engine="numba compiled", model="784-100-10 sigmoid", noisy=False):
    base = {"model": model, "batch": 64, "optimizer": "sgd", "samples_per_s_min": speed,
            "samples_per_s_max": speed, "spread": 0.4 if noisy else 0.1, "noisy": noisy}
    return [dict(base, engine=engine, samples_per_s=speed, ratio_to_cpu=1.5,
                 jax_scan_samples_per_s=2 * speed, jax_scan_samples_per_s_min=2 * speed,
                 jax_scan_samples_per_s_max=2 * speed, ratio_to_jax_scan=0.5,
                 ratio_to_jax_scan_min=0.4, ratio_to_jax_scan_max=0.6,
                 torch_compile_samples_per_s=speed, ratio_to_torch_compile=1.0,
                 ceiling_samples_per_s=4 * speed, ceiling_share=0.25, sgemm_gflops=150.0)]


def _save(folder, name, env, rows):
    (folder / f"{name}.json").write_text(json.dumps({"env": env, "data": rows}))


def test_each_profile_gets_its_own_section_naming_its_kernels(tmp_path):
    runs = {"as-is": ("openblas 0.3.31 SkylakeX kernel, 2 threads", {}),
            "avx512": ("openblas 0.3.31 SkylakeX kernel, 2 threads", {}),
            "avx2": ("openblas 0.3.31 Haswell kernel, 2 threads",
                     {"OPENBLAS_CORETYPE": "Haswell", "NUMBA_CPU_NAME": "haswell"})}
    for i, (profile, (kernel, variables)) in enumerate(runs.items()):
        _save(tmp_path, f"training_{profile}", _env(kernel, variables),
              _rows(1000.0 * (i + 1), noisy=profile == "avx2"))
    md = make_results.render(tmp_path)
    titles = [line for line in md.splitlines() if line.startswith("## MLP training")]
    assert titles == ["## MLP training, CPU profile as the environment stands",
                      "## MLP training, CPU profile `avx512`: OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE "
                      "unset", "## MLP training, CPU profile `avx2`: every contender capped at "
                      "AVX2"]
    sections = md.split("## MLP training")[1:]
    assert "SkylakeX kernel" in sections[0] and "direct convolutions on" in sections[0]
    assert "Haswell kernel" in sections[2] and "numba target haswell" in sections[2]
    assert "direct convolutions off (tiled GEMMs)" in sections[2]
    assert "| model | batch | opt | numba compiled | torch.compile | jax scan | GEMM-only " \
           "ceiling |" in md
    assert "| 784-100-10 sigmoid | 64 | sgd | 3,000 | 3,000 | 6,000 | 12,000 |" in sections[2]
    assert "0.50 [0.40-0.60]" in sections[0]  # the per-round ratio with its range
    assert "40 % noisy" in sections[2] and "noisy" not in sections[0].split("|---")[-1]


def test_the_summary_lists_numba_under_every_profile_and_the_cnn(tmp_path):
    env = _env("openblas 0.3.31 SkylakeX kernel, 2 threads", {})
    _save(tmp_path, "training_as-is", env, _rows(1000.0) + _rows(500.0, engine="cpu"))
    _save(tmp_path, "cnn_avx2", env, _rows(900.0, engine="numba", model="cnn 16c5-32c5-10 relu"))
    md = make_results.render(tmp_path)
    summary = md.split("## Summary")[1].split("\n## ")[0]
    lines = [line for line in summary.splitlines() if line.startswith("| `")]
    assert len(lines) == 2  # the cpu row is not a headline
    assert lines[0].startswith("| `as-is` | 784-100-10 sigmoid | 64 | sgd | numba compiled")
    assert lines[1].startswith("| `avx2` | cnn 16c5-32c5-10 relu | 64 | sgd | numba")
    assert "## MNIST CNN, CPU profile `avx2`" in md
    assert "## MNIST CNN" not in make_results.render(tmp_path / "empty")  # none saved: none


def test_a_profile_runs_in_a_child_process_with_its_environment():
    parsed = type("Args", (), {"repeats": 5, "scale": 1.0, "out": "/tmp/x", "max_wait": 600,
                                "engines": "numba", "comparators": None, "wait_load": 1.5})
    argv = make_results.child_command(parsed, "avx2", ["training", "cnn"])
    assert argv[argv.index("--profiles") + 1] == "avx2" and "--in-child" in argv
    assert argv[argv.index("--parts") + 1] == "training,cnn"
    assert argv[argv.index("--wait-load") + 1] == "1.5" and "--comparators" not in argv
    env = make_results.profile_environment("avx2", {"PATH": "/bin"})
    assert env["OPENBLAS_CORETYPE"] == "Haswell" and env["NUMBA_CPU_NAME"] == "haswell"
