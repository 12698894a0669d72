"""The step kernels behind adamlab's optimizers: the fused CPU kernel (C, built on first use) and its loader."""
