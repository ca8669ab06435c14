"""Attention Atlas: the visual attention techniques of Hassanin et al. (2024), as a service."""

__version__ = "0.1.0"
