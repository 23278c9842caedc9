"""A run folder of `handprop train`: the files it holds, and the one reader of them.

``evaluate``, ``predict``, ``compare`` and sweep trials read run folders only
through ``RunFolder``; ``run_training`` writes them under the names below.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError

CONFIG = "config.json"          # the configuration, preprocessing statistics, classes
METRICS = "metrics.jsonl"       # one JSON object per epoch
BATCH_LOSS = "batch_loss.csv"   # epoch, batch, loss of every mini-batch
CHECKPOINT = "checkpoint.npz"   # after every epoch (atomic), for --resume
MODEL = "model.npz"             # the final (or best, with early stopping) weights
CURVES = "curves.png"           # loss and accuracy per epoch, and the per-batch loss
GRADIENTS = "gradients.png"     # gradient norm of each weight matrix after each epoch
DECISION = "decision.png"       # for two inputs: the predicted class over the plane
SUMMARY = "summary.json"        # test metrics, engine, epochs, time; written last

#: Every file a run may write, in the order a reader would look at them.
RUN_FILES = (CONFIG, METRICS, BATCH_LOSS, MODEL, CURVES, GRADIENTS, DECISION, SUMMARY,
             CHECKPOINT)
#: What a finished run is without the checkpoint (which only serves to resume).
FINISHED_FILES = tuple(name for name in RUN_FILES if name != CHECKPOINT)


def read_metrics(path: Path) -> list[dict]:
    """The per-epoch rows of a ``metrics.jsonl`` (none if the file is missing)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class RunFolder:
    """What a run folder holds: ``saved`` is the whole ``config.json`` (``config``,
    ``preprocessing``, ``input_dim``, ``classes``, ``class_names``); ``summary`` is None
    while the run is unfinished."""

    path: Path
    saved: dict
    history: list[dict]
    summary: dict | None

    @property
    def config(self) -> dict:
        return self.saved["config"]

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @classmethod
    def read(cls, path) -> RunFolder:
        path = Path(path)
        if not (path / CONFIG).is_file():
            raise CheckpointError(f"{path} is not a handprop run folder (no {CONFIG}); "
                                  f"give the --out folder of `handprop train`")
        try:
            saved = json.loads((path / CONFIG).read_text())
            saved["config"]  # noqa: B018 -- a config.json without it is damaged
            history = read_metrics(path / METRICS)
            summary = (json.loads((path / SUMMARY).read_text())
                       if (path / SUMMARY).is_file() else None)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{path} has a damaged {CONFIG}, {METRICS} or {SUMMARY} "
                                  f"({type(exc).__name__}: {exc})") from None
        return cls(path, saved, history, summary)

    def load_model(self, backend=None):
        """The trained model on engine ``backend``: ``model.npz`` of a finished run, else
        the weights of the last completed epoch from the checkpoint."""
        from ..engines import get_engine
        from ..io import load_arrays
        from ..nn.model import Sequential

        engine = get_engine(backend)
        if (self.path / MODEL).exists():
            return Sequential.load(self.path / MODEL, engine=engine)
        if not (self.path / CHECKPOINT).exists():
            raise CheckpointError(f"{self.path} has no {MODEL} or {CHECKPOINT} yet: "
                                  f"no epoch has finished")
        arrays, meta = load_arrays(self.path / CHECKPOINT)
        model = Sequential.from_config(meta["model"], engine=engine)
        model.set_weights({k[len("model/"):]: v for k, v in arrays.items()
                           if k.startswith("model/")})
        return model
