"""adamlab: Adam (Kingma & Ba, ICLR 2015) and its variants for PyTorch and NumPy.

``adamlab.Adam``, ``adamlab.AdamW`` and ``adamlab.AdaMax`` are torch.optim optimizers; ``adamlab.functional``
their update over lists of tensors (reference, foreach and fused implementations behind one signature);
``adamlab.hyperparameters`` the options of each algorithm, checked once; ``adamlab.numpy`` the same algorithms
over NumPy arrays; ``adamlab.formulas`` the paper's scalar formulas.
"""

from adamlab.optim import Adam, AdaMax, AdamW

__version__ = "0.1.0"
__all__ = ["AdaMax", "Adam", "AdamW", "__version__"]
