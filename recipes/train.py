#!/usr/bin/env python
"""Recipe runner script; the same as the ``resnest-train`` console command."""
import sys

from resnest_engine.cli import main

if __name__ == "__main__":
    sys.exit(main())
