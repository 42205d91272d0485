"""Runnable example reactors shipped with reactorpy.

Owns: `seed`, the port of the "Building Async Workflows" tutorial (``python -m reactorpy demo``).
Must not import: the engine's private modules; examples use only the public ``reactorpy`` API.
"""
