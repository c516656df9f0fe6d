"""The methods CSE is compared with (issue 8): CSRA, SEDC, LIME and box censoring. Each takes the
same inputs as CSE (a ``predict`` callable, the image, the source class, an obfuscator, and where
it uses them a classifier, attribution or segments) and returns the same
:class:`~safeview.counterfactual.Counterfactual`, so one scoring code scores every method.
"""

from .boxes import box_censor, boxes_mask, component_boxes
from .csra import csra, csra_cost
from .lime import lime_counterfactual
from .sedc import sedc
from ._common import quickshift_segments

__all__ = [
    "box_censor",
    "boxes_mask",
    "component_boxes",
    "csra",
    "csra_cost",
    "lime_counterfactual",
    "quickshift_segments",
    "sedc",
]
