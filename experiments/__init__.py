"""convlab's front door: ``python -m experiments <command>``."""
import os

# CPU runs here are often several processes on few cores (data-loader workers, DDP ranks, search
# and table slots). With OpenMP's default busy-waiting their threads spin against each other and a
# training step gets tens of times slower; passive waiting keeps contention graceful. It must be
# set before torch loads its OpenMP runtime; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
