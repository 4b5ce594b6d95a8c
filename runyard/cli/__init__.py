"""The ``runyard`` command line."""
