"""Search logic: typo-tolerant, accent- and case-insensitive search with search-as-you-type.

A query is folded like catalog names (accents removed, case folded) and split into words.
Candidates come from a trigram index of each kind's documents (FTS5 on SQLite, pg_trgm on
PostgreSQL), by the same probes on both:

- every word must start a word of the document (`" radioh"`), the last word as a prefix;
- when that finds too little, a word may also carry one typo: for each place in the word, the
  text left and right of a two-character gap must both be there (" nir" and "vna " for
  "nirvna"), which every single insertion, deletion, substitution or transposition leaves.

The candidates are then ranked in Python: per query word the closest document word by
optimal-string-alignment distance (rapidfuzz), words of the name weighing more than words of
the other fields, then by popularity (streams, or followers for playlists) for equal relevance.

Other domains use it as `from encore.search import service as search_service`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rapidfuzz.distance import OSA
from rapidfuzz.process import cdist
from sqlalchemy import Text, Uuid, bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from encore.catalog import service as catalog_service
from encore.library import service as library_service
from encore.search.models import SearchKind

MAX_QUERY_CHARS = 200
MAX_QUERY_WORDS = 8
MAX_WORD_CHARS = 40
# Documents read per kind and query: enough for every realistic match of a selective query;
# a very broad one ("the") is ranked among the first this many matches.
CANDIDATE_LIMIT = 300
# Words shorter than this are matched exactly: one edit in three letters is another word.
MIN_TYPO_WORD_CHARS = 4
# A typo probe must keep this many letters of the word, or it matches half the catalog.
MIN_PROBE_LETTERS = 3
# Candidates read per stage when typos are allowed; ranked in Python, vectorized.
TYPO_CANDIDATE_LIMIT = 500
# Relevance of a document that has every query word as typed (or as a prefix of a word).
AS_TYPED_RELEVANCE = 0.9
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


def _word_probes(word: str, *, complete: bool, typos: bool) -> tuple[list[tuple[str, ...]], bool]:
    # Each probe is a set of substrings a matching document must all contain. Documents are
    # " word word … " so a leading space anchors a word's start and a trailing one its end.
    # Also answers whether the probes cover a typo anywhere in the word.
    probes: list[tuple[str, ...]] = [(f" {word}",)]
    if not typos or len(word) < MIN_TYPO_WORD_CHARS:
        return probes, not typos
    end = " " if complete else ""
    covered = True
    for at in range(len(word)):
        # A character inserted or replaced at `at`, or one missing there: the text on either
        # side of it is intact.
        left = f" {word[:at]}"
        right = f"{word[at + 1 :]}{end}"
        pieces = tuple(piece for piece in (left, right) if len(piece) >= 3)
        letters = sum(len(piece.strip()) for piece in pieces)
        if letters < MIN_PROBE_LETTERS:
            # Too little left of the word for the index to tell it apart: a typo here is
            # found only through the other words (or the all-but-one stage).
            covered = False
        elif pieces not in probes:
            probes.append(pieces)
    for at in range(len(word) - 1):
        # Two neighbours swapped: undo the swap and look for the word as such.
        swapped = f" {word[:at]}{word[at + 1]}{word[at]}{word[at + 2 :]}{end}"
        if (swapped,) not in probes:
            probes.append((swapped,))
    return probes, covered


WordProbes = list[tuple[str, ...]]
"""The alternative probes of one word: a document matches the word if it matches any."""


def query_probes(
    query: SearchQuery, *, typos: bool, keep_uncovered: bool = False
) -> list[WordProbes]:
    """Per word the index can filter on, the alternative probes that may match it.

    Words under two characters are left to ranking (the index needs three characters, a
    space included). With typos, a short word whose middle a typo could hide from every
    probe is left to ranking too (unless keep_uncovered, or it is the only word).
    """
    usable: list[tuple[WordProbes, bool]] = []
    for index, word in enumerate(query.words):
        complete = index < len(query.words) - 1 or not query.last_is_prefix
        if len(word) + 1 < 3:
            continue
        usable.append(_word_probes(word, complete=complete, typos=typos))
    filtering = [probes for probes, covered in usable if covered or keep_uncovered]
    if filtering:
        return filtering
    return [probes for probes, _ in usable]


def all_but_one(words: Sequence[WordProbes]) -> list[list[WordProbes]]:
    """Each way of leaving one word out: for a query with one word not in the document."""
    return [[w for i, w in enumerate(words) if i != left_out] for left_out in range(len(words))]


def _fts_phrase(piece: str) -> str:
    # Inside double quotes FTS5 takes every character literally; quotes are doubled.
    return '"' + piece.replace('"', '""') + '"'


def fts5_expression(groups: Sequence[Sequence[WordProbes]]) -> str:
    """An FTS5 MATCH expression: any group, in which every word matches by any probe."""
    matched_groups = []
    for words in groups:
        clauses = []
        for alternatives in words:
            options = [
                " AND ".join(_fts_phrase(piece) for piece in probe) for probe in alternatives
            ]
            clauses.append("(" + " OR ".join(f"({option})" for option in options) + ")")
        matched_groups.append("(" + " AND ".join(clauses) + ")")
    return " OR ".join(matched_groups)


def like_pattern(probe: tuple[str, ...]) -> str:
    """A LIKE pattern (escape character backslash) for a probe's pieces, in order."""
    escaped = [
        piece.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") for piece in probe
    ]
    return "%" + "%".join(escaped) + "%"


@dataclass(frozen=True, slots=True)
class _Candidate:
    entity_id: uuid.UUID
    name: str
    doc: str


async def _candidates(
    db_session: AsyncSession,
    *,
    kind: SearchKind,
    groups: Sequence[Sequence[WordProbes]],
    viewer_id: uuid.UUID | None,
    limit: int,
) -> list[_Candidate]:
    params: dict[str, object] = {"limit": limit}
    visible = ""
    if kind is SearchKind.playlist:
        # Public playlists, and the caller's own.
        if viewer_id is None:
            visible = " AND d.is_public"
        else:
            visible = " AND (d.is_public OR d.owner_user_id = :viewer)"
            params["viewer"] = viewer_id
    # `kind` is an enum member, never caller text: it names a table (SQLite) or matches a
    # partial index (PostgreSQL), which a bound parameter could not.
    if db_session.get_bind().dialect.name == "sqlite":
        params["expression"] = fts5_expression(groups)
        statement = (
            f"SELECT d.entity_id, d.name, d.doc FROM search_fts_{kind.value} f "  # noqa: S608
            f"JOIN search_documents d ON d.id = f.rowid "
            f"WHERE search_fts_{kind.value} MATCH :expression{visible} LIMIT :limit"
        )
    else:
        group_conditions = []
        for words in groups:
            word_conditions = []
            for alternatives in words:
                options = []
                for probe in alternatives:
                    name = f"p{len(params)}"
                    params[name] = like_pattern(probe)
                    options.append(f"d.doc LIKE :{name} ESCAPE '\\'")
                word_conditions.append("(" + " OR ".join(options) + ")")
            group_conditions.append("(" + " AND ".join(word_conditions) + ")")
        statement = (
            "SELECT d.entity_id, d.name, d.doc FROM search_documents d "  # noqa: S608
            f"WHERE d.kind = '{kind.value}' AND ({' OR '.join(group_conditions)}){visible} "
            "LIMIT :limit"
        )
    query = text(statement).columns(entity_id=Uuid(), name=Text(), doc=Text())
    if "viewer" in params:
        query = query.bindparams(bindparam("viewer", type_=Uuid()))
    rows = (await db_session.execute(query, params)).all()
    return [_Candidate(entity_id=row.entity_id, name=row.name, doc=row.doc) for row in rows]


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
    """Relevance of each document (name, doc) to the query: 0 (no match) to 1.2 (exact name)."""
    if not names or not query.words:
        return [0.0] * len(names)
    split_docs = [doc.split() for doc in docs]
    vocabulary = sorted({word for words in split_docs for word in words})
    index = {word: position for position, word in enumerate(vocabulary)}
    scores = _vocabulary_scores(query, vocabulary)
    # One row per document: its words' vocabulary indexes (padded with a zero-score column)
    # and their weights (name words count fully, other fields less).
    width = max(1, *(len(words) for words in split_docs))
    padding = len(vocabulary)
    columns = np.full((len(docs), width), padding, dtype=np.int32)
    weights = np.zeros((len(docs), width), dtype=np.float32)
    for row, (name, words) in enumerate(zip(names, split_docs, strict=True)):
        name_words = set(name.split())
        columns[row, : len(words)] = [index[word] for word in words]
        weights[row, : len(words)] = [
            _NAME_WEIGHT if word in name_words else _CONTEXT_WEIGHT for word in words
        ]
    padded = np.concatenate([scores, np.zeros((len(query.words), 1), np.float32)], axis=1)
    # best[d, q]: the best weighted match of query word q among document d's words.
    best = (padded[:, columns] * weights[None, :, :]).max(axis=2).T
    relevance = best.mean(axis=1)
    folded_query = query.text
    # The whole name, or its first whole words, as typed: what a user means most often.
    bonus = np.array(
        [
            0.2 if name == folded_query else 0.05 if name.startswith(folded_query + " ") else 0.0
            for name in names
        ],
        dtype=np.float32,
    )
    return [float(value) for value in relevance + bonus]


async def _popularity(
    db_session: AsyncSession, kind: SearchKind, ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, int]:
    if kind is SearchKind.playlist:
        return await library_service.get_follower_counts(db_session=db_session, playlist_ids=ids)
    return await catalog_service.get_stream_counts(db_session=db_session, kind=kind.value, ids=ids)


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
    exact = query_probes(query, typos=False)
    if not exact:
        return [], False
    # From strict to lenient, stopping once there is enough to rank: every word as typed;
    # every word with a typo allowed; every word but one (one word mistyped beyond the
    # probes, or not in the document at all).
    stages: list[list[list[WordProbes]]] = [[exact], [query_probes(query, typos=True)]]
    loose = query_probes(query, typos=True, keep_uncovered=True)
    if len(loose) > 1:
        stages.append(all_but_one(loose))
    candidates: list[_Candidate] = []
    relevance: list[float] = []
    seen: set[uuid.UUID] = set()
    for stage, groups in enumerate(stages):
        found = await _candidates(
            db_session,
            kind=kind,
            groups=groups,
            viewer_id=viewer_id,
            limit=CANDIDATE_LIMIT if stage == 0 else TYPO_CANDIDATE_LIMIT,
        )
        fresh = [candidate for candidate in found if candidate.entity_id not in seen]
        seen.update(candidate.entity_id for candidate in fresh)
        candidates += fresh
        relevance += rank_candidates(query, [c.name for c in fresh], [c.doc for c in fresh])
        # Something matches every word as typed: guessing typos would only add worse matches
        # (and is what costs most).
        if any(score >= AS_TYPED_RELEVANCE for score in relevance):
            break
    scored = sorted(
        (
            (round(score, 3), candidate)
            for score, candidate in zip(relevance, candidates, strict=True)
            if score > 0
        ),
        key=lambda pair: -pair[0],
    )
    end = offset + limit
    if not scored or offset >= len(scored):
        return [], False
    # Popularity only orders equal relevance: read it just for those that can reach this page.
    threshold = scored[min(end, len(scored)) - 1][0]
    contenders = [candidate.entity_id for score, candidate in scored if score >= threshold]
    popularity = await _popularity(db_session, kind, contenders)
    ranked = sorted(
        scored,
        key=lambda pair: (-pair[0], -popularity.get(pair[1].entity_id, 0), pair[1].name),
    )
    page = [
        SearchHit(
            entity_id=candidate.entity_id,
            relevance=score,
            popularity=popularity.get(candidate.entity_id, 0),
        )
        for score, candidate in ranked[offset:end]
    ]
    return page, end < len(ranked)
