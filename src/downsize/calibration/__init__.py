"""The guarantee: a confidence threshold λ by Learn-then-Test, and the tests it rests on.

:class:`ThresholdCalibrator` (``_threshold``) picks λ; ``_bounds`` holds the p-values (exact
binomial for 0/1 losses; Hoeffding–Bentkus and Waudby-Smith–Ramdas betting for any loss in [0, 1])
and the intervals (``clopper_pearson``, ``min_calibration_size``).
"""

from ._bounds import clopper_pearson, min_calibration_size
from ._threshold import ThresholdCalibrator

__all__ = ["ThresholdCalibrator", "clopper_pearson", "min_calibration_size"]
