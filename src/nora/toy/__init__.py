"""The toy task and toy base model: a verifiable addition task and a tiny Llama pre-trained on it on CPU.

``nora.toy.data`` generates the dataset (standard library only), ``nora.toy.model`` builds, caches and
evaluates the model, and ``nora.toy.cli`` is the ``nora toy`` command group.
"""
