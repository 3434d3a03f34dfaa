"""`python -m mnist_vae ...`: the command line (see cli.py)."""

import sys

from mnist_vae.cli import main

sys.exit(main())
