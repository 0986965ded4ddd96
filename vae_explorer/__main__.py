"""`python -m vae_explorer ...`: see cli.py."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
