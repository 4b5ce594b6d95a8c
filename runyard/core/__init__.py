"""The ``azureml.core`` names: swap ``from azureml.core import`` for ``runyard.core``."""

from runyard import __version__ as VERSION
from runyard.core.compute import ComputeTarget
from runyard.core.environment import Environment
from runyard.core.experiment import Experiment
from runyard.core.run import Run
from runyard.core.runconfig import RunConfiguration
from runyard.core.script_run_config import ScriptRunConfig
from runyard.core.workspace import Workspace

__all__ = [
    "VERSION",
    "ComputeTarget",
    "Environment",
    "Experiment",
    "Run",
    "RunConfiguration",
    "ScriptRunConfig",
    "Workspace",
]
