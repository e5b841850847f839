"""Caption → lemma lists for CHAIR: NLTK (POS-tagged WordNet lemmas, OPERA's default) or a rule-based singulariser.

The singulariser re-implements the suffix rules of `pattern.en.singularize` (pattern 3.6, itself after Bermi Ferrer's
Inflector), which the original CHAIR code of Rohrbach et al. (2018) applied to every token. Its quirks are kept on
purpose: "glass" becomes "glas" (hence CHAIR's `wine glas` double word), and "our" inside a word becomes "my".
"""

from __future__ import annotations

import functools
import re

from vdtrain.errors import InputError

LEMMATIZERS = ("nltk", "pattern")

_PLURAL_PREPOSITIONS = frozenset(
    "about above across after among around at athwart before behind below beneath beside besides between betwixt "
    "beyond but by during except for from in into near of off on onto out over since till to under until unto upon "
    "with".split()
)
# A word w is returned unchanged when it is the tail of one of these (pattern tests `x.endswith(w)`).
_UNINFLECTED = (
    "bison debris headquarters pincers trout bream diabetes herpes pliers tuna breeches djinn high-jinks proceedings "
    "whiting britches eland homework rabies wildebeest carp elk innings salmon chassis flounder jackanapes scissors "
    "christmas gallows mackerel series clippers georgia measles shears cod graffiti mews species contretemps mumps "
    "swine corps news swiss "
    # uncountable
    "advice equipment happiness luggage software bread fruit information mathematics progress understanding butter "
    "furniture ketchup mayonnaise research water cheese garbage knowledge meat rice electricity gravel love mustard "
    "sand"
).split()
# Plurals of these drop only the "s"; "^pie" and "^tie" are literal strings in pattern and so never match.
_IE_WORDS = (
    "alergie cutie hoagie newbie softie veggie auntie doggie hottie nightie sortie weenie beanie eyrie indie oldie "
    "stoolie yuppie birdie freebie junkie ^pie sweetie zombie bogie goonie laddie pixie techie bombie groupie laramie "
    "quickie ^tie collie hankie lingerie reverie toughie cookie hippie meanie rookie valkyrie"
).split()
# Checked in this order against the end of the word.
_IRREGULAR = {
    "atlantes": "atlas", "atlases": "atlas", "axes": "axe", "beeves": "beef", "brethren": "brother",
    "children": "child", "corpora": "corpus", "corpuses": "corpus", "ephemerides": "ephemeris", "feet": "foot",
    "ganglia": "ganglion", "geese": "goose", "genera": "genus", "genii": "genie", "graffiti": "graffito",
    "helves": "helve", "kine": "cow", "leaves": "leaf", "loaves": "loaf", "men": "man", "mongooses": "mongoose",
    "monies": "money", "moves": "move", "mythoi": "mythos", "numena": "numen", "occipita": "occiput",
    "octopodes": "octopus", "opera": "opus", "opuses": "opus", "our": "my", "oxen": "ox", "penes": "penis",
    "penises": "penis", "people": "person", "sexes": "sex", "soliloquies": "soliloquy", "teeth": "tooth",
    "testes": "testis", "trilbys": "trilby", "turves": "turf", "zoa": "zoon",
}  # fmt: skip
# (pattern, replacement), first match wins; the last rule strips any final "s".
_RULES = [
    (re.compile(p, flags), r)
    for p, r, flags in [
        (r"(.)ae$", r"\1a", re.I), (r"(.)itis$", r"\1itis", re.I), (r"(.)eaux$", r"\1eau", re.I),
        (r"(quiz)zes$", r"\1", re.I), (r"(matr)ices$", r"\1ix", re.I), (r"(ap|vert|ind)ices$", r"\1ex", re.I),
        (r"^(ox)en", r"\1", re.I), (r"(alias|status)es$", r"\1", re.I), (r"([octop|vir])i$", r"\1us", re.I),
        (r"(cris|ax|test)es$", r"\1is", re.I), (r"(shoe)s$", r"\1", re.I), (r"(o)es$", r"\1", re.I),
        (r"(bus)es$", r"\1", re.I), (r"([m|l])ice$", r"\1ouse", re.I), (r"(x|ch|ss|sh)es$", r"\1", re.I),
        (r"(m)ovies$", r"\1ovie", re.I), (r"(.)ombies$", r"\1ombie", re.I), (r"(s)eries$", r"\1eries", re.I),
        (r"([^aeiouy]|qu)ies$", r"\1y", re.I),
        (r"([aeo]l)ves$", r"\1f", 0), (r"([^d]ea)ves$", r"\1f", 0), (r"arves$", "arf", 0), (r"erves$", "erve", 0),
        (r"([nlw]i)ves$", r"\1fe", 0), (r"([lr])ves$", r"\1f", re.I), (r"([aeo])ves$", r"\1ve", 0),
        (r"(sive)s$", r"\1", re.I), (r"(tive)s$", r"\1", re.I), (r"(hive)s$", r"\1", re.I),
        (r"([^f])ves$", r"\1fe", re.I),
        (r"(^analy)ses$", r"\1sis", re.I),
        (r"((a)naly|(b)a|(d)iagno|(p)arenthe|(p)rogno|(s)ynop|(t)he)ses$", r"\1\2sis", re.I),
        (r"(.)opses$", r"\1opsis", re.I), (r"(.)yses$", r"\1ysis", re.I), (r"(h|d|r|o|n|b|cl|p)oses$", r"\1ose", re.I),
        (r"(fruct|gluc|galact|lact|ket|malt|rib|sacchar|cellul)ose$", r"\1ose", re.I), (r"(.)oses$", r"\1osis", re.I),
        (r"([ti])a$", r"\1um", re.I), (r"(n)ews$", r"\1ews", re.I), (r"s$", "", re.I),
    ]
]  # fmt: skip


@functools.lru_cache(maxsize=65536)
def singularize(word: str) -> str:
    """Singular of an English noun by suffix rules alone (no dictionary, no POS), as `pattern.en.singularize`."""
    if "-" in word:  # mothers-in-law -> mother-in-law
        parts = word.split("-")
        if parts[1] in _PLURAL_PREPOSITIONS:
            return singularize(parts[0]) + "-" + "-".join(parts[1:])
    if word.endswith("'"):  # dogs' -> dog's
        return singularize(word[:-1]) + "'s"
    lower = word.lower()
    if any(x.endswith(lower) for x in _UNINFLECTED):
        return word
    if any(lower.endswith(x + "s") for x in _IE_WORDS):
        return lower
    for plural, singular in _IRREGULAR.items():
        if lower.endswith(plural):
            return re.sub("(?i)" + plural + "$", singular, word)
    for pattern, replacement in _RULES:
        if pattern.search(word):
            return pattern.sub(replacement, word)  # unmatched groups substitute as ""
    return word


_WORDNET_POS = {"J": "a", "V": "v", "N": "n", "R": "r"}


@functools.lru_cache(maxsize=1)
def _tagger():
    # `nltk.pos_tag` builds (and loads from disk) a new PerceptronTagger on every call; this is the same tagger,
    # loaded once per process.
    from nltk.tag import PerceptronTagger

    return PerceptronTagger()


@functools.lru_cache(maxsize=1)
def _wordnet():
    from nltk.stem import WordNetLemmatizer

    return WordNetLemmatizer()


@functools.lru_cache(maxsize=262144)
def _wordnet_lemma(token: str, pos: str) -> str:
    return _wordnet().lemmatize(token, pos)


def caption_lemmas(caption: str, lemmatizer: str = "nltk") -> list[str]:
    """Lowercase, tokenize and lemmatize one caption, the first step of CHAIR's object extraction.

    Args:
        caption (`str`): the caption text.
        lemmatizer (`str`, defaults to `"nltk"`): `"nltk"` tags the whole token list once with the perceptron tagger
            (`nltk.pos_tag`) and lemmatizes each token with WordNet under its tag (J/V/N/R, anything else as a noun);
            `"pattern"` singularises each token with `singularize`.
    """
    from nltk import word_tokenize

    tokens = word_tokenize(caption.lower())
    if lemmatizer == "nltk":
        return [_wordnet_lemma(token, _WORDNET_POS.get(tag[:1], "n")) for token, tag in _tagger().tag(tokens)]
    if lemmatizer == "pattern":
        return [singularize(token) for token in tokens]
    raise InputError(f"unknown lemmatizer {lemmatizer!r}: choose one of {', '.join(LEMMATIZERS)}")
