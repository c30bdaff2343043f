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
# Fewer exact-prefix candidates than this, and the typo-tolerant probes run too.
EXACT_ENOUGH = 20
# Words shorter than this are matched exactly: one edit in three letters is another word.
MIN_TYPO_WORD_CHARS = 4
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
    for gap in range(len(word) - 1):
        left = f" {word[:gap]}"
        right = f"{word[gap + 2 :]}{end}"
        pieces = tuple(piece for piece in (left, right) if len(piece) >= 3)
        if not pieces:
            # Too short on both sides of this gap for a trigram: a typo here is not findable
            # through this word.
            covered = False
        elif pieces not in probes:
            probes.append(pieces)
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
) -> list[_Candidate]:
    params: dict[str, object] = {"limit": CANDIDATE_LIMIT}
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


def rank_candidates(query: SearchQuery, names: Sequence[str], docs: Sequence[str]) -> list[float]:
    """Relevance of each document (name, doc) to the query: 0 (no match) to 1.2 (exact name)."""
    if not names:
        return []
    vocabulary = sorted({word for doc in docs for word in doc.split()})
    index = {word: position for position, word in enumerate(vocabulary)}
    # Each query word against every distinct document word at once, in C.
    whole = cdist(list(query.words), vocabulary, scorer=OSA.distance, workers=1)
    prefix_rows = None
    if query.last_is_prefix and query.words:
        last = query.words[-1]
        truncated = [word[: len(last)] for word in vocabulary]
        prefix_rows = cdist([last], truncated, scorer=OSA.distance, workers=1)[0]
    word_scores: list[list[float]] = []
    for row, word in enumerate(query.words):
        allowed = _allowed_edits(word)
        is_last_prefix = prefix_rows is not None and row == len(query.words) - 1
        scores = []
        for column, candidate in enumerate(vocabulary):
            distance = int(whole[row][column])
            if distance == 0:
                score = 1.0
            elif is_last_prefix and prefix_rows is not None and int(prefix_rows[column]) == 0:
                # A word being typed that starts a document word: nearly as good as exact.
                score = 0.95 - 0.1 * (1 - len(word) / len(candidate))
            elif distance <= allowed:
                score = 0.75 - 0.1 * (distance - 1)
            elif is_last_prefix and prefix_rows is not None and int(prefix_rows[column]) <= allowed:
                score = 0.6
            else:
                score = 0.0
            scores.append(score)
        word_scores.append(scores)
    relevance = []
    folded_query = query.text
    for name, doc in zip(names, docs, strict=True):
        name_words = set(name.split())
        total = 0.0
        for scores in word_scores:
            best = 0.0
            for word in doc.split():
                weight = _NAME_WEIGHT if word in name_words else _CONTEXT_WEIGHT
                best = max(best, scores[index[word]] * weight)
            total += best
        score = total / len(word_scores) if word_scores else 0.0
        if name == folded_query:
            score += 0.2
        elif name.startswith(folded_query):
            score += 0.1
        relevance.append(score)
    return relevance


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
    seen: set[uuid.UUID] = set()
    for groups in stages:
        found = await _candidates(db_session, kind=kind, groups=groups, viewer_id=viewer_id)
        candidates += [candidate for candidate in found if candidate.entity_id not in seen]
        seen.update(candidate.entity_id for candidate in found)
        if len(candidates) >= EXACT_ENOUGH:
            break
    relevance = rank_candidates(query, [c.name for c in candidates], [c.doc for c in candidates])
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
