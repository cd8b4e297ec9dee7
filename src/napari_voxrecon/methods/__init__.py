"""Built-in tasks and methods; importing this package registers them (torch stays unimported
until a learned method actually runs)."""

from . import tasks  # noqa: F401  (defines the tasks)
from . import sparse_baselines, projection_baselines, restore_baselines  # noqa: F401
from . import sparse_models, inr_methods, projection_models, restore_models, diffraction_methods  # noqa: F401
