"""dupru-basicsr: DUPru / UPru / IMP pruning for BasicSR super-resolution networks.

Importing the package applies the BasicSR compatibility shims (see `dupru_basicsr.plugin.shims`: fixes of what
crashes on current stacks, nothing that changes what other BasicSR models save or load) and, when BasicSR is
installed, registers `DUPruModel` in BasicSR's MODEL_REGISTRY. The pruning core (`dupru_basicsr.pruning`) is pure
PyTorch and does not need BasicSR.
"""
import importlib.util

from dupru_basicsr.plugin import shims

__version__ = '0.1.0'

shims.apply()

if importlib.util.find_spec('basicsr') is not None:
    from dupru_basicsr.plugin import model  # noqa: F401,E402  (registers DUPruModel)
    shims.patch_cpu_resume()
