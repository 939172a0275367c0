"""One-click experiments as groups of ordinary runs: the overfitting demo, the overfitting lab and grid search.

Pure Python (no TensorFlow): configs in, runs queued on the ``TrainingManager``, numbers and sentences out.
May import ``core.config``, ``core.errors``, ``core.store`` and ``core.data.sources``.
"""
