"""The teaching tools: ``trace`` (one backprop step of a small dense or conv network, every
number shown) with its NET.json format (``net_file``) and text (``trace_format``), and
``gradcheck`` (hand-written gradients against finite differences) with the overfit check.

The package names its modules only (``handprop.teach.trace`` is the module, not the
function); ``handprop.trace`` and ``handprop.gradcheck`` are the documented imports of the
functions.
"""
