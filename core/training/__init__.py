"""Training: the run manager (no TensorFlow at import), a run's job, its Keras callbacks, checkpoints and resume.

Also the feature cache and head-only training for frozen backbones, the memory estimate, the verdicts on a
run's curves, the reproducibility card and one-click experiments (``experiments``: lab, grid, demo). May import
``core.data``, ``core.models``, ``core.explain`` (scores), ``core.store``, ``core.config``, ``core.errors``.
"""
