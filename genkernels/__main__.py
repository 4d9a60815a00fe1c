"""`python -m genkernels ...` runs the genkernels command line (see genkernels.cli)."""
import sys

from genkernels.cli import main

if __name__ == "__main__":
    sys.exit(main())
