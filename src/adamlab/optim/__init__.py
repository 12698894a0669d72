"""adamlab's torch optimizers."""

from adamlab.optim.adam import Adam, AdamW
from adamlab.optim.adamax import AdaMax

__all__ = ["AdaMax", "Adam", "AdamW"]
