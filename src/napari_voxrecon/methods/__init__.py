"""Built-in tasks and methods; importing this package registers them."""

from . import tasks  # noqa: F401  (defines the four tasks)
from . import sparse_baselines, projection_baselines, restore_baselines  # noqa: F401
