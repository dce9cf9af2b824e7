from deepinv_icrf.models.icrf import ICRF  # noqa: F401
from deepinv_icrf.models.splitting import EquivariantSplittingModel  # noqa: F401
from deepinv_icrf.models.stack_reconstructor import StackReconstructor  # noqa: F401
