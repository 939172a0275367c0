"""Models: the architecture registry and builders, the layer blocks the drawing shows, and TensorFlow's shared state.

Owns ``registry`` (``build_model``, layer tables), ``scratch`` and ``transfer`` builders, ``architecture``
(blocks), ``strategy`` (devices) and ``runtime``: the one lock for building, loading and clearing models and
the one cache of what is compiled for a model. May import ``core.errors`` and ``core.config``.
"""
