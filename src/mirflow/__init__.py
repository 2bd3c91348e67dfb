"""mirflow: analyse music collections at dataset scale.

The library is organised as in the project's design: audio decoding and the shared per-track
:class:`~mirflow.core.audio.TrackContext`, analyzers registered by name, a planner that decides what is
due, executors that run analyzers over tracks, and sidecars that store results next to each track.
"""

__version__ = "0.1.0"
