"""Speech for training data: offline synthesizers, an acoustic augmentation chain, and concatenation.

The pipeline a data driver runs per utterance: text -> (optional) :func:`~miner.voices.concat.plan_groups` of
consecutive sentences -> ``get_synthesizer(name).speak(text, voice, rate=, pitch=)`` (16 kHz mono float32)
-> :func:`~miner.voices.augment.augment` (seeded; returns the audio and a record for the manifest) ->
a clip plus a manifest row with ``synth``, ``voice``, ``augment`` (:mod:`miner.voices.manifest`).

Modules: ``base`` (the interface, errors), ``dsp`` (resampling, WSOLA time stretch, pitch shift), ``espeak``,
``pico``, ``festival``, ``piper`` (one engine each), ``registry`` (by name), ``augment``, ``concat``,
``manifest``. Nothing heavy is imported or loaded until a synthesizer first speaks.
"""

from __future__ import annotations

from miner.voices.base import Availability, SynthesisError, Synthesizer
from miner.voices.registry import SYNTHESIZER_NAMES, all_synthesizers, available_synthesizers, get_synthesizer

__all__ = [
    "SYNTHESIZER_NAMES",
    "Availability",
    "SynthesisError",
    "Synthesizer",
    "all_synthesizers",
    "available_synthesizers",
    "get_synthesizer",
]
