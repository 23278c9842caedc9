"""The bench/ helpers that time handprop's trainer against a comparator run it with the
gradient-norm probe off, and say so in their results (tiny runs; no speed asserted)."""

from __future__ import annotations

from benchlib.accuracy import time_to_accuracy
from benchlib.profiling import profile_steps


def test_time_to_accuracy_trains_without_the_gradient_probe(monkeypatch):
    from handprop.train import trainer as trainer_module

    made = []

    class Recording(trainer_module.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(trainer_module, "Trainer", Recording)
    result = time_to_accuracy("cpu", targets=(0.5,), max_epochs=1,
                              recipe={"train_subset": 300, "val_size": 50, "hidden": [8]})
    assert result["gradient_probe"] == 0 and len(result["curve"]) == 1
    (trainer,) = made
    assert trainer.gradient_probe == 0
    assert trainer.history.rows[-1]["grad_norms"] is None


def test_the_profile_times_steps_without_the_gradient_probe():
    row = profile_steps("cpu", "784-100-10 sigmoid", 8, steps=2, repeats=1)
    assert row["gradient_probe"] == 0 and row["total"] > 0
