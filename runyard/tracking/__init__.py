"""The tracking context: what a script logs, and the channels that carry it to Runyard.

Standard library only (and Python 3.9 syntax): this package is imported inside run
processes and containers where nothing has been installed.
"""
