"""``torchrun --nproc_per_node N -m comit.train [CONFIG] [--out DIR] [--resume] [key=value ...]``."""

import sys

from ..cli import app

if __name__ == "__main__":
    app(["train", *sys.argv[1:]], prog_name="python -m comit.train")
