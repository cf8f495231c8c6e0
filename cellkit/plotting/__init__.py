"""Plots that belong to a data stage (the scanpy-style ``cellkit.pl`` re-exports what it needs)."""

from .montage import cell_montage, montage_rgb

__all__ = ["cell_montage", "montage_rgb"]
