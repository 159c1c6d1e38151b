"""The one place where prompts and completions become token ids, for sampling, training and evaluation.

A prompt is tokenized on its own (:func:`encode_prompt`): through the tokenizer's chat template as one user
turn with the generation prompt when it has one, else as plain text with the tokenizer's special tokens.
Sampling generates from exactly these ids. A completion is tokenized on its own and appended to them
(:func:`encode_completion`), never re-tokenized together with the prompt: with a BPE tokenizer,
``"Answer: " + "42"`` tokenized as one text merges the space into ``" 42"``, so the prompt's ids would not be
a prefix and training would see a context the model never samples from. Plain completions end with the
tokenizer's EOS id; chat completions end with whatever the chat template renders after the answer (its
end-of-turn marker). Training (:func:`preference_rows`, fed to TRL as ready token ids) and the held-out
evaluation (``nora.trainer.evaluate``) both use :func:`encode_pair`, so all three phases cut every
sequence at the same token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from transformers import PreTrainedTokenizerBase


class PromptCompletion(Protocol):
    """Anything with a prompt and a chosen and a rejected completion (a preference pair)."""

    @property
    def prompt(self) -> str: ...

    @property
    def chosen(self) -> str: ...

    @property
    def rejected(self) -> str: ...


def uses_chat_template(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether prompts go through the tokenizer's chat template (as a single user turn)."""
    return bool(getattr(tokenizer, "chat_template", None))


def _ids(encoded: Any) -> list[int]:
    return [int(i) for i in encoded["input_ids"]]


def _render(tokenizer: PreTrainedTokenizerBase, prompt: str, completion: str | None) -> str:
    messages = [{"role": "user", "content": prompt}]
    if completion is not None:
        messages.append({"role": "assistant", "content": completion})
    rendered: Any = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=completion is None
    )
    return str(rendered)


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """The prompt's token ids, the context every phase puts before a completion."""
    if uses_chat_template(tokenizer):
        encoded: Any = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=True, add_generation_prompt=True, return_dict=True
        )
        return _ids(encoded)
    return _ids(tokenizer(text=prompt))


def encode_completion(tokenizer: PreTrainedTokenizerBase, prompt: str, completion: str) -> list[int]:
    """The completion's token ids as they follow :func:`encode_prompt` (``prompt``), end marker included.

    With a chat template, the completion is the text the template renders after the prompt's rendering
    (the answer and the end of the assistant turn); when a template renders the prompt differently once an
    answer follows, the answer text alone plus EOS is used. Without one, it is the answer text plus EOS.
    """
    eos = [int(tokenizer.eos_token_id)]
    if uses_chat_template(tokenizer):
        before, after = _render(tokenizer, prompt, None), _render(tokenizer, prompt, completion)
        if after.startswith(before):
            return _ids(tokenizer(text=after[len(before) :], add_special_tokens=False))
    return _ids(tokenizer(text=completion, add_special_tokens=False)) + eos


def encode_pair(
    tokenizer: PreTrainedTokenizerBase, pair: PromptCompletion
) -> tuple[list[int], list[int], list[int]]:
    """``(prompt, chosen, rejected)`` token ids of a preference pair."""
    return (
        encode_prompt(tokenizer, pair.prompt),
        encode_completion(tokenizer, pair.prompt, pair.chosen),
        encode_completion(tokenizer, pair.prompt, pair.rejected),
    )


def preference_rows(
    tokenizer: PreTrainedTokenizerBase, pairs: Sequence[PromptCompletion]
) -> list[dict[str, list[int]]]:
    """TRL's tokenized preference rows ``{"prompt_ids", "chosen_ids", "rejected_ids"}``, one per pair."""
    rows = []
    for pair in pairs:
        prompt, chosen, rejected = encode_pair(tokenizer, pair)
        rows.append({"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected})
    return rows
