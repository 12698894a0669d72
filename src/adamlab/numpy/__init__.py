"""Adam and AdaMax over NumPy arrays, written literally from the paper (the oracle of every other path).

Pure functions of ``(θ, g, state)``: nothing is modified in place, so a state can be kept, compared and
replayed. The arithmetic is done in the dtype of θ (float32 or float64).

:mod:`adamlab.numpy.quantised` is the oracle of quantised optimizer state (``state_precision="bf16"``/``"int8"``):
the formats and one step, literally in float32, which the torch path and the fused kernel equal bit for bit.

>>> import numpy as np
>>> from adamlab.numpy import Adam
>>> opt = Adam(lr=0.1)
>>> theta = np.array([1.0, -2.0]); state = opt.init(theta)
>>> for _ in range(200):
...     theta, state = opt.step(theta, 2 * theta, state)   # f(θ) = ‖θ‖²
>>> bool(np.all(np.abs(theta) < 0.1))
True
"""

from adamlab.numpy.adam import Adam, AdaMax, AdaMaxState, AdamState

__all__ = ["AdaMax", "AdaMaxState", "Adam", "AdamState"]
