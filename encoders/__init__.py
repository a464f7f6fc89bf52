"""Pixels and waveforms -> feature sequences, class labels, transcripts, hands and faces (and text -> speech
with espeak-ng). Knows nothing of LLMs, prompts or UI."""

from encoders.errors import InputError

__all__ = ["InputError"]
