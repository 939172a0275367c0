"""Plots: Plotly figure builders only - pure functions from plain data to ``go.Figure``, no numbers computed here.

``style`` holds the shared look and teacher mode. May import ``plotly``, ``core.explain`` (for the numbers a
figure draws) and the plain data types of ``core.models.architecture`` and ``core.training.verdicts``.
"""
