"""medfm: build, adapt and audit radiology foundation models."""

__version__ = "0.1.0"
