"""Prompt clean-up before tokenization, as the official umT5 text path does it."""

from __future__ import annotations

import html

import ftfy
import regex

# The official cleaner's engine: ``regex``'s ``\s`` differs from ``re``'s (on U+001C-U+001F, which
# ftfy happens to strip first), so using the same one keeps the equivalence self-evident.
_WHITESPACE = regex.compile(r"\s+")


def clean_prompt(text: str) -> str:
    """Repair mojibake, unescape HTML entities, and collapse every whitespace run to one space."""
    text = ftfy.fix_text(text)
    # Two passes, as the official cleaner does: doubly escaped text ("&amp;amp;") ends as "&".
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE.sub(" ", text).strip()
