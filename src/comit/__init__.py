"""COMiT: communication-inspired image tokenization."""

__version__ = "0.1.0"
