"""broadcaster: streaming audio broadcast server for commune IP radio."""

__version__ = "0.1.0"
