"""Compression: quantize, prune, distill, export to ONNX; each method returns a ``Child``.

Every method reads a loaded parent (a ``Predictor``) and returns the child's module, recipe and
what it did; ``api.compression`` measures parent beside child and stores the child as a new
version whose lineage names the parent.
"""

from tensorsmith.compression.child import Child

__all__ = ["Child"]
