"""Serving: using a trained model - the Predictor, people's photos, live video, exports and imported models.

May import ``core.data`` (the pixel path), ``core.models``, ``core.explain`` (Grad-CAM), ``core.training``
(a run's checkpointed weights), ``core.store``, ``core.config`` and ``core.errors``.
"""
