"""BasicSR models of dupru-basicsr, registered in BasicSR's MODEL_REGISTRY on import."""
from dupru_basicsr.models import dupru_model  # noqa: F401
