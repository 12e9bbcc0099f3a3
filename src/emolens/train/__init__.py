"""Training code (needs the ``train`` extra: ``pip install emolens[train]``, i.e. torch).

Inference never imports this package: shipped models run on onnxruntime alone.
"""
