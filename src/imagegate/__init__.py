"""imagegate: one OpenAI-compatible API for image generation and editing across providers."""

__version__ = "0.1.0"
