"""Per-sample model outputs: what every analysis consumes (defined in ``beyond_inet.contracts``)."""
from beyond_inet.contracts import Outputs  # noqa: F401
