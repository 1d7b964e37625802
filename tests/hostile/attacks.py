"""The twelve attacks of the hostile-client suite (issue 4), one coroutine each.

Each attack is bounded in count and time, uses loopback only, and returns an
:class:`~tests.hostile.harness.Attack`: what it tried, what happened, how long it took,
and the numbers the tests assert on. Each attacking host has its own loopback address,
so per-IP limits of one attack do not blur another:

    127.0.0.1      the well-behaved room, the pacer, attack 8's processes, attack 10's henry
    127.0.0.2      attack 5's honest late joiner and attack 6's token thief
    127.0.0.1x     attack 1: random datagrams (.11) and random TCP streams (.12-.15)
    127.0.0.2x     attack 2: crafted TCRP (.21) and crafted datagrams (.22)
    127.0.0.3x     attack 3: slow senders (.31), idle connections (.32), a slow reader (.33)
                   and the hosts of the rooms that make its replies large (.34)
    127.0.0.41     attack 4: the token guesser
    127.0.0.5x     attack 5: password guessers, one at a time (.51) and all at once (.52)
    127.0.7.1-64   attack 7: reflection probes
    127.0.0.9x     attack 9: tunnels fed random (.91) and crafted frames (.91), bad Lengths
                   (.92), trickled frames (.93), TUNNEL with bad tokens (.94)
    127.0.0.10x    attack 10: resume guessers, one at a time (.101), all at once (.102),
                   malformed (.103)
    127.0.0.11x    attack 11: the feeder (.111) and the tunnels that never read (.112)
    127.0.0.12x    attack 12: sealed datagrams under random Sessions (.121), a member's
                   Session from another IP (.122), another server's Sessions (.123); its
                   forgeries and replays come from the sealed members' own 127.0.0.1

Attacks 9-11 speak TCP only (tunnels and TCRP), so they do not take turns on the UDP lane.
"""

from __future__ import annotations

from tests.hostile.attack_access import (
    attack_4_guessed_tokens,
    attack_5_password_guessing,
    attack_6_token_replay,
    attack_7_reflection,
)
from tests.hostile.attack_connections import attack_3_slow_and_idle
from tests.hostile.attack_input import attack_1_random_input, attack_2_malformed
from tests.hostile.attack_resume import attack_10_resume_guessing
from tests.hostile.attack_sealed import attack_12_sealed_garbage
from tests.hostile.attack_tunnel import attack_9_tunnel_garbage, attack_11_stalled_tunnels
from tests.hostile.attack_vanish import attack_8_vanishing
from tests.hostile.context import Context

__all__ = ["ATTACKS", "LAST", "Context", "attack_8_vanishing"]

# Run together (the floods take turns on the UDP lane); attacks 8-12 alongside them.
ATTACKS = (
    attack_1_random_input,
    attack_2_malformed,
    attack_3_slow_and_idle,
    attack_4_guessed_tokens,
    attack_5_password_guessing,
    attack_6_token_replay,
    attack_8_vanishing,
    attack_9_tunnel_garbage,
    attack_10_resume_guessing,
    attack_11_stalled_tunnels,
    attack_12_sealed_garbage,
)
# Run after the others: it accounts for every datagram they sent.
LAST = attack_7_reflection
