"""Import-time fixes for optional libraries whose wheels do not match the installed torch.

torchvision's PyPI wheels are CUDA builds. Beside a CPU torch their compiled extension does not
load, and their meta registrations then fail at import with ``operator torchvision::nms does not
exist`` -- which also breaks ``import transformers`` and ``import timm`` (they import torchvision).
The models themselves are pure Python and work; only detection ops (nms, roi_align) need the
extension. :func:`import_torchvision` defines the two op schemas the registrations refer to and
imports again, so the models load; the detection ops stay unusable (they raise when called).
Call it before importing torchvision, transformers or timm, and before a user's task module.
"""
from __future__ import annotations

import importlib.util
import sys
import warnings
from typing import Any

#: the library fragment that holds the two schemas (kept alive: dropping it removes them)
_SCHEMAS: Any = None


def import_torchvision() -> Any | None:
    """Import torchvision, working around a CUDA wheel beside a CPU torch; None when it is not installed."""
    global _SCHEMAS
    if importlib.util.find_spec("torchvision") is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Failed to load image Python extension": not used here
        try:
            import torchvision

            return torchvision
        except RuntimeError as err:
            if "torchvision::nms" not in str(err):
                raise
        import torch

        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        if _SCHEMAS is None:
            _SCHEMAS = torch.library.Library("torchvision", "DEF")
            _SCHEMAS.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            _SCHEMAS.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
        import torchvision

        return torchvision
