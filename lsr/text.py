"""The lexical analyzer: lowercase, Unicode word split, English stopwords, Snowball stemming."""

from __future__ import annotations

import re

import Stemmer

# Lucene's EnglishAnalyzer stop set (the one Anserini's BM25 uses).
ENGLISH_STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their "
    "then there these they this to was will with".split()
)
_WORD = re.compile(r"\w+", re.UNICODE)


class Analyzer:
    """Turns text into index terms. Stems are cached: vocabularies are small, corpora are not."""

    def __init__(self, language: str = "english", stopwords: frozenset[str] = ENGLISH_STOPWORDS) -> None:
        self.language = language
        self.stopwords = stopwords
        self._stemmer = Stemmer.Stemmer(language)
        self._stem_cache: dict[str, str] = {}

    def __getstate__(self) -> dict:
        """Picklable (the stemmer, a C object, is made again): Ray ships BM25 encoders to actors."""
        return {**self.__dict__, "_stemmer": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._stemmer = Stemmer.Stemmer(self.language)

    def __call__(self, text: str) -> list[str]:
        words = [w for w in _WORD.findall(text.lower()) if w not in self.stopwords]
        cache = self._stem_cache
        missing = [w for w in set(words) if w not in cache]
        if missing:
            cache.update(zip(missing, self._stemmer.stemWords(missing)))
        return [cache[w] for w in words]
