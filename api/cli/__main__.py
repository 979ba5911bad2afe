"""``python -m api.cli``: the same as the ``sonicsort`` command."""

import sys

from . import main

sys.exit(main())
