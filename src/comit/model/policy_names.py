"""The crop policies' names, in a module without torch, so that `comit --help` can list them without
importing it; the policies themselves are ``policies.py``."""

RASTER_SCAN, RANDOM, ADAPTIVE = "raster_scan", "random", "adaptive"
POLICY_NAMES = (RASTER_SCAN, RANDOM, ADAPTIVE)
