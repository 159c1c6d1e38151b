"""The toy task and toy base model: a verifiable addition task and a tiny Llama pre-trained on it on CPU.

- ``nora.toy.data``: the dataset generator (standard library only).
- ``nora.toy.config``: frozen configs of the model build; ``nora.toy.cache``: its cache.
- ``nora.toy.model``: ``build_toy_model`` (cached; a cache hit never imports torch) and measurements.
- ``nora.toy.tokenizer``, ``nora.toy.pretrain``, ``nora.toy.evaluate``: the torch side.
- ``nora.toy.cli``: the ``nora toy`` command group.
"""
