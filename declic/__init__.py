"""Déclic: triggered and transactional email through Amazon SES.

This package holds what ties the others together: settings, logging and the command line.
"""

__version__ = "0.1.0"
