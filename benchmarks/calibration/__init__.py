"""Calibration of the Hopper speed model on published H100 measurements (issue 22, item 5); not part of the package."""
