"""``python -m resnest_engine.cli`` = ``resnest-train``."""
import sys

from . import main

sys.exit(main())
