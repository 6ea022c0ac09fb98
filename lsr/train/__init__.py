"""Training sparse encoders: `lsr.train.train(config)` (a TOML path or a dict) → output folder.

Modules: `config` (TOML schema), `data` (examples, hard negatives, batches), `losses`,
`regularizers`, `models` (siamese SPLADE, inference-free and asymmetric, through the fused head), `trainer`;
`teachers` (bm25 / model-folder / dense teachers, teacher score files) and `distill`
(ensemble normalisation, the multi-teacher DiSCo loss).
`import lsr.train` does not import torch.
"""

from lsr.train.config import load_config
from lsr.train.trainer import Trainer, train

__all__ = ["Trainer", "load_config", "train"]
