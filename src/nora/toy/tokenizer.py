"""The toy model's character-level tokenizer, built with the ``tokenizers`` library.

Every character of the prompt template and the task's alphabet is one token; a BPE model without merges
splits text into characters, and the ``Fuse`` decoder joins them back without spaces. The tokenizer
prepends ``<s>`` like Llama's does (so ``tokenizer(prompt)`` is what the model was trained on) and knows
``</s>`` (end of a completion) and ``<pad>``. There is no chat template.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from tokenizers import Tokenizer, decoders, models, processors
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)


def toy_alphabet(texts: Iterable[str]) -> list[str]:
    """The sorted set of characters of ``texts`` plus all ASCII printable characters and a newline."""
    chars = {chr(c) for c in range(32, 127)} | {"\n"}
    for text in texts:
        chars.update(text)
    return sorted(chars)


def build_tokenizer(alphabet: Iterable[str], model_max_length: int) -> PreTrainedTokenizerFast:
    """A character-level tokenizer over ``alphabet`` with ids 0-3 for pad, bos, eos and unk."""
    vocab: dict[str, int] = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for char in alphabet:
        vocab.setdefault(char, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK, fuse_unk=False))
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, vocab[BOS])]
    )
    tokenizer: PreTrainedTokenizerFast = cast(Any, PreTrainedTokenizerFast)(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=model_max_length,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    return tokenizer
