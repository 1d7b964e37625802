"""ocm.server.exposition: Snapshot in, Prometheus text out, with no server at all.

The text is read back with the official parser (``prometheus_client.parser``), so what
a Prometheus server would make of it is what the tests check.
"""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ocm.server.exposition import (
    Family,
    Sample,
    Snapshot,
    escape_help,
    escape_label_value,
    format_value,
    render,
    render_families,
)

FULL = Snapshot(
    version="1.2.3",
    start_time=1_796_000_000.25,
    rooms=3,
    members={"udp": 5, "tunnel": 1, "none": 2},
    tunnels=1,
    tcp_connections=4,
    datagrams_received=100,
    datagrams_sent=250,
    dropped={"unknown_token": 7, "sealed_forged": 0},
    requests={("create_room", "ok"): 3, ("join_room", "wrong_password"): 2},
    relayed=40,
    repaired=6,
)


def parsed(text: str) -> dict[str, tuple[str, str, dict[tuple[tuple[str, str], ...], float]]]:
    """Family name -> (type, help, {sorted labels: value}), as prometheus_client reads it."""
    return {
        family.name: (
            family.type,
            family.documentation,
            {tuple(sorted(s.labels.items())): s.value for s in family.samples},
        )
        for family in text_string_to_metric_families(text)
    }


def test_every_metric_has_help_type_and_its_values() -> None:
    families = parsed(render(FULL))
    # The parser names a counter's family without _total (its samples keep it).
    assert families["ocm_rooms"] == ("gauge", "Rooms open.", {(): 3})
    assert families["ocm_members"][2] == {
        (("path", "none"),): 2,
        (("path", "tunnel"),): 1,
        (("path", "udp"),): 5,
    }
    assert families["ocm_tunnels"][2] == {(): 1}
    assert families["ocm_tcp_connections"][2] == {(): 4}
    assert families["ocm_datagrams_received"][:1] == ("counter",)
    assert families["ocm_datagrams_received"][2] == {(): 100}
    assert families["ocm_datagrams_sent"][2] == {(): 250}
    assert families["ocm_datagrams_dropped"] == (
        "counter",
        families["ocm_datagrams_dropped"][1],
        {(("reason", "sealed_forged"),): 0, (("reason", "unknown_token"),): 7},
    )
    assert families["ocm_tcrp_requests"][2] == {
        (("operation", "create_room"), ("result", "ok")): 3,
        (("operation", "join_room"), ("result", "wrong_password")): 2,
    }
    assert families["ocm_relayed_messages"][2] == {(): 40}
    assert families["ocm_repaired_datagrams"][2] == {(): 6}
    assert families["ocm_build_info"] == (
        "gauge",
        families["ocm_build_info"][1],
        {(("version", "1.2.3"),): 1},
    )
    assert families["ocm_start_time_seconds"][2] == {(): 1_796_000_000.25}
    assert all(help for _, help, _ in families.values())


def test_the_text_is_help_then_type_then_samples_each_line_ended() -> None:
    text = render(FULL)
    assert text.endswith("\n") and "\n\n" not in text
    lines = text.splitlines()
    assert lines[:3] == [
        "# HELP ocm_build_info The OCM version this server runs (always 1).",
        "# TYPE ocm_build_info gauge",
        'ocm_build_info{version="1.2.3"} 1',
    ]
    assert "# TYPE ocm_datagrams_received_total counter" in lines
    assert "ocm_datagrams_received_total 100" in lines
    for number, line in enumerate(lines):
        if line.startswith("# HELP "):
            name = line.split()[2]
            assert lines[number + 1].startswith(f"# TYPE {name} ")
            assert name.startswith("ocm_")


def test_an_empty_snapshot_renders_and_parses() -> None:
    families = parsed(render(Snapshot(version="0", start_time=0.0)))
    assert families["ocm_rooms"][2] == {(): 0}
    assert families["ocm_tcrp_requests"][2] == {}  # HELP and TYPE, no sample yet


@pytest.mark.parametrize(
    "awkward",
    ['quote " in it', "back\\slash", "line\nbreak", 'all \\ " \n at once \\n', "ünïcödé", ""],
)
def test_label_values_are_escaped_and_read_back_as_they_were(awkward: str) -> None:
    text = render_families(
        [Family("ocm_test", "gauge", "A test.", (Sample((("what", awkward),), 1),))]
    )
    assert text.count("\n") == 3  # an escaped newline does not end the line
    ((_, _, samples),) = parsed(text).values()
    assert samples == {(("what", awkward),): 1}


def test_escaping_by_hand() -> None:
    assert escape_label_value('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    assert escape_help('a\\b"c\nd') == 'a\\\\b"c\\nd'  # a HELP keeps its quotes


def test_help_texts_are_escaped_and_read_back() -> None:
    help = "first line\nsecond \\ line"
    text = render_families([Family("ocm_test", "gauge", help, (Sample((), 1),))])
    assert "# HELP ocm_test first line\\nsecond \\\\ line\n" in text
    assert parsed(text)["ocm_test"][1] == help


@pytest.mark.parametrize(
    ("number", "written"),
    [
        (0, "0"),
        (12345678901234, "12345678901234"),
        (2.0, "2"),
        (0.25, "0.25"),
        (1_796_000_000.125, "1796000000.125"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
        (math.nan, "NaN"),
    ],
)
def test_values(number: float, written: str) -> None:
    assert format_value(number) == written


@pytest.mark.parametrize(
    "family",
    [
        Family("ocm-rooms", "gauge", "A dash.", ()),
        Family("9rooms", "gauge", "A digit first.", ()),
        Family("ocm_requests", "counter", "A counter without _total.", ()),
        Family("ocm_x", "gauge", "A bad label.", (Sample((("a-b", "v"),), 1),)),
        Family("ocm_x", "gauge", "A reserved label.", (Sample((("__name__", "v"),), 1),)),
    ],
)
def test_names_that_break_the_format_are_a_bug_here(family: Family) -> None:
    with pytest.raises(ValueError):
        render_families([family])
