"""IRPO training and evaluation of one genome: the entrypoint of every genome Job and local worker.

``nora train --genome URI`` (:mod:`nora.trainer.cli`) reads a genome.json and runs DESIGN section 5:

- :mod:`~nora.trainer.irpo_config`: the frozen, validated settings (:class:`IrpoConfig`, :class:`TrainerJob`);
- :mod:`~nora.trainer.data`: JSONL datasets from a path, ``file://`` or ``s3://``, with line-exact errors;
- :mod:`~nora.trainer.models`: base model, tokenizer, and the genome as a PEFT adapter on it;
- :mod:`~nora.trainer.irpo_trainer`: sampling, rewards, preference pairs and TRL DPO + NLL training;
- :mod:`~nora.trainer.evaluate`: greedy exact-match accuracy and the held-out IRPO loss;
- :mod:`~nora.trainer.pipeline`: the phases in order and the outputs (adapter, metrics, samples, pairs);
- :mod:`~nora.trainer.entrypoint`: the Job contract (one JSON line on success, one error line and the
  termination message on failure).

Importing this package imports nothing heavy; torch, transformers and TRL load with the submodules.
"""
