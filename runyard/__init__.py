"""Runyard: a self-hosted queue service for ML training runs on named compute clusters.

The client SDK mirrors ``azureml.core``: ``from runyard.core import Workspace, Experiment``.
"""

__version__ = "0.1.0"
