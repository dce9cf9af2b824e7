r"""Data: the embedded demo scene, synthetic stacks and (later) folders of bracketed photos."""

from __future__ import annotations

from deepinv_icrf.data.demo import demo_exposure_times, demo_scene  # noqa: F401
