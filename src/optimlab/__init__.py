"""optimlab: build, instrument, tune and compare optimizers in PyTorch."""

__version__ = "0.1.0"
