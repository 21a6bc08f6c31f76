"""What one request may ask for: prompt size in tokens, checked before any model loads.

A prompt costs what it is in tokens, not characters (4,000 emoji are ~12,000 tokens). The cap is the
smaller of the model's context minus the reply's new tokens and a product limit, :data:`PROMPT_TOKENS`
(2,048: six times the longest article of the summary task, 348 tokens with its template, and a prompt
pass of a few seconds on a 2-core CPU). Text longer than :data:`PROMPT_CHARS` is refused before it is
even tokenised, so a huge paste costs nothing; the app's server also refuses request bodies over
:data:`BODY_BYTES`.
"""

from __future__ import annotations

from functools import lru_cache

PROMPT_TOKENS = 2048  # the product's cap on a prompt (template included), whatever the model's context
PROMPT_CHARS = 32_000  # refused before tokenising (2,048 tokens of ordinary text are ~9,000 characters)
BODY_BYTES = 1 << 20  # the app's HTTP request bodies (a 32,000-character prompt is < 200 kB as JSON)


@lru_cache(maxsize=8)
def context_length(base: str) -> int:
    """The base model's context window in tokens, from its config (no weights read)."""
    from transformers import AutoConfig

    from .models import readable, resolve_base

    source = resolve_base(base)
    with readable(base, source):
        config = AutoConfig.from_pretrained(source)
    return int(getattr(config, "max_position_embeddings", None) or PROMPT_TOKENS * 4)


def prompt_token_limit(base: str, max_new_tokens: int) -> int:
    return max(1, min(PROMPT_TOKENS, context_length(base) - max_new_tokens))


def check_prompt(tokenizer, task, prompt: str, *, base: str, max_new_tokens: int) -> int:
    """The prompt's length in tokens as the model reads it (the task's template and chat format included);
    ValueError naming the length, the limit and the fix when it is over the limit."""
    if len(prompt) > PROMPT_CHARS:
        raise ValueError(
            f"the prompt is {len(prompt):,} characters; the limit is {PROMPT_CHARS:,} characters ({PROMPT_TOKENS:,} "
            "tokens); "
            f"fix: shorten it (for the summary task, paste the article's first part)"
        )
    text = tokenizer.apply_chat_template(task.messages(prompt), tokenize=False, add_generation_prompt=True)
    n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    limit = prompt_token_limit(base, max_new_tokens)
    if n > limit:
        raise ValueError(
            f"the prompt is {n:,} tokens with the task's template; the limit is {limit:,} tokens "
            f"(the smaller of {PROMPT_TOKENS:,} and the model's context of {context_length(base):,} minus "
            f"{max_new_tokens} new tokens); "
            f"fix: shorten it"
        )
    return n
