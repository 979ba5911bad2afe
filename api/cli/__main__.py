"""``python -m api.cli``: the same as the ``sonicsort`` command."""

import sys

from . import main

if __name__ == "__main__":  # not when a spawned child (the demo's ingest) imports the main module
    sys.exit(main())
