"""Time a few epochs of one Figure 1 run, in one process or data-parallel under torchrun.

    python scripts/time_data_parallel.py OUT_DIR PANEL               # PANEL: 0 = MNIST, 1 = bag of words
    torchrun --standalone --nproc-per-node 2 scripts/time_data_parallel.py OUT_DIR PANEL

The first learning rate of the quick grid, the first optimiser (Adam), 3 epochs; data from $ADAMLAB_DATA.
"""

import dataclasses
import sys
import time

from adamlab.lab import parallel
from adamlab.lab.experiments.fig1 import build_spec
from adamlab.lab.runner import run_spec

spec = build_spec(quick=True, seed=0)
panel = spec.panels[int(sys.argv[2])]
opt = dataclasses.replace(panel.optimizers[0], grid={"lr": (panel.optimizers[0].grid["lr"][0],)})
panel = dataclasses.replace(panel, optimizers=(opt,), epochs=3)
spec = dataclasses.replace(spec, panels=(panel,), claims=())
created = parallel.init_from_env()
start = time.perf_counter()
run_spec(spec, sys.argv[1], progress=False)
if parallel.is_writer():
    print(f"{panel.name}: {parallel.world_size()} rank(s): {time.perf_counter() - start:.1f} s")
if created:
    import torch.distributed as dist

    dist.destroy_process_group()
