"""make_results.py renders every tagged training run as its own section, saying which
BLAS kernel ran; no measurement here (rows are made up)."""

from __future__ import annotations

import json

import make_results


def _env(kernel, openblas):
    return {"date": "2026-12-01T00:00:00+00:00", "machine": "Test CPU", "usable_cpus": 2,
            "platform": "Linux", "versions": {"python": "3.11", "handprop": "0.1.0",
                                              "numpy": "2", "numba": "0.6", "torch": "2.13",
                                              "jax": "0.10.2", "jaxlib": "0.10.2"},
            "blas_kernel": kernel, "env": openblas, "load_average": [1.0, 1.0, 1.0],
            "load_average_end": [1.0, 1.0, 1.0]}


def _rows(speed):
    base = {"model": "784-100-10 sigmoid", "batch": 64, "optimizer": "sgd",
            "samples_per_s_min": speed, "samples_per_s_max": speed}
    return [dict(base, engine="numba", samples_per_s=speed, ratio_to_cpu=1.5,
                 jax_scan_samples_per_s=2 * speed, jax_scan_samples_per_s_min=2 * speed,
                 jax_scan_samples_per_s_max=2 * speed, ratio_to_jax_scan=0.5,
                 torch_compile_samples_per_s=speed, ratio_to_torch_compile=1.0,
                 torch_compile_warmup_seconds=31.0, ceiling_samples_per_s=4 * speed,
                 ceiling_share=0.25, sgemm_gflops=150.0)]


def test_tagged_runs_each_get_a_section(tmp_path):
    runs = {"": ("openblas 0.3.31 Haswell kernel, 2 threads", {"OPENBLAS_CORETYPE": "Haswell"}),
            "_unset": ("openblas 0.3.31 SkylakeX kernel, 2 threads", {}),
            "_quick": ("openblas 0.3.31 SkylakeX kernel, 2 threads", {})}
    for i, (tag, (kernel, openblas)) in enumerate(runs.items()):
        (tmp_path / f"training{tag}.json").write_text(
            json.dumps({"env": _env(kernel, openblas), "data": _rows(1000.0 * (i + 1))}))
    md = make_results.render(tmp_path)
    titles = [line for line in md.splitlines() if line.startswith("## Training")]
    assert titles == ["## Training throughput through `Trainer.fit`",
                      "## Training throughput, run with OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset",
                      "## Training throughput through `Trainer.fit` (run tagged `quick`)"]
    sections = md.split("## Training")[1:]
    assert "Haswell kernel" in sections[0] and "'OPENBLAS_CORETYPE': 'Haswell'" in sections[0]
    assert "SkylakeX kernel" in sections[1] and "none set" in sections[1]
    assert "jax 0.10.2" in sections[0]
    # the side-by-side table has a column per runner, and the compile time is reported
    assert "| model | batch | opt | numba | torch.compile | jax scan | GEMM-only ceiling |" in md
    assert "| 784-100-10 sigmoid | 64 | sgd | 3,000 | 3,000 | 6,000 | 12,000 |" in sections[2]
    assert "31-31 s per configuration" in sections[0]
    assert "x jax scan" in sections[0]


def test_a_cnn_run_gets_its_own_section(tmp_path):
    env = _env("openblas 0.3.31 SkylakeX kernel, 2 threads", {})
    rows = [dict(r, model="cnn 16c5-32c5-10 relu", torch_samples_per_s=900.0,
                 ratio_to_torch=1.1) for r in _rows(1000.0)]
    (tmp_path / "cnn.json").write_text(json.dumps({"env": env, "data": rows}))
    (tmp_path / "notes_cnn.md").write_text("A hand-written reading.\n")
    md = make_results.render(tmp_path)
    section = md.split("## MNIST CNN through `Trainer.fit`")[1]
    assert "SkylakeX kernel" in section and "lax.conv_general_dilated" in section
    assert ("| cnn 16c5-32c5-10 relu | 64 | sgd | 1,000 | 900 | 1,000 | 2,000 | 4,000 |"
            in section)
    assert section.rstrip().endswith("A hand-written reading.")
    assert "## MNIST CNN" not in make_results.render(tmp_path / "empty")  # none saved: none


def test_the_report_says_whether_handprop_timed_the_gradient_probe(tmp_path):
    env = _env("openblas 0.3.31 SkylakeX kernel, 2 threads", {})
    old = _rows(1000.0)  # saved before the benchmark turned the probe off: no key
    new = [dict(r, gradient_probe=0) for r in _rows(1000.0)]
    (tmp_path / "training.json").write_text(json.dumps({"env": env, "data": old}))
    (tmp_path / "training_new.json").write_text(json.dumps({"env": env, "data": new}))
    (tmp_path / "cnn.json").write_text(json.dumps({"env": env, "data": new}))
    (tmp_path / "tta.json").write_text(json.dumps({"env": env, "data": [
        {"engine": "numba", "reached": {}, "curve": [{"test_acc": 0.9}], "gradient_probe": 0},
        {"engine": "torch", "reached": {}, "curve": [{"test_acc": 0.9}],
         "gradient_probe": None}]}))
    md = make_results.render(tmp_path)
    training, tagged = md.split("## Training")[1:3]
    assert "include `Trainer.fit`'s per-epoch gradient-norm probe" in training
    assert "probe off (`gradient_probe=0`)" in tagged and "include" not in tagged
    cnn = md.split("## MNIST CNN")[1].split("## ")[0]
    assert "probe off (`gradient_probe=0`)" in cnn
    tta = md.split("## Time to accuracy")[1]
    assert "probe off (`gradient_probe=0`)" in tta  # the torch row does not count
