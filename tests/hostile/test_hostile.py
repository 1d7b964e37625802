"""The hostile-client suite (issue 4): the server keeps serving, loses nothing, lets no one in.

One run of :func:`~tests.hostile.suite.run_suite` (about 6-7 s on 2 cores) feeds every test
here: a real ``ocm server`` process under twelve attacks while a room of three keeps
chatting. With OCM_HOSTILE_RESULTS=path the run is also written there as JSON, which
``python -m tests.hostile.report`` renders into docs/security.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ocm.wire import CreateRoom, encode_request
from tests.hostile.attack_access import GUESSES, PARALLEL_GUESSES, SEQUENTIAL_GUESSES
from tests.hostile.attack_connections import IDLE_CONNECTIONS, SLOW_SENDERS
from tests.hostile.attack_input import DATAGRAMS, STREAMS
from tests.hostile.attack_resume import PARALLEL_RESUMES
from tests.hostile.attack_tunnel import AFTER_CUT, AT_ONCE, BAD_LENGTHS, RANDOM_FRAMES, STALLED
from tests.hostile.suite import MEMORY_BOUND_MIB, SuiteResult, run_suite
from tests.kit import OTHER_HOST, has_loopback_alias

RESULTS_ENV = "OCM_HOSTILE_RESULTS"
# How late a timer may fire on a loaded 2-core machine running the attacks and the server.
SLACK = 1.5
# How late the feeder's own lines may come back while the tunnels of its room stall: at
# most 0.15 s measured, on a loaded machine too; a server that waited on a stalled tunnel
# would hold them for the message timeout (2 s) at each.
NOT_SLOWED_MS = 1000
# What a stalled tunnel may be sent before its cut is seen, beyond --tunnel-buffer: the
# kernel's buffers on both sides (the server asks for 64 KiB, which Linux doubles; the
# stalled side offers a 4 KiB window) and the lines in flight until our next PING drew
# the reset. Measured: 150-250 KiB. Without the server's smaller kernel buffer, Linux
# would take up to 4 MiB first.
KERNEL_ALLOWANCE = 512 * 1024

pytestmark = [
    pytest.mark.hostile,
    pytest.mark.skipif(
        not has_loopback_alias(OTHER_HOST),
        reason="each attacker needs its own 127.0.0.x address (Linux has them; on macOS: "
        "ifconfig lo0 alias 127.0.0.2 and so on)",
    ),
]


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SuiteResult]:
    result = asyncio.run(run_suite(tmp_path_factory.mktemp("hostile")))
    target = os.environ.get(RESULTS_ENV)
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    yield result


def per_second_cap(suite: SuiteResult) -> float:
    """The most ERRORs one source may see in any second, as measured at the receiver.

    The server's bucket allows a burst of ``rate`` and then ``rate`` a second: at most
    2 x rate in one window. Receive times jitter on a loaded machine and can squeeze a
    few more into a window; an uncapped source would see thousands.
    """
    return 3 * suite.limits.error_replies_per_second


def within_rate(errors: int, seconds: float, rate: float) -> bool:
    """ERROR replies a source may get: a full bucket, then ``rate`` a second."""
    return errors <= rate * (1 + seconds) + 1


# -- the promise: nothing lost, nothing let in, still serving ---------------------------


def test_the_room_got_every_line_in_order(suite: SuiteResult) -> None:
    room = suite.room
    assert room.problems == []
    assert room.total_sent > 100, "the room did not chat during the attacks"
    assert set(room.received.values()) == {room.total_sent}
    assert room.last_seq - room.first_seq + 1 == room.total_sent


def test_the_server_kept_serving_and_logged_no_crash(suite: SuiteResult) -> None:
    assert suite.alive_after
    assert suite.serves_after
    assert suite.bad_log_lines == []
    assert suite.pacer_lost == 0, "a flood outran the server: the suite's pacing failed"
    assert suite.udp_drops in (0, None)
    if sys.platform != "win32":  # SIGTERM is a hard kill on Windows
        assert suite.exit_code == 0


def test_memory_stays_within_the_bound(suite: SuiteResult) -> None:
    if suite.memory_end is None:
        pytest.skip("no /proc/<pid>/status here to read the server's memory from")
    assert suite.memory_end["VmHWM"] <= MEMORY_BOUND_MIB * 1024, suite.memory_end


def test_the_suite_runs_in_under_a_minute(suite: SuiteResult) -> None:
    assert suite.seconds < 60
    assert all(attack.seconds < 20 for attack in suite.attacks)


# -- the attacks -------------------------------------------------------------------------


def test_1_random_datagrams_and_streams_are_refused_and_throttled(suite: SuiteResult) -> None:
    facts = suite.attack(1).facts
    assert facts["datagrams"] == DATAGRAMS
    assert within_rate(
        facts["errors"], facts["flood_seconds"], suite.limits.error_replies_per_second
    )
    assert facts["errors_max_per_second"] <= per_second_cap(suite)
    assert facts["streams"] == STREAMS
    assert facts["endings"].get("hung", 0) == 0
    assert facts["slowest"] < 2 * SLACK  # every stream ended with an EOF from us: no wait


def test_2_malformed_headers_get_the_right_answer(suite: SuiteResult) -> None:
    facts = suite.attack(2).facts
    assert facts["mismatches"] == []
    assert facts["tcrp_expected"]["too_large"] >= 6
    assert facts["datagram_relayed"] == 0
    assert facts["larger_than_datagram"] == 0


def test_3_slow_senders_slow_readers_and_idle_crowds_are_cut_off(suite: SuiteResult) -> None:
    facts = suite.attack(3).facts
    limits = suite.limits
    crowd = {key: facts[key] for key in ("refused", "kept", "connect_seconds", "kept_hung")}
    assert facts["refused"] == IDLE_CONNECTIONS - limits.max_connections_per_ip, crowd
    assert facts["kept"] == limits.max_connections_per_ip, crowd
    assert facts["kept_hung"] == 0
    low, high = facts["kept_closed_after"]
    # Measured from when our side saw the connection, on a busy event loop: a little early.
    assert limits.tcp_idle_timeout - 0.5 <= low <= high <= limits.tcp_idle_timeout + SLACK
    request_size = len(encode_request(CreateRoom("slowpoke", "sloth")))
    assert len(facts["slow_senders"]) == SLOW_SENDERS
    for sender in facts["slow_senders"]:
        assert sender["ending"] in ("closed", "reset")
        assert sender["bytes"] < request_size
        low_cut = limits.message_timeout - 0.1
        assert low_cut <= sender["seconds"] <= limits.message_timeout + SLACK
    reader = facts["slow_reader"]
    # Cut off (not "hung" for the whole wait); when exactly depends on how much the
    # socket buffers between us took in before the server's writes stalled.
    assert reader["ending"] == "reset", reader
    assert facts["slots_free_after"]


def test_4_guessed_tokens_are_never_accepted_and_the_guesser_is_throttled(
    suite: SuiteResult,
) -> None:
    facts = suite.attack(4).facts
    assert facts["guesses"] == GUESSES
    assert facts["accepted"] == 0  # and the room saw none of them (the room test)
    assert facts["errors"] <= facts["errors_bound"]
    assert facts["errors_max_per_second"] <= per_second_cap(suite)


def test_5_password_guessing_is_rate_limited_per_ip(suite: SuiteResult) -> None:
    facts = suite.attack(5).facts
    allowed = suite.limits.max_password_failures
    assert facts["sequential"] == ["wrong_password"] * allowed + ["rate_limited"] * (
        SEQUENTIAL_GUESSES - allowed
    )
    assert facts["right_password_from_guesser"] == "rate_limited"
    assert facts["parallel"].get("wrong_password", 0) <= allowed
    assert sum(facts["parallel"].values()) == PARALLEL_GUESSES
    assert set(facts["parallel"]) <= {"wrong_password", "rate_limited"}
    assert facts["honest_join"] == "ok"
    assert facts["honest_join_seconds"] < 1.0


def test_6_a_token_replayed_from_another_ip_is_refused(suite: SuiteResult) -> None:
    facts = suite.attack(6).facts
    assert facts["accepted"] == 0  # and alice still got every line (the room test)
    assert facts["leave"] == "invalid_token"
    assert within_rate(
        facts["errors"], facts["flood_seconds"], suite.limits.error_replies_per_second
    )


def test_7_no_reply_is_larger_than_what_it_answers(suite: SuiteResult) -> None:
    facts = suite.attack(7).facts
    assert facts["probe_larger_than_datagram"] == 0
    assert facts["probes_unanswered"] == []  # the probes really were answered...
    assert facts["tiny_probes_answered"] == []  # ...except those too small for a header
    assert facts["all_larger_than_datagram"] == 0
    assert facts["worst_ratio"] <= 1.0
    assert facts["all_error_bytes"] <= facts["all_bytes"]
    assert facts["max_errors_per_second_one_source"] <= per_second_cap(suite)


def test_8_vanished_members_time_out_and_a_vanished_host_closes_the_room(
    suite: SuiteResult,
) -> None:
    facts = suite.attack(8).facts
    idle = suite.limits.idle_timeout
    assert facts["notice"] == "mia timed out"
    assert idle - 0.3 <= facts["dropped_after"] <= idle + SLACK
    assert facts["closed"] == "host hank timed out; the room is closed"
    assert idle - 0.3 <= facts["closed_after"] <= idle + SLACK
    assert not facts["room_listed_after"]


def test_9_tunnel_garbage_ends_only_the_offending_tunnels(suite: SuiteResult) -> None:
    attack = suite.attack(9)
    facts = attack.facts
    random_part, crafted = facts["random"], facts["crafted"]
    assert random_part["frames"] == RANDOM_FRAMES
    # A frame of a valid Length is a datagram like any other: refused on its own, and the
    # tunnel goes on (it answered a PING after the garbage, and was not ended).
    for part in (random_part, crafted):
        assert part["alive_after"] and part["ending"] is None, part
    # No frame spoke for another member: the room saw none (the room test), and of what
    # was relayed into the attackers' room, only crafter's own lines came back to it.
    assert set(crafted["relayed_by_sender"]) <= {"crafter"}, crafted["relayed_by_sender"]
    assert {"alice", "bob", "carol", "pacer", "bystander"} <= set(crafted["foreign_tokens"])
    assert within_rate(
        facts["errors_from_91"], attack.seconds, suite.limits.error_replies_per_second
    )
    bad = facts["bad_lengths"]
    assert set(bad["cases"]) == set(BAD_LENGTHS)
    for label, case in bad["cases"].items():
        assert case["ping_answered"], label  # it was a working tunnel until then
        assert case["ending"] in ("closed", "reset"), (label, case)
        assert case["seconds"] < AT_ONCE, (label, case)  # at once, not at a timeout
        assert case["errors_after"] == 0, (label, case)  # and without an answer
    assert bad["sibling_alive"]  # the same member's other tunnel was left alone
    # A frame that comes a byte at a time, whole within the message timeout, is served.
    assert facts["trickle"]["fast_answered"], facts["trickle"]
    refusals = facts["refusals"]
    assert refusals["mismatches"] == []
    assert set(refusals["codes"]) == {"invalid_token", "bad_request"}


def test_9_a_frame_trickled_too_slowly_ends_its_tunnel_at_the_message_timeout(
    suite: SuiteResult,
) -> None:
    # Section 4: a started frame must be whole within --message-timeout, however its
    # bytes come (each byte re-arming the wait would hold the connection for ever).
    trickle = suite.attack(9).facts["trickle"]
    timeout = suite.limits.message_timeout
    assert trickle["slow_cut_after"] is not None, trickle
    assert timeout - 0.1 <= trickle["slow_cut_after"] <= timeout + SLACK, trickle
    assert trickle["slow_ending"] in ("closed", "reset") and trickle["slow_frames_back"] == 0


def test_10_resume_guessing_is_rate_limited_and_moves_nobody(suite: SuiteResult) -> None:
    facts = suite.attack(10).facts
    allowed = suite.limits.max_password_failures
    # An unknown token, or a token named with another room, is refused and not counted:
    # the wrong secrets after them still get `allowed` tries (section 4).
    assert facts["uncounted"] and set(facts["uncounted"]) == {"invalid_token"}
    tries = len(facts["sequential"])
    assert tries > allowed
    assert facts["sequential"] == ["invalid_token"] * allowed + ["rate_limited"] * (tries - allowed)
    assert facts["right_secret_from_guesser"] == "rate_limited"
    assert facts["right_password_from_guesser"] == "rate_limited"  # one limiter for both
    assert facts["tunnel_from_guesser"] == "invalid_token"  # the token is not bound there
    # Each RESUME is decided on the event loop, one at a time: exactly `allowed` get in.
    assert facts["parallel"] == {
        "invalid_token": allowed,
        "rate_limited": PARALLEL_RESUMES - allowed,
    }
    assert set(facts["malformed"]) == {"bad_request"}
    # henry was never moved: every line he said from his own address was relayed, in
    # order (a moved token is refused from the old address: "unknown token").
    assert facts["henry_sent"] > 10
    assert facts["henry_echoed"] == facts["henry_sent"]
    assert facts["henry_in_order"]
    assert facts["henry_errors"] == []
    # The guessers locked out nobody but themselves; each secret moves the token once.
    assert facts["owner_resume"] == "ok" and facts["owner_new_secret"]
    assert facts["used_secret_again"] == "invalid_token"


def test_11_tunnels_that_never_read_are_cut_and_slow_nobody(suite: SuiteResult) -> None:
    facts = suite.attack(11).facts
    assert facts["cut"] == STALLED, facts
    assert facts["fed_until_cut"] is not None
    assert facts["bytes_until_cut"] <= suite.limits.tunnel_buffer + KERNEL_ALLOWANCE, facts
    # The member who reads got every line back, in order, promptly, after the cuts too.
    assert facts["fed"] == facts["fed_until_cut"] + AFTER_CUT
    assert facts["echoed"] == facts["fed"] and facts["out_of_order"] == 0
    assert facts["echo_ms_max"] < NOT_SLOWED_MS, facts
    # The chatting room was not held up (and lost nothing: the room test). Its lines
    # measure the load of the whole suite and machine too (up to 1.8 s late on a machine
    # busy with other work): the bound is what a server that waited out the message
    # timeout on a stalled tunnel would exceed.
    assert facts["room_lines_meanwhile"] > 0
    assert facts["room_delay_ms_max"] < (suite.limits.message_timeout + SLACK) * 1000, facts
    assert facts["feeder_departed"]


def test_12_sealed_garbage_is_dropped_and_the_sealed_room_chats_on(suite: SuiteResult) -> None:
    facts = suite.attack(12).facts
    # The sealed room lost nothing and was handed nothing it could not open.
    assert facts["room_problems"] == []
    assert min(facts["room_lines"].values()) > 10, "the sealed room did not chat"
    assert facts["clients_refused"] == {"ann": {}, "ben": {}}
    # Forgeries and replays from the member's own IP: dropped without a word.
    for part in ("forged", "replayed"):
        assert facts[part]["sent"] > 0
        assert facts[part]["errors"] == facts[part]["others"] == 0, facts[part]
    # Unknown Sessions (random, or a member's from another IP): rate-limited ERRORs, each
    # no larger than its datagram, and nothing else.
    rate = suite.limits.error_replies_per_second
    for part in ("random_sessions", "stolen_session"):
        result = facts[part]
        assert result["errors"] > 0 and result["others"] == 0, result
        assert result["larger_than_datagram"] == 0, result
        assert within_rate(result["errors"], result["seconds"], rate), result
        assert result["max_per_second"] <= per_second_cap(suite), result
    # Another server's Sessions: RESTARTED, at its own rate, smaller than what came.
    foreign = facts["foreign_sessions"]
    assert foreign["errors"] == 0 and foreign["others"] > 0, foreign
    assert foreign["others"] <= facts["restarted_rate"] * (1 + foreign["seconds"]) + 1
    assert facts["restarted_size"] < facts["smallest_datagram"]
