"""Nagios/Icinga check plugins for the posture of a mail domain."""

__version__ = "0.1.0"
