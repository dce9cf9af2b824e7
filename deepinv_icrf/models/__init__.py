from deepinv_icrf.models.icrf import ICRF  # noqa: F401
