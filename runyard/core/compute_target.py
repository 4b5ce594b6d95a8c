"""``azureml.core.compute_target``: where Azure code imports ``ComputeTargetException``."""

from runyard.core.compute import ComputeTarget, ComputeTargetException

__all__ = ["ComputeTarget", "ComputeTargetException"]
