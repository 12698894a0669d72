"""Folded into ``adamlab bench step`` (issue 16's quantised-state rows; docs/performance.md). This runs just those
rows and their yardsticks on the flat and transformer layouts; further options go to ``adamlab bench step``."""

import sys

from adamlab import bench

STATE_ROWS = [bench.ROOFLINE, bench.ROOFLINE_TENSORS, "adamlab Adam", *bench.STATE_CONTENDERS, bench.STATE_OPTIMIZER]
ARGS = ["--layouts", "flat", "transformer", "--contenders", *STATE_ROWS, *bench.EIGHT_BIT]
if __name__ == "__main__":
    sys.exit(bench.main([*ARGS, *sys.argv[1:]]))
