"""Search logic: typo-tolerant, accent- and case-insensitive search with search-as-you-type.

A query is folded like catalog names (accents removed, case folded) and split into words.
Candidates come from a word index of each kind's documents (FTS5 tables that split on spaces
on SQLite, a `search_words` B-tree on PostgreSQL; both kept by triggers), by the same look-ups
on both: a whole word is one key, a word start a range of keys.

- every word must start a word of the document ("radioh" finds "radiohead");
- when nothing has every word as typed, each word of 4+ letters is corrected against the
  vocabulary of that kind's documents (every distinct word with its document frequency, kept
  in memory per process and reloaded in the background when `search_revision`, bumped by
  triggers on every document write from any process, changes): the closest words within one
  edit (two from 8
  letters; for the word being typed, also words whose start is one edit away), and the
  documents must then contain, per query word, the word as typed or one of its corrections as
  a whole word; failing that, all words but one.

Words in a fifth or more of a kind's documents ("the", "of") are left out of the index filter
when a rarer word is in the query (reading their postings is what made queries slow), and
left to ranking.

The candidates are then ranked in Python: per query word the closest document word by
optimal-string-alignment distance (rapidfuzz), words of the name weighing more than words of
the other fields, then by popularity (streams, or followers for playlists) for equal relevance.

Other domains use it as `from encore.search import service as search_service`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import weakref
from bisect import bisect_left
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate

import numpy as np
import structlog
from rapidfuzz import fuzz
from rapidfuzz.distance import OSA, Indel
from rapidfuzz.process import cdist
from sqlalchemy import Engine, Text, Uuid, bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from encore.catalog import service as catalog_service
from encore.library import service as library_service
from encore.search.models import SearchKind, SearchRevision

logger = structlog.get_logger("encore.search")

MAX_QUERY_CHARS = 200
MAX_QUERY_WORDS = 8
MAX_WORD_CHARS = 40
# Documents read per kind and query: enough for every realistic match of a selective query;
# a very broad one ("the") is ranked among the first this many matches.
CANDIDATE_LIMIT = 300
# Words shorter than this are matched exactly: one edit in three letters is another word.
MIN_TYPO_WORD_CHARS = 4
# Candidates read per stage when typos are allowed; ranked in Python, vectorized.
TYPO_CANDIDATE_LIMIT = 500
# A query word in more documents than this share of its kind (and at least this many) is
# left out of the index filter when a rarer word is there, and left to ranking: " the" or
# " of" would make the index read most of its postings for nothing.
COMMON_WORD_SHARE = 0.2
COMMON_WORD_DOCUMENTS = 2_000
# Words the index filters on at most, the rarest: two rare words leave few documents, and each
# further word costs the index a walk through its postings; ranking weighs every word.
MAX_FILTER_WORDS = 2
# Corrections tried per query word: the closest, then the most frequent, vocabulary words.
MAX_CORRECTIONS = 6
# How often a process at most re-reads the vocabulary after another write: bursts of catalog
# writes cost one reload a second, and corrections see new words within about a second.
VOCABULARY_RELOAD_SECONDS = 1.0
# For documents that match the query only in part (a typo, a word prefix, another field), how
# much closeness of the whole name to the query counts: among documents that match the same
# corrected words, "the grden" prefers "The Garden" to "Garden of the Silver River" and to
# "The Green". Documents with every word as typed tie, for popularity to order them.
_CLOSENESS_WEIGHT = 0.05
_NAME_WEIGHT = 1.0
_CONTEXT_WEIGHT = 0.8


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A folded, bounded query: its words, and whether the last one is still being typed."""

    words: tuple[str, ...]
    last_is_prefix: bool

    @property
    def text(self) -> str:
        """The folded words joined by single spaces."""
        return " ".join(self.words)


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One ranked result: the entity's id, its relevance (0-1.2) and popularity."""

    entity_id: uuid.UUID
    relevance: float
    popularity: int


def parse_query(raw: str) -> SearchQuery:
    """Fold a raw query into at most 8 words of at most 40 characters each.

    Control characters (NUL included) become spaces; everything else, quotes, FTS operators,
    `%`, `_`, backslashes and emoji, is kept as text to look for, never as syntax.
    """
    bounded = raw[:MAX_QUERY_CHARS]
    printable = "".join(ch if ch.isprintable() else " " for ch in bounded)
    words = tuple(word[:MAX_WORD_CHARS] for word in catalog_service.name_key(printable).split())[
        :MAX_QUERY_WORDS
    ]
    # "radioh" is still being typed; "radiohead " is a finished word.
    last_is_prefix = bool(printable) and not printable[-1].isspace()
    return SearchQuery(words=words, last_is_prefix=last_is_prefix)


@dataclass(frozen=True, slots=True)
class WordProbe:
    """A document word the index looks for: this word, or (start) any word it begins."""

    word: str
    start: bool

    @property
    def range_end(self) -> str:
        """The first index key after every word this word begins (keys in byte order)."""
        # The highest code point: every word that begins with this one sorts before it.
        return self.word + "\U0010ffff"


WordProbes = list[WordProbe]
"""The alternative probes of one query word: a document matches the word if it matches any."""


def query_probes(query: SearchQuery) -> list[WordProbes]:
    """Per word the index can filter on, the probe of the word as typed (a word's start).

    One-letter words are left to ranking: as a start they would match a good part of the
    catalog.
    """
    return [[WordProbe(word, start=True)] for word in query.words if len(word) >= 2]


def all_but_one(words: Sequence[WordProbes]) -> list[list[WordProbes]]:
    """Each way of leaving one word out: for a query with one word not in the document."""
    return [[w for i, w in enumerate(words) if i != left_out] for left_out in range(len(words))]


def fts5_expression(groups: Sequence[Sequence[WordProbes]]) -> str:
    """An FTS5 MATCH expression: any group, in which every word matches by any probe.

    Inside double quotes FTS5 takes every character as text (quotes are doubled); `*` after
    the closing quote makes a word start.
    """
    matched_groups = []
    for words in groups:
        clauses = []
        for alternatives in words:
            options = [
                '"' + probe.word.replace('"', '""') + '"' + ("*" if probe.start else "")
                for probe in alternatives
            ]
            clauses.append("(" + " OR ".join(options) + ")")
        matched_groups.append("(" + " AND ".join(clauses) + ")")
    return " OR ".join(matched_groups)


@dataclass(slots=True)
class Vocabulary:
    """The distinct words of each kind's documents, with how many documents hold each."""

    frequencies: dict[str, Counter[str]] = field(default_factory=dict)
    documents: Counter[str] = field(default_factory=Counter)
    # Per kind and word length, the words: a word is compared only with words of near length.
    by_length: dict[str, dict[int, list[str]]] = field(default_factory=dict)
    # Per kind, the words in order and the running sum of their frequencies: how many
    # documents a word start may match, by two bisections.
    ordered: dict[str, tuple[list[str], list[int]]] = field(default_factory=dict)

    @classmethod
    def from_documents(cls, rows: Sequence[tuple[str, str]]) -> Vocabulary:
        """Build from (kind, doc) rows."""
        frequencies: dict[str, Counter[str]] = {}
        documents: Counter[str] = Counter()
        for kind, doc in rows:
            frequencies.setdefault(kind, Counter()).update(set(doc.split()))
            documents[kind] += 1
        return cls.from_frequencies(frequencies, documents)

    @classmethod
    def from_frequencies(
        cls, frequencies: dict[str, Counter[str]], documents: Counter[str]
    ) -> Vocabulary:
        """Build from each kind's words with their document counts, and its document count."""
        by_length: dict[str, dict[int, list[str]]] = {}
        ordered: dict[str, tuple[list[str], list[int]]] = {}
        for kind, counts in frequencies.items():
            lengths: dict[int, list[str]] = {}
            for word in counts:
                lengths.setdefault(len(word), []).append(word)
            by_length[kind] = lengths
            words = sorted(counts)
            ordered[kind] = (words, [0, *accumulate(counts[word] for word in words)])
        return cls(
            frequencies=frequencies, documents=documents, by_length=by_length, ordered=ordered
        )

    def probe_frequency(self, kind: SearchKind, probe: WordProbe) -> int:
        """At most how many documents of this kind a probe matches."""
        if not probe.start:
            return self.frequencies.get(kind.value, Counter())[probe.word]
        words, running = self.ordered.get(kind.value, ([], [0]))
        first = bisect_left(words, probe.word)
        last = bisect_left(words, probe.range_end, lo=first)
        return running[last] - running[first]

    def corrections(self, kind: SearchKind, word: str, *, prefix: bool) -> list[str]:
        """Words of this kind within the edits a word of this length may carry, best first.

        Closest first (optimal string alignment, then insertions and deletions over
        substitutions, which a one-letter slip more often is), then the most frequent. With
        prefix, also words whose start is that close (the word is still being typed).
        """
        allowed = _allowed_edits(word)
        counts = self.frequencies.get(kind.value)
        if allowed == 0 or not counts:
            return []
        lengths = self.by_length[kind.value]
        longest = max(lengths) if prefix else len(word) + allowed
        pool = [
            candidate
            for length in range(max(1, len(word) - allowed), longest + 1)
            for candidate in lengths.get(length, ())
        ]
        # Distances in one call into rapidfuzz's C code, not one Python call per word: a
        # vocabulary has tens of thousands of words (values past the cutoff are cutoff + 1).
        distances = cdist(
            [word], pool, scorer=OSA.distance, score_cutoff=allowed, dtype=np.int32, workers=1
        )[0]
        if prefix:
            # Its start, one letter shorter, as long, or one longer than the word.
            longer = [
                index
                for index in np.flatnonzero(distances > allowed)
                if len(pool[index]) >= len(word)
            ]
            for shift in (-1, 0, 1):
                starts = [pool[index][: len(word) + shift] for index in longer]
                if starts:
                    shifted = cdist(
                        [word],
                        starts,
                        scorer=OSA.distance,
                        score_cutoff=allowed,
                        dtype=np.int32,
                        workers=1,
                    )[0]
                    for position, index in enumerate(longer):
                        distances[index] = min(distances[index], shifted[position])
        found: dict[str, int] = {
            pool[index]: int(distances[index])
            for index in np.flatnonzero(distances <= allowed)
            if pool[index] != word
        }
        ranked = sorted(
            found,
            key=lambda candidate: (
                found[candidate],
                Indel.distance(word, candidate[: len(word) + allowed] if prefix else candidate),
                -counts[candidate],
                candidate,
            ),
        )
        return ranked[:MAX_CORRECTIONS]


@dataclass(slots=True)
class _CachedVocabulary:
    revision: int
    loaded_at: float
    vocabulary: Vocabulary
    # A reload running in the background while searches go on with this vocabulary.
    reload: asyncio.Task[None] | None = None


# Per engine (a database), the vocabulary its documents had at a revision.
_vocabularies: weakref.WeakKeyDictionary[Engine, _CachedVocabulary] = weakref.WeakKeyDictionary()


async def read_search_revision(*, db_session: AsyncSession) -> int:
    """The search documents' change counter (bumped by triggers on every write)."""
    revision = await db_session.scalar(
        select(SearchRevision.revision).where(SearchRevision.id == 1)
    )
    return revision or 0


async def load_vocabulary(*, db_session: AsyncSession) -> Vocabulary:
    """Read every kind's words with their document counts from the word index."""
    # Private playlists' words too: a correction only widens what is looked for, and the
    # candidates are filtered by visibility as ever.
    frequencies: dict[str, Counter[str]] = {}
    if db_session.get_bind().dialect.name == "sqlite":
        for kind in SearchKind:
            # `kind` is an enum member: it names the kind's fts5vocab table.
            rows = await db_session.execute(
                text(f"SELECT term, doc FROM search_vocabulary_{kind.value}")  # noqa: S608
            )
            frequencies[kind.value] = Counter({row.term: row.doc for row in rows})
    else:
        rows = await db_session.execute(
            text("SELECT kind, word, count(*) AS documents FROM search_words GROUP BY kind, word")
        )
        for row in rows:
            frequencies.setdefault(row.kind, Counter())[row.word] = row.documents
    documents = await db_session.execute(
        text("SELECT kind, count(*) AS documents FROM search_documents GROUP BY kind")
    )
    return Vocabulary.from_frequencies(
        frequencies, Counter({row.kind: row.documents for row in documents})
    )


def _engine_of(db_session: AsyncSession) -> Engine:
    bind = db_session.get_bind()
    return bind if isinstance(bind, Engine) else bind.engine


async def get_vocabulary(*, db_session: AsyncSession) -> Vocabulary:
    """This database's vocabulary; when the documents changed, reloaded in the background.

    The first search of a process loads it; later changes (checked at most once a second) are
    read by a background task on a connection of its own, while searches go on with the
    vocabulary they have: a search never waits for a reload.
    """
    engine = _engine_of(db_session)
    cached = _vocabularies.get(engine)
    now = time.monotonic()
    if cached is not None and now - cached.loaded_at < VOCABULARY_RELOAD_SECONDS:
        return cached.vocabulary
    revision = await read_search_revision(db_session=db_session)
    if cached is not None and cached.revision == revision:
        cached.loaded_at = now
        return cached.vocabulary
    bind = db_session.bind
    if cached is None or not isinstance(bind, AsyncEngine):
        # Nothing to search with meanwhile, or no engine to open a connection of its own on.
        vocabulary = await load_vocabulary(db_session=db_session)
        _vocabularies[engine] = _CachedVocabulary(
            revision=revision, loaded_at=time.monotonic(), vocabulary=vocabulary
        )
        return vocabulary
    if cached.reload is None or cached.reload.done():
        cached.reload = asyncio.create_task(_reload_vocabulary(bind, cached))
        cached.loaded_at = now
    return cached.vocabulary


async def _reload_vocabulary(engine: AsyncEngine, cached: _CachedVocabulary) -> None:
    try:
        async with AsyncSession(engine) as db_session:
            revision = await read_search_revision(db_session=db_session)
            vocabulary = await load_vocabulary(db_session=db_session)
    except Exception:
        # Searches go on with the vocabulary they have; the next check after a second tries
        # again.
        logger.exception("search vocabulary reload failed")
        cached.loaded_at = time.monotonic()
        return
    cached.vocabulary = vocabulary
    cached.revision = revision
    cached.loaded_at = time.monotonic()


async def settle_vocabulary(*, db_session: AsyncSession) -> None:
    """Wait for a background reload of this database's vocabulary, if one is running."""
    cached = _vocabularies.get(_engine_of(db_session))
    if cached is not None and cached.reload is not None:
        await asyncio.shield(cached.reload)


def corrected_probes(
    query: SearchQuery, vocabulary: Vocabulary, kind: SearchKind
) -> list[WordProbes]:
    """Per word the index can filter on: the word as typed, or any of its corrections.

    Words found as typed are not corrected, unless every word is (then one of them is a
    misspelling that is another real word).
    """
    typed: list[tuple[str, bool, WordProbe]] = []
    for index, word in enumerate(query.words):
        if len(word) < 2:
            continue
        prefix = index == len(query.words) - 1 and query.last_is_prefix
        typed.append((word, prefix, WordProbe(word, start=prefix)))
    known = [vocabulary.probe_frequency(kind, probe) > 0 for _, _, probe in typed]
    words: list[WordProbes] = []
    for (word, prefix, probe), found in zip(typed, known, strict=True):
        alternatives: WordProbes = [probe]
        if not found or all(known):
            alternatives += [
                WordProbe(correction, start=False)
                for correction in vocabulary.corrections(kind, word, prefix=prefix)
            ]
        words.append(alternatives)
    return words


def selective_words(
    words: Sequence[WordProbes], vocabulary: Vocabulary, kind: SearchKind
) -> list[WordProbes]:
    """The words worth filtering on: the rarest ones, none of the common ones unless alone."""
    if len(words) < 2:
        return list(words)
    frequency = [
        sum(vocabulary.probe_frequency(kind, probe) for probe in alternatives)
        for alternatives in words
    ]
    common = max(COMMON_WORD_DOCUMENTS, COMMON_WORD_SHARE * vocabulary.documents[kind.value])
    by_rarity = sorted(range(len(words)), key=frequency.__getitem__)
    kept = [by_rarity[0]] + [
        index for index in by_rarity[1:MAX_FILTER_WORDS] if frequency[index] <= common
    ]
    # In query order, as typed.
    return [words[index] for index in sorted(kept)]


@dataclass(frozen=True, slots=True)
class _Candidate:
    kind: SearchKind
    # As the database spells it: hundreds of candidates are read per query, and only the few
    # that can reach a page are turned into UUIDs.
    entity_key: str
    name: str
    doc: str


_KINDS_BY_VALUE = {kind.value: kind for kind in SearchKind}


def _kind_statement(
    dialect: str,
    *,
    kind: SearchKind,
    groups: Sequence[Sequence[WordProbes]],
    viewer_id: uuid.UUID | None,
    limit: int,
    params: dict[str, object],
) -> str:
    """One kind's look-up (its parameters added to params): matching documents, tagged."""
    # Parameter names carry the kind: the kinds' look-ups share one statement.
    prefix = kind.value
    params[f"{prefix}_limit"] = limit
    visible = ""
    if kind is SearchKind.playlist:
        # Public playlists, and the caller's own.
        if viewer_id is None:
            visible = " AND d.is_public"
        else:
            visible = f" AND (d.is_public OR d.owner_user_id = :{prefix}_viewer)"
            params[f"{prefix}_viewer"] = viewer_id
    # `kind` is an enum member, never caller text: it names a table (SQLite) and tags the
    # rows, which a bound parameter could not.
    if dialect == "sqlite":
        params[f"{prefix}_expression"] = fts5_expression(groups)
        return (
            f"SELECT * FROM (SELECT '{prefix}' AS kind, CAST(d.entity_id AS TEXT) AS entity_key, "  # noqa: S608
            "d.name, d.doc "
            f"FROM search_words_{prefix} f JOIN search_documents d ON d.id = f.rowid "
            f"WHERE search_words_{prefix} MATCH :{prefix}_expression{visible} "
            f"LIMIT :{prefix}_limit)"
        )
    group_sets = []
    for words in groups:
        word_sets = []
        for alternatives in words:
            ranges = []
            for probe in alternatives:
                low = f"{prefix}_{len(params)}"
                params[low] = probe.word
                if probe.start:
                    high = f"{prefix}_{len(params)}"
                    params[high] = probe.range_end
                    ranges.append(f"(w.word >= :{low} AND w.word < :{high})")
                else:
                    ranges.append(f"w.word = :{low}")
            # Each alternative is a range of the key (kind, word, document_id).
            word_sets.append(
                "SELECT w.document_id FROM search_words w "  # noqa: S608
                f"WHERE w.kind = '{prefix}' AND ({' OR '.join(ranges)})"
            )
        group_sets.append(" INTERSECT ".join(f"({word_set})" for word_set in word_sets))
    matched = " UNION ".join(f"({group})" for group in group_sets)
    if not visible:
        # Nothing is filtered out after the look-up: the first `limit` ids will do.
        matched += f" LIMIT :{prefix}_limit"
    # The ids as an array computed first, then read by key: on a join the planner, expecting
    # as many ids as the postings it reads, would scan every document instead.
    return (
        f"(SELECT '{prefix}' AS kind, CAST(d.entity_id AS TEXT) AS entity_key, "  # noqa: S608
        "d.name, d.doc "
        f"FROM search_documents d WHERE d.id = ANY(ARRAY({matched})){visible} "
        f"LIMIT :{prefix}_limit)"
    )


async def _candidates(
    db_session: AsyncSession,
    *,
    lookups: Mapping[SearchKind, Sequence[Sequence[WordProbes]]],
    viewer_id: uuid.UUID | None,
    limit: int,
) -> list[_Candidate]:
    """Documents of each kind matching that kind's groups of words, in one statement."""
    if not lookups:
        return []
    dialect = db_session.get_bind().dialect.name
    params: dict[str, object] = {}
    statement = " UNION ALL ".join(
        _kind_statement(
            dialect, kind=kind, groups=groups, viewer_id=viewer_id, limit=limit, params=params
        )
        for kind, groups in lookups.items()
    )
    query = text(statement).columns(kind=Text(), entity_key=Text(), name=Text(), doc=Text())
    viewer = f"{SearchKind.playlist.value}_viewer"
    if viewer in params:
        query = query.bindparams(bindparam(viewer, type_=Uuid()))
    rows = (await db_session.execute(query, params)).all()
    return [
        _Candidate(_KINDS_BY_VALUE[kind], entity_key, name, doc)
        for kind, entity_key, name, doc in rows
    ]


def _allowed_edits(word: str) -> int:
    if len(word) < MIN_TYPO_WORD_CHARS:
        return 0
    return 1 if len(word) < 8 else 2


def _vocabulary_scores(query: SearchQuery, vocabulary: list[str]) -> np.ndarray:
    # scores[q, v]: how well query word q matches document word v (0 to 1).
    whole = cdist(list(query.words), vocabulary, scorer=OSA.distance, workers=1, dtype=np.int32)
    scores = np.zeros(whole.shape, dtype=np.float32)
    allowed = np.array([_allowed_edits(word) for word in query.words], dtype=np.int32)[:, None]
    near = (whole > 0) & (whole <= allowed)
    scores[near] = (0.75 - 0.1 * (whole[near] - 1)).astype(np.float32)
    if query.last_is_prefix:
        last = query.words[-1]
        truncated = [word[: len(last)] for word in vocabulary]
        prefix = cdist([last], truncated, scorer=OSA.distance, workers=1, dtype=np.int32)[0]
        lengths = np.array([len(word) for word in vocabulary], dtype=np.float32)
        # A word being typed that starts a document word: nearly as good as exact.
        starts = 0.95 - 0.1 * (1 - len(last) / np.maximum(lengths, len(last)))
        row = scores[-1]
        row[:] = np.maximum(row, np.where(prefix == 0, starts, 0.0))
        row[:] = np.maximum(
            row, np.where((prefix > 0) & (prefix <= _allowed_edits(last)), 0.6, 0.0)
        )
    scores[whole == 0] = 1.0
    return scores


def rank_candidates(query: SearchQuery, names: Sequence[str], docs: Sequence[str]) -> list[float]:
    """Relevance of each document (name, doc) to the query: 0 (no match) to 1.2 (exact name).

    Below a full match, the similarity of the whole name to the query adds a little.
    """
    if not names or not query.words:
        return [0.0] * len(names)
    # Every document word in order (one split of all documents, in C), and their count per
    # document.
    words = " ".join(docs).split()
    counts = np.fromiter(map(len, map(str.split, docs)), dtype=np.intp, count=len(docs))
    vocabulary = list(dict.fromkeys(words))
    index = {word: position for position, word in enumerate(vocabulary)}
    flat = np.fromiter(map(index.__getitem__, words), dtype=np.int32, count=len(words))
    scores = _vocabulary_scores(query, vocabulary)
    # One row per document: its words' vocabulary indexes (padded with a zero-score column)
    # and their weights (name words count fully, other fields less). A document is
    # " name other fields ": its first words are the name's.
    width = max(1, int(counts.max()))
    rows = np.repeat(np.arange(len(docs)), counts)
    positions = np.arange(flat.size) - np.repeat(np.cumsum(counts) - counts, counts)
    name_words = np.fromiter((len(name.split()) for name in names), dtype=np.intp, count=len(names))
    columns = np.full((len(docs), width), len(vocabulary), dtype=np.int32)
    columns[rows, positions] = flat
    weights = np.zeros((len(docs), width), dtype=np.float32)
    weights[rows, positions] = np.where(
        positions < np.repeat(name_words, counts), _NAME_WEIGHT, _CONTEXT_WEIGHT
    )
    padded = np.concatenate([scores, np.zeros((len(query.words), 1), np.float32)], axis=1)
    # best[d, q]: the best weighted match of query word q among document d's words.
    best = (padded[:, columns] * weights[None, :, :]).max(axis=2).T
    relevance = best.mean(axis=1)
    folded_query = query.text
    # The whole name, or its first whole words, as typed: what a user means most often.
    whole_name = np.fromiter((name == folded_query for name in names), dtype=bool, count=len(names))
    name_start = np.fromiter(
        (name.startswith(folded_query + " ") for name in names), dtype=bool, count=len(names)
    )
    bonus = np.where(whole_name, 0.2, np.where(name_start, 0.05, 0.0)).astype(np.float32)
    partial = np.flatnonzero(relevance < 1.0)
    if partial.size:
        ratios = cdist(
            [folded_query],
            [names[position] for position in partial.tolist()],
            scorer=fuzz.ratio,
            dtype=np.float32,
            workers=1,
        )[0]
        bonus[partial] += _CLOSENESS_WEIGHT * ratios / 100
    return [float(value) for value in relevance + bonus]


async def _popularity(
    db_session: AsyncSession, contenders: Mapping[SearchKind, Collection[uuid.UUID]]
) -> dict[SearchKind, dict[uuid.UUID, int]]:
    """Streams (followers for playlists) of each kind's contenders: the catalog kinds in one
    statement."""
    catalog_ids = {
        kind.value: ids
        for kind, ids in contenders.items()
        if kind is not SearchKind.playlist and ids
    }
    counts = await catalog_service.get_stream_counts_of_kinds(
        db_session=db_session, ids_by_kind=catalog_ids
    )
    popularity = {kind: counts.get(kind.value, {}) for kind in contenders}
    if contenders.get(SearchKind.playlist):
        popularity[SearchKind.playlist] = await library_service.get_follower_counts(
            db_session=db_session, playlist_ids=contenders[SearchKind.playlist]
        )
    return popularity


def _stage_words(
    words: Sequence[WordProbes], vocabulary: Vocabulary, kind: SearchKind
) -> list[WordProbes] | None:
    """The words to filter on, or None when one of them is in no document of this kind."""
    selected = selective_words(words, vocabulary, kind)
    if not selected:
        return None
    # The vocabulary is at most a second old: a word it lacks is then still looked up as typed
    # by the next stage, so a word written a moment ago is found all the same.
    if any(
        all(vocabulary.probe_frequency(kind, probe) == 0 for probe in alternatives)
        for alternatives in selected
    ):
        return None
    return selected


async def search(
    *,
    db_session: AsyncSession,
    query: SearchQuery,
    kinds: Sequence[SearchKind],
    offset: int,
    limit: int,
    viewer_id: uuid.UUID | None,
) -> dict[SearchKind, tuple[list[SearchHit], bool]]:
    """Per kind, one page of hits, best first, and whether more follow."""
    if not query_probes(query) or not kinds:
        return {kind: ([], False) for kind in kinds}
    vocabulary = await get_vocabulary(db_session=db_session)
    # From strict to lenient, stopping for a kind once something matches: every word as typed;
    # every word as typed or corrected against the vocabulary; all those words but one (a
    # word mistyped beyond correction, or not in the document at all). Each stage looks up
    # every kind still without a match in one statement.
    candidates: dict[SearchKind, list[_Candidate]] = {kind: [] for kind in kinds}
    relevance: dict[SearchKind, list[float]] = {kind: [] for kind in kinds}
    seen: set[str] = set()
    typed = query_probes(query)
    stages: dict[SearchKind, list[list[list[WordProbes]]]] = {kind: [] for kind in kinds}
    for kind in kinds:
        words = _stage_words(typed, vocabulary, kind)
        # A stage the vocabulary says matches nothing is left out, not looked up.
        stages[kind].append([words] if words is not None else [])
    stage = 0
    pending = list(kinds)
    while pending:
        lookups = {kind: stages[kind][stage] for kind in pending if stages[kind][stage]}
        found = await _candidates(
            db_session,
            lookups=lookups,
            viewer_id=viewer_id,
            limit=CANDIDATE_LIMIT if stage == 0 else TYPO_CANDIDATE_LIMIT,
        )
        fresh = [candidate for candidate in found if candidate.entity_key not in seen]
        seen.update(candidate.entity_key for candidate in fresh)
        scores = rank_candidates(query, [c.name for c in fresh], [c.doc for c in fresh])
        for candidate, score in zip(fresh, scores, strict=True):
            candidates[candidate.kind].append(candidate)
            relevance[candidate.kind].append(score)
        still_pending = []
        for kind in pending:
            # Something matches every word (as typed, or corrected): guessing further would
            # only add worse matches.
            if any(score > 0 for score in relevance[kind]):
                continue
            if stage == 0:
                corrected = selective_words(
                    corrected_probes(query, vocabulary, kind), vocabulary, kind
                )
                if corrected:
                    stages[kind].append([corrected])
                    if len(corrected) > 1:
                        stages[kind].append(all_but_one(corrected))
            if stage + 1 < len(stages[kind]):
                still_pending.append(kind)
        pending = still_pending
        stage += 1
    scored = {
        kind: _contenders(candidates[kind], relevance[kind], offset + limit) for kind in kinds
    }
    popularity = await _popularity(
        db_session,
        {kind: [entity_id for entity_id, _, _ in scored[kind][0]] for kind in kinds},
    )
    return {
        kind: _page(scored[kind], popularity[kind], offset=offset, limit=limit) for kind in kinds
    }


def _contenders(
    candidates: Sequence[_Candidate], relevance: Sequence[float], end: int
) -> tuple[list[tuple[uuid.UUID, float, _Candidate]], int]:
    """The candidates that can reach a page ending at `end` (id, score, candidate), and how
    many candidates match at all."""
    scored = sorted(
        (
            (round(score, 3), candidate)
            for score, candidate in zip(relevance, candidates, strict=True)
            if score > 0
        ),
        key=lambda pair: -pair[0],
    )
    if not scored:
        return [], 0
    # Popularity only orders equal relevance: read it just for those that can reach this page.
    threshold = scored[min(end, len(scored)) - 1][0]
    contenders = [
        (uuid.UUID(candidate.entity_key), score, candidate)
        for score, candidate in scored
        if score >= threshold
    ]
    return contenders, len(scored)


def _page(
    scored: tuple[list[tuple[uuid.UUID, float, _Candidate]], int],
    popularity: Mapping[uuid.UUID, int],
    *,
    offset: int,
    limit: int,
) -> tuple[list[SearchHit], bool]:
    contenders, matches = scored
    end = offset + limit
    if offset >= matches:
        return [], False
    ranked = sorted(
        (
            (score, popularity.get(entity_id, 0), candidate.name, entity_id)
            for entity_id, score, candidate in contenders
        ),
        key=lambda entry: (-entry[0], -entry[1], entry[2]),
    )
    page = [
        SearchHit(entity_id=entity_id, relevance=score, popularity=streams)
        for score, streams, _name, entity_id in ranked[offset:end]
    ]
    return page, end < matches


async def search_kind(
    *,
    db_session: AsyncSession,
    query: SearchQuery,
    kind: SearchKind,
    offset: int,
    limit: int,
    viewer_id: uuid.UUID | None,
) -> tuple[list[SearchHit], bool]:
    """One page of hits of one kind, best first, and whether more follow."""
    pages = await search(
        db_session=db_session,
        query=query,
        kinds=[kind],
        offset=offset,
        limit=limit,
        viewer_id=viewer_id,
    )
    return pages[kind]
