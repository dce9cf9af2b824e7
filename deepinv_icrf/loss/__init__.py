r"""deepinv losses for ICRF fitting and self-supervised training."""

from __future__ import annotations

from deepinv_icrf.loss._utils import find_icrf  # noqa: F401
from deepinv_icrf.loss.codefit import CodeDomainLoss  # noqa: F401
from deepinv_icrf.loss.curve import (  # noqa: F401
    EndpointLoss,
    MonotonicityLoss,
    RangeLoss,
    SmoothnessLoss,
)
from deepinv_icrf.loss.linearity import RadiometricLinearityLoss  # noqa: F401
from deepinv_icrf.loss.propel import PROPELLoss  # noqa: F401
from deepinv_icrf.loss.scheduler import (  # noqa: F401
    ConstantWeight,
    CosineWeight,
    LinearRampWeight,
    StepWeight,
    WeightedLossScheduler,
    WeightSchedule,
)
from deepinv_icrf.loss.splitting import EquivariantSplittingLoss  # noqa: F401
from deepinv_icrf.loss.stack_splitting import (  # noqa: F401
    LinearizedStackLoss,
    StackPredictionLoss,
)
