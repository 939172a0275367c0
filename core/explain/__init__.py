"""Explain: the numbers that judge a model and show why it answered - metrics, confusion, comparison, Grad-CAM.

Numbers only (figures are ``core.plots``'). This is also where per-layer views belong. May import
``core.data``, ``core.models``, ``core.store``, ``core.config`` and ``core.errors``; never ``core.training``.
"""
