"""Default values of the Population API shared by the trainer, the toy task and the engine."""

DEFAULT_PROMPT_TEMPLATE = "Question: {question}\nAnswer: "
"""How a dataset row's question becomes the model's prompt; the completion is the row's solution."""

DEFAULT_ANSWER_PATTERN = r"####\s*(.+)"
"""Regex whose first group extracts the final answer from a completion."""

DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
"""The attention projections; where a model fuses q, k and v (Phi-3's ``qkv_proj``) that one is adapted."""

ALL_LINEAR = "all-linear"
"""PEFT's shorthand for every Linear module except the output layer (``lm_head``)."""
