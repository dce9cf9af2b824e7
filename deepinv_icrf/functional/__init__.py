r"""Pure tensor functions: every formula of the package, written once.

No state, no I/O, device and dtype agnostic. The ``nn.Module`` and ``deepinv.loss.Loss``
classes of :mod:`deepinv_icrf.models`, :mod:`deepinv_icrf.physics` and :mod:`deepinv_icrf.loss`
hold configuration and call these.
"""

from __future__ import annotations

from deepinv_icrf.functional.align import (  # noqa: F401
    auto_quantile,
    median_threshold_bitmap,
    mtb_shift,
    shift_image,
)
from deepinv_icrf.functional.codefit import (  # noqa: F401
    CodeFitResult,
    censored_code_nll,
    code_inlier_mask,
    estimate_code_noise,
    fit_code_domain,
    stratified_pixel_sample,
)
from deepinv_icrf.functional.histogram import (  # noqa: F401
    ContinuousInputError,
    LinearityHistogram,
    build_linearity_histogram,
    detect_bit_depth,
    linearity_from_histogram,
)
from deepinv_icrf.functional.interp import (
    code_values,
    curve_slope,
    interp_curve,
    invert_curve,
    lookup_codes,
)  # noqa: F401
from deepinv_icrf.functional.linearity import (  # noqa: F401
    aggregate_pairs,
    exposure_pairs,
    gaussian_value_weights,
    linearity_residual,  # noqa: F401
    pair_value_weights,
    pixelwise_linearity,
    propagate_std,
    radiometric_linearity,
    valid_pixel_mask,
    weighted_spatial_mean,
    weighted_spatial_mean_std,
)
from deepinv_icrf.functional.merge import (
    consistent_exposures,
    merge_weights,
    stack_prediction_error,
    weighted_radiance_merge,
    weighted_radiance_merge_codes,
    weighted_radiance_merge_std,
)  # noqa: F401
from deepinv_icrf.functional.metrics import curve_jump, curve_rmse  # noqa: F401
from deepinv_icrf.functional.penalties import (  # noqa: F401
    endpoint_penalty,
    monotonicity_penalty,
    range_penalty,
    smoothness_penalty,
)
from deepinv_icrf.functional.propel import (  # noqa: F401
    mixture_mean,
    mixture_std,
    propel_log_overlap,
    propel_log_self_overlap,
    propel_log_t1,
    propel_log_t2,
    propel_loss,
    propel_loss_pixelwise,
    split_mixture,
    std_from_raw,
)
from deepinv_icrf.functional.response import (  # noqa: F401
    exp_crf,
    exp_icrf,
    filmic_crf,
    filmic_icrf,
    gamma_crf,
    gamma_icrf,
    log_crf,
    log_icrf,
    quantize_to_bit_depth,
    srgb_crf,
    srgb_icrf,
)
from deepinv_icrf.functional.schedules import (  # noqa: F401
    constant_weight,
    cosine_weight,
    linear_ramp_weight,
    step_weight,
)
from deepinv_icrf.functional.times import (  # noqa: F401
    HALF_STOP,
    TimeCheck,
    check_exposure_ratios,
    common_exponent,
    consecutive_log_ratios,
    exponent_from_prior,
    pairwise_log_ratios,
)
from deepinv_icrf.functional.tonemap import (
    TONEMAP_METHODS,
    tonemap_radiance,
)  # noqa: F401
from deepinv_icrf.functional.uncertainty import (  # noqa: F401
    band_coverage,
    bootstrap_band,
    jackknife_std,
    residual_code_std,
)
