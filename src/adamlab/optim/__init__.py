"""adamlab's torch optimizers."""

from adamlab.optim.adam import Adam, AdamW
from adamlab.optim.adamax import AdaMax
from adamlab.optim.quantised import dequantised_state_dict

__all__ = ["AdaMax", "Adam", "AdamW", "dequantised_state_dict"]
