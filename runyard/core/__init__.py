"""The ``azureml.core`` names: swap ``from azureml.core import`` for ``runyard.core``."""

from runyard.core.environment import Environment
from runyard.core.experiment import Experiment
from runyard.core.run import Run
from runyard.core.script_run_config import ScriptRunConfig
from runyard.core.workspace import Workspace

__all__ = ["Environment", "Experiment", "Run", "ScriptRunConfig", "Workspace"]
