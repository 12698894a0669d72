import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(autouse=True)
def _deterministic_seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True, scope="session")
def _step_bridge_built():
    """Build the fused kernel's C++ step bridge before any test (about 20 s, once per machine; scripts/setup.sh
    has usually done it), so that every test takes the same per-step checks; tests/test_kernels_bridge.py
    runs the Python checks too."""
    from adamlab.kernels import build

    if build.available():
        build.bridge(wait=True)
    yield
