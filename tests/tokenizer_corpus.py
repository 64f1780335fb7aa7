"""Deterministic tokenizer test corpus: >= 2000 strings covering what pre-tokenizers get wrong.

Every string is built from a fixed seed, so failures reproduce by index.
"""

from __future__ import annotations

import random
import unicodedata

WORDS = (
    "the quick brown fox jumps over lazy dog tokenizer merges vocabulary byte level encode decode "
    "model layer attention skip network python function return value error test string Hello World "
    "I You We They It THE Mixed CamelCase snake_case HTTPServer iPhone naïve café résumé"
).split()
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ll", "'x", "'"]
CODE = [
    "def f(x):\n    return x * 2\n",
    "for i in range(10):\n\tprint(i, end='')\n",
    "class A:\n    def __init__(self) -> None:\n        self.x = {'a': [1, 2, 3]}\n",
    "if (a != b && c >= d) { return -1; }",
    "import numpy as np\narr = np.zeros((3, 4), dtype=np.float32)\n",
    "x += 1  # comment\r\n",
    "    \n\n    pass\n",
    "lambda *args, **kw: None",
    's = f"{name!r:>10}"',
    "#include <vector>\nint main() { std::vector<int> v{1,2,3}; }\n",
]
UNICODE = [
    "café",
    "naïve",
    "Ångström",
    "e\u0301",
    "cafe\u0301",
    "n\u0303o",
    "Zürich",
    "straße",
    "ſ",
    "'ſ",
    "日本語のテキスト",
    "中文字符测试",
    "한국어 텍스트",
    "ひらがな カタカナ",
    "😀",
    "👍🏽",
    "👨\u200d👩\u200d👧\u200d👦",
    "🏳️\u200d🌈",
    "❤️",
    "🇫🇷🇩🇪",
    "مرحبا بالعالم",
    "שלום עולם",
    "नमस्ते दुनिया",
    "हिन्दी",
    "Привет мир",
    "Ελληνικά",
    "١٢٣ ٤٥٦",
    "१२३",
    "Ⅻ",
    "½ ¾",
    "²³",
    "ℕ ℤ",
    "ﬁ",
    "Ａｂｃ",
    "\u00a0nbsp",
    "a\u2003b",
    "x\u3000y",
    "\u2028",
    "\u0085",
    "\u200b",
    "\ufeffbom",
    "\u00ad",
    "🤖🤖🤖",
]
PUNCT = [
    "...",
    "!!!",
    "?!",
    "---",
    "***",
    "((",
    "))",
    "[]",
    "{}",
    "<>",
    "@#$%^&",
    "~`",
    "\\",
    "/",
    '"',
    "'",
]
SPACES = [
    " ",
    "  ",
    "   ",
    "\t",
    "\t\t",
    "\n",
    "\n\n",
    "\r\n",
    " \n ",
    "\n  \n",
    "\u000b",
    "\u000c",
    "  \t\n",
]
NUMBERS = [
    "0",
    "7",
    "42",
    "123",
    "1234",
    "12345678901234567890",
    "3.14159",
    "1,000,000",
    "-17",
    "0x1F",
    "1e-9",
]
CONTROL = ["\x00", "\x01", "\x07", "\x1b[0m", "\x1c", "\x1f", "\x7f", "\x1e\x1d"]


def _random_piece(rng: random.Random, special: list[str]) -> str:
    kind = rng.randrange(10)
    if kind == 0:
        return rng.choice(WORDS) + rng.choice(CONTRACTIONS)
    if kind == 1:
        return rng.choice(CODE)
    if kind == 2:
        return rng.choice(UNICODE)
    if kind == 3:
        return rng.choice(PUNCT)
    if kind == 4:
        return rng.choice(SPACES)
    if kind == 5:
        return rng.choice(NUMBERS)
    if kind == 6 and rng.random() < 0.3:
        return rng.choice(CONTROL)
    if kind == 7 and special and rng.random() < 0.3:
        return rng.choice(special)
    return rng.choice(WORDS)


def _joiner(rng: random.Random) -> str:
    return rng.choice([" ", " ", " ", "", "\n", "  ", "\t", ", ", ". "])


def build_corpus(
    special: list[str] | None = None, n_random: int = 1800, seed: int = 1234
) -> list[str]:
    """Fixed edge cases, every building block alone, then random mixtures of them."""
    special = special or []
    rng = random.Random(seed)
    out: list[str] = [
        "",
        " ",
        "a",
        " a",
        "a ",
        "  a  ",
        "Hello world",
        " Hello world",
        "Hello world ",
        "Hello  world",
        "Hello\tworld",
        "Hello\nworld",
        "\n\nHello",
        "Hello\n\n",
        "   \n",
        "I'm you're we've they'll he'd it's don't",
        "I'M YOU'RE WE'VE",
        "'s'",
        "''s",
        "'ll've",
        "a1b2c3",
        "abc123def",
        "1 2 3",
        " 123",
        "123 ",
        "12345",
        "x=1234567",
        "3.14e10",
        "....",
        "...a",
        "a...",
        "? ",
        " ?",
        " ? ",
        "!\n",
        "!\n\n",
        ".\r\n\r\n",
        "hi!\n\nthere",
        "word\n\n\n  next",
        "\t\tindented",
        "trailing   ",
        "mixed \t \n end",
    ]
    out += [
        w
        for group in (WORDS, CONTRACTIONS, CODE, UNICODE, PUNCT, SPACES, NUMBERS, CONTROL)
        for w in group
    ]
    out += [" " + w for w in WORDS[:20]] + [w + " " for w in UNICODE[:20]]
    out += [unicodedata.normalize(f, w) for f in ("NFC", "NFD") for w in UNICODE[:10]]
    out += special
    out += [f"{s}hello{s}" for s in special[:10]] + [f" {s} " for s in special[:10]]
    for _ in range(n_random):
        n = rng.randint(1, 12)
        parts = [_random_piece(rng, special) for _ in range(n)]
        s = parts[0]
        for p in parts[1:]:
            s += _joiner(rng) + p
        if rng.random() < 0.15:
            s = " " * rng.randint(1, 3) + s
        if rng.random() < 0.15:
            s = s + rng.choice([" ", "\n", "  ", "\t"])
        if rng.random() < 0.1:
            s = unicodedata.normalize("NFD", s)
        out.append(s)
    return out


def english_text(n_bytes: int, seed: int = 7) -> str:
    """Plain English-like prose (for SentencePiece training and the speed benchmark)."""
    rng = random.Random(seed)
    vocab = (
        WORDS + "a an of to in is was for on with as by at from this that be are not or".split() * 3
    )
    parts: list[str] = []
    size = 0
    while size < n_bytes:
        sent = " ".join(rng.choice(vocab) for _ in range(rng.randint(4, 16)))
        sent = (
            sent[0].upper()
            + sent[1:]
            + rng.choice([".", ".", "?", "!", ","])
            + rng.choice([" ", " ", "\n"])
        )
        parts.append(sent)
        size += len(sent)
    return "".join(parts)
