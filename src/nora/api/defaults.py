"""Default values of the Population API shared by the trainer, the toy task and the engine."""

DEFAULT_PROMPT_TEMPLATE = "Question: {question}\nAnswer: "
"""How a dataset row's question becomes the model's prompt; the completion is the row's solution."""

DEFAULT_ANSWER_PATTERN = r"####\s*(.+)"
"""Regex whose first group extracts the final answer from a completion."""
