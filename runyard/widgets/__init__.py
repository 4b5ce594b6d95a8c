"""``azureml.widgets``' name for Runyard: ``RunDetails(run).show()`` in a notebook."""

from runyard.widgets.run_details import RunDetails

__all__ = ["RunDetails"]
