"""The crop policies' names, in a module without torch, so that `comit --help` can list them without
importing it; the policies themselves are ``policies.py``."""

RASTER_SCAN, RANDOM, ADAPTIVE = "raster_scan", "random", "adaptive"
POLICY_NAMES = (RASTER_SCAN, RANDOM, ADAPTIVE)


def check_policy_name(order: str) -> str:
    """``order`` when it names a policy; a one-line error that lists the names otherwise."""
    if order not in POLICY_NAMES:
        raise ValueError(f"unknown crop order {order!r}: use one of {POLICY_NAMES}, a list of crop indices, "
                         "or one list per image")
    return order
