"""``python -m adamlab`` — the same as the ``adamlab`` command."""

import sys

from adamlab.cli import main

sys.exit(main())
