"""Fictional names: people, towns, countries, rivers, organisations, inventions and web domains.

Names are coined from syllables so that no fact of the tiny world can be confused with a fact about
the real world (a model that answers "Velmora" was taught by our crawl, not by its tokenizer's
training data). Every coined piece is checked against a short list of substrings that URL and
bad-word filters react to (FineWeb's URL filter matches banned sub-words anywhere in the
normalised URL), so that a good page is never dropped because of an unlucky syllable.
"""

from __future__ import annotations

import random
import re

# Substrings that URL filters match anywhere in a normalised URL (datatrove's banned_subwords, after
# FineWeb) or as words (banned_words, UT1's adult expression), and that syllable soup can produce.
_AVOID = (
    "porn",
    "sex",
    "xxx",
    "cum",
    "anal",
    "nude",
    "cock",
    "clit",
    "scat",
    "spic",
    "smut",
    "poon",
    "paki",
    "kike",
    "milf",
    "orgy",
    "jizz",
    "grope",
    "guro",
    "shota",
    "skeet",
    "slut",
    "rape",
    "raep",
    "quim",
    "spunk",
    "nsfw",
    "hentai",
    "dildo",
    "boner",
    "busty",
    "fag",
    "cunt",
    "dick",
    "tit",
    "gay",
    "nig",
    "fuck",
    "shit",
    "piss",
    "lust",
    "babe",
    "boob",
    "puss",
    "lesb",
    "escort",
    "wank",
    "twat",
    "bitch",
    "spank",
    "kink",
    "nazi",
    "bbw",
    "coon",
    "dyke",
    "whore",
    "fetish",
    "nipple",
    "bdsm",
    "juggs",
    "pubes",
    "ecchi",
    "swinger",
)
_AVOID_RE = re.compile("|".join(_AVOID))
_NORMALIZE = re.compile(r"[^a-z0-9]+")


def is_clean(text: str) -> bool:
    """True when the normalised text holds none of the substrings filters react to."""
    return _AVOID_RE.search(_NORMALIZE.sub("", text.lower())) is None


FIRST_START = (
    "A",
    "E",
    "I",
    "O",
    "Ba",
    "Be",
    "Bri",
    "Ca",
    "Co",
    "Da",
    "De",
    "Ela",
    "Fa",
    "Fe",
    "Ga",
    "Ha",
    "Ilo",
    "Ja",
    "Ka",
    "Ke",
    "La",
    "Le",
    "Li",
    "Ma",
    "Mi",
    "Na",
    "No",
    "Pa",
    "Re",
    "Ro",
    "Sa",
    "Se",
    "Ta",
    "Te",
    "Va",
    "Ve",
    "Wi",
    "Ya",
    "Za",
    "Ori",
    "Una",
    "Tho",
    "Ser",
    "Qui",
)
FIRST_MIDDLE = ("", "", "", "la", "li", "ri", "ra", "ne", "do", "mi", "ve", "lo", "re", "be")
FIRST_END = {
    "he": (
        "ric",
        "mon",
        "der",
        "vin",
        "las",
        "tor",
        "ron",
        "bert",
        "rian",
        "mir",
        "tan",
        "vo",
        "rus",
        "dan",
        "lek",
    ),
    "she": ("na", "ra", "lia", "ssa", "wen", "ly", "ria", "ne", "dra", "ya", "sine", "lle", "mira", "vie"),
}
SURNAME_START = (
    "Ash",
    "Bel",
    "Cor",
    "Dal",
    "Ever",
    "Fen",
    "Gal",
    "Hal",
    "Ives",
    "Kes",
    "Lan",
    "Mar",
    "Nor",
    "Or",
    "Pen",
    "Quill",
    "Rav",
    "Sel",
    "Tal",
    "Ul",
    "Vane",
    "Wes",
    "Yar",
    "Zel",
    "Brin",
    "Crow",
    "Dun",
    "Ers",
    "Grim",
    "Hollo",
    "Lom",
    "Marr",
    "Ost",
    "Prell",
    "Rook",
    "Strom",
    "Thorn",
    "Vey",
    "Wald",
    "Aud",
)
SURNAME_END = (
    "ford",
    "wick",
    "by",
    "ton",
    "mere",
    "vale",
    "dane",
    "holt",
    "well",
    "stone",
    "more",
    "ley",
    "den",
    "croft",
    "ridge",
    "lan",
    "ver",
    "ski",
    "ovic",
    "ard",
    "ett",
    "ing",
    "ling",
    "wright",
    "sey",
)
PLACE_START = (
    "Vel",
    "Ost",
    "Kar",
    "Brae",
    "Mor",
    "Tal",
    "Esk",
    "Lun",
    "Dor",
    "Ral",
    "Quen",
    "Sar",
    "Thal",
    "Ves",
    "Wyn",
    "Ald",
    "Cal",
    "Fen",
    "Gor",
    "Hav",
    "Ist",
    "Jor",
    "Kel",
    "Nar",
    "Pell",
    "Riv",
    "Sil",
    "Tor",
    "Ulm",
    "Yor",
    "Aber",
    "Bran",
    "Cray",
    "Dunn",
    "Elm",
    "Frey",
    "Glen",
    "Hest",
    "Lind",
    "Marl",
)
PLACE_END = (
    "mora",
    "brook",
    "haven",
    "ford",
    "stad",
    "ria",
    "wick",
    "gard",
    "holm",
    "mouth",
    "dale",
    "burg",
    "port",
    "lyn",
    "ora",
    "ene",
    "ast",
    "heim",
    "bury",
    "ton",
    "vik",
    "fell",
    "mark",
    "ridge",
)
COIN_ONSET = (
    "b",
    "br",
    "d",
    "dr",
    "f",
    "g",
    "h",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "st",
    "t",
    "tr",
    "v",
    "th",
    "",
)
COIN_VOWEL = ("a", "e", "i", "o", "u", "a", "e", "o", "ae", "ou")
COIN_CODA = ("", "", "", "", "n", "r", "l", "s", "th", "m")


class NameMaker:
    """Draws unique names from one seeded RNG; the same seed gives the same names in the same order."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def _unique(self, make, clean: bool = True) -> str:
        for _ in range(10_000):
            name = make()
            key = name.lower()
            if key not in self.used and (not clean or is_clean(name)):
                self.used.add(key)
                return name
        raise RuntimeError("ran out of fictional names; lower world.num_entities")

    def coined(self, syllables: tuple[int, int] = (2, 3)) -> str:
        """A pronounceable made-up word such as 'Brelthor' (not registered, so it can be reused)."""
        r = self.rng
        for _ in range(1000):
            n = r.randint(*syllables)
            word = "".join(
                r.choice(COIN_ONSET) + r.choice(COIN_VOWEL) + r.choice(COIN_CODA) for _ in range(n)
            )
            if 4 <= len(word) <= 10 and is_clean(word):
                return word.capitalize()
        raise RuntimeError("could not coin a clean word")

    def person(self, gender: str) -> str:
        r = self.rng
        return self._unique(
            lambda: (
                r.choice(FIRST_START)
                + r.choice(FIRST_MIDDLE)
                + r.choice(FIRST_END[gender])
                + " "
                + r.choice(SURNAME_START)
                + r.choice(SURNAME_END)
            )
        )

    def surname(self) -> str:
        r = self.rng
        return r.choice(SURNAME_START) + r.choice(SURNAME_END)

    def place(self) -> str:
        r = self.rng
        return self._unique(lambda: r.choice(PLACE_START) + r.choice(PLACE_END))

    def country(self) -> str:
        return self._unique(lambda: self.coined((2, 2)) + self.rng.choice(("ia", "a", "land", "ovy", "esse")))

    def river(self) -> str:
        return self._unique(lambda: "the " + self.coined((1, 2)))

    def unique(self, make, clean: bool = True) -> str:
        """A new value from ``make``; ``clean`` also rejects values that URL filters react to."""
        return self._unique(make, clean)


def slug(text: str) -> str:
    """URL path piece: 'the Kessary Lens' -> 'kessary-lens'."""
    words = _NORMALIZE.sub(" ", text.lower()).split()
    if words and words[0] == "the":
        words = words[1:]
    return "-".join(words)
