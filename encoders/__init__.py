"""Pixels and waveforms -> feature sequences. Knows nothing of LLMs, prompts or UI."""

from encoders.errors import InputError

__all__ = ["InputError"]
