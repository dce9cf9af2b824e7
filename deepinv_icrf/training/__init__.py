r"""Training: the one-call ICRF fit and deepinv.Trainer helpers."""

from __future__ import annotations

from deepinv_icrf.training.bands import icrf_confidence_band  # noqa: F401
from deepinv_icrf.training.distributed import fit_icrf_distributed  # noqa: F401
from deepinv_icrf.training.fit import as_stack_tensor, fit_icrf  # noqa: F401
from deepinv_icrf.training.logging import (
    TermLoggingTrainer,
    term_log_keys,
)  # noqa: F401
from deepinv_icrf.training.refine import describe_refinement, fit_refined  # noqa: F401
from deepinv_icrf.training.trainer import ICRFTrainer, icrf_objective  # noqa: F401
