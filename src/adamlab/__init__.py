"""adamlab: Adam (Kingma & Ba, ICLR 2015) and its variants for PyTorch and NumPy."""

__version__ = "0.1.0"
