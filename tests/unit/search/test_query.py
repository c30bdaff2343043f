"""Query folding, index probes and ranking, without a database."""

from __future__ import annotations

from encore.search.models import SearchKind
from encore.search.service import (
    MAX_QUERY_WORDS,
    SearchQuery,
    Vocabulary,
    WordProbe,
    all_but_one,
    corrected_probes,
    fts5_expression,
    parse_query,
    query_probes,
    rank_candidates,
)


def test_queries_are_folded_bounded_and_stripped_of_control_characters() -> None:
    assert parse_query("  Björk\x00MOTÖRHEAD ") == SearchQuery(("bjork", "motorhead"), False)
    assert parse_query("radioh").last_is_prefix is True
    assert len(parse_query("a " * 50).words) == MAX_QUERY_WORDS
    assert parse_query("\x00\x01").words == ()


def test_the_vocabulary_corrects_a_word_to_the_closest_then_most_frequent_words() -> None:
    vocabulary = Vocabulary.from_documents(
        [
            ("track", " the garden "),
            ("track", " the green "),
            ("track", " the green mile "),
            ("artist", " nirvana "),
            ("artist", " radiohead "),
        ]
    )
    # A letter left out is likelier than one replaced: "garden" before the more frequent "green".
    assert vocabulary.corrections(SearchKind.track, "grden", prefix=False) == ["garden", "green"]
    assert vocabulary.corrections(SearchKind.artist, "nirvna", prefix=False) == ["nirvana"]
    # Still being typed: words whose start is one edit away.
    assert vocabulary.corrections(SearchKind.artist, "radoih", prefix=True) == ["radiohead"]
    assert vocabulary.corrections(SearchKind.artist, "radoih", prefix=False) == []
    # Three letters are matched exactly; other kinds' words are not offered.
    assert vocabulary.corrections(SearchKind.track, "thr", prefix=False) == []
    assert vocabulary.corrections(SearchKind.album, "grden", prefix=False) == []
    probes = corrected_probes(parse_query("the grden"), vocabulary, SearchKind.track)
    assert probes == [
        [WordProbe("the", start=False)],
        [
            WordProbe("grden", start=True),
            WordProbe("garden", start=False),
            WordProbe("green", start=False),
        ],
    ]


def test_words_too_short_for_the_index_are_left_to_ranking() -> None:
    assert query_probes(SearchQuery(("a", "beatles"), False)) == [
        [WordProbe("beatles", start=True)]
    ]


def test_fts5_expressions_quote_every_word() -> None:
    expression = fts5_expression(
        [[[WordProbe('a"b OR c', start=False)], [WordProbe("x*", start=True)]]]
    )
    assert expression == '(("a""b OR c") AND ("x*"*))'
    groups = all_but_one([[WordProbe(word, start=True)] for word in ("a", "b", "c")])
    assert len(groups) == 3


def test_a_word_start_is_the_range_of_the_words_it_begins() -> None:
    end = WordProbe("radio", start=True).range_end
    assert all("radio" <= word < end for word in ("radio", "radiohead", "radioé", "radio🎸"))
    assert not any("radio" <= word < end for word in ("radi", "radin", "radip", "rb"))


def test_ranking_prefers_exact_then_prefix_then_typos_and_name_over_other_fields() -> None:
    query = parse_query("beatles")
    names = ["the beatles", "beatlesque", "the beatels", "yesterday"]
    docs = [f" {n} " for n in names[:3]] + [" yesterday the beatles help "]
    exact, prefix, typo, context = rank_candidates(query, names, docs)
    assert exact > prefix > typo > 0
    assert exact > context > 0
    assert rank_candidates(parse_query("zzzz"), ["abba"], [" abba "]) == [0.0]
