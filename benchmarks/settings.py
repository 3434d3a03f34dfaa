"""What one benchmark run passes to each model's process (kept free of TensorFlow imports)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

OURS = "ours"
OURS_FAST = "ours_fast"
ARTICLE = "article"
KERAS_IO = "keras_io"
PYTORCH_MLP = "pytorch_mlp"
ARTICLE_CONFIG = "configs/seed-article.yaml"
FAST_CONFIG = "configs/fast.yaml"


@dataclass(frozen=True)
class ModelSpec:
    """A benchmarked model: what it is, where it comes from, and the 10-epoch validation -ELBO
    quoted for it (the run measures its own; this is for comparison)."""

    description: str
    source: str
    reference_10_epoch: float | None = None


MODELS: dict[str, ModelSpec] = {
    OURS: ModelSpec("mnist-vae, default params.yaml", "params.yaml"),
    OURS_FAST: ModelSpec("mnist-vae, its lighter configs/fast.yaml (conv 16/32/64, batch 96)",
                         FAST_CONFIG),
    ARTICLE: ModelSpec("the article's model (conv 64x3, latent 8, squared error)",
                       ARTICLE_CONFIG, 114.9),
    KERAS_IO: ModelSpec("keras.io VAE example (conv 32/64, latent 2, BCE)",
                        "keras-team/keras-io examples/generative/vae.py", 155.9),
    PYTORCH_MLP: ModelSpec("pytorch/examples MLP VAE (784-400-20, BCE)",
                           "pytorch/examples vae/main.py", 105.4),
}
SUBJECT = OURS
FAST_SUBJECT = OURS_FAST  # held to the stretch bar as well: the MLP's own target in less time
OVERLAYS = {ARTICLE: ARTICLE_CONFIG, OURS_FAST: FAST_CONFIG}  # the models that are our own code
BASELINES = [PYTORCH_MLP, KERAS_IO, ARTICLE]  # the fast one first: the bars treat it apart
SLOW_BASELINES = [KERAS_IO, ARTICLE]


@dataclass(frozen=True)
class Settings:
    """Everything one measurement needs; the same for every model of a run."""

    budget_s: float = 600.0
    data: dict = field(default_factory=dict)        # overrides of params' data section
    evaluate: dict = field(default_factory=dict)    # overrides of params' evaluate section
    classifier: dict = field(default_factory=dict)  # overrides of params' classifier section
    classifier_path: str = ""
    threads: int = 0  # CPU threads per model (TensorFlow and torch); 0 = the frameworks' default
    probe_min_interval_s: float = 2.0
    probe_growth: float = 0.1
    seed: int = 0

    @classmethod
    def from_json(cls, path: str | Path) -> Settings:
        return cls(**json.loads(Path(path).read_text()))

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(dataclasses.asdict(self), indent=2))
