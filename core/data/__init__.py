"""Data: decoding any image file, the one pixel path to model input, dataset sources, splits, health, pipelines.

Owns everything between a user's files and a batch of pixels: ``images`` (decode safely), ``pixels``
(``to_model_pixels``, used by training and serving alike), ``sources`` (``load_dataset``: built-ins,
folders, zips), ``splits``, ``health`` (the report), ``checks`` (pre-training warnings) and ``pipeline``
(tf.data). May import ``core.errors``, ``core.config`` and ``core.store``; nothing else of ``core``.
"""
