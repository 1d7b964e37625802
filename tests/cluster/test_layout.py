"""The store's layout (ocm.server.cluster.layout): values written and read back, and the
key names the Lua scripts derive are the ones the nodes use."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocm.server.cluster import layout, scripts
from ocm.server.passwords import PasswordHash
from ocm.wire.tcrp import E2eParams


def test_a_password_is_kept_as_its_hash_and_read_back() -> None:
    password = PasswordHash(bytes(range(16)), bytes(range(32)))
    text = layout.password_text(password)
    assert text == bytes(range(16)).hex() + ":" + bytes(range(32)).hex()
    assert layout.parse_password(text.encode()) == password
    assert layout.password_text(None) == "" and layout.parse_password(b"") is None
    with pytest.raises(ValueError):
        layout.parse_password(b"not a hash")


def test_e2e_parameters_are_read_back() -> None:
    params = E2eParams(b"\x01" * 16, 19456, 2, 1)
    assert layout.parse_e2e(layout.e2e_text(params).encode()) == params
    assert layout.e2e_text(None) == "" and layout.parse_e2e(b"") is None
    with pytest.raises(ValueError):
        layout.parse_e2e(b"{not json")


@given(
    node=st.text("0123456789abcdef", min_size=16, max_size=16),
    place=st.integers(0, 10**10 - 1),
    name=st.text(min_size=1, max_size=32),
)
def test_a_member_value_gives_back_its_place_and_name(node: str, place: int, name: str) -> None:
    value = layout.member_value(node, place, name)
    assert value.startswith(node)
    assert (layout.member_place(value), layout.member_name(value)) == (place, name)


def test_member_values_sort_by_place_as_numbers() -> None:
    values = [layout.member_value("0" * 16, place, "x") for place in (10, 9, 100, 0)]
    assert [layout.member_place(v) for v in sorted(values, key=layout.member_place)] == [
        0,
        9,
        10,
        100,
    ]


def test_the_scripts_derive_the_keys_the_nodes_use() -> None:
    room = "lobby"
    for key in (layout.members_key(room), layout.room_key(room)):
        assert key.removesuffix(room) in scripts.REAP + scripts.LIST
    assert layout.hosted_key("1.2.3.4").removesuffix("1.2.3.4") in scripts.PUBLISH
    assert layout.published_key("n").removesuffix("n") in scripts.REAP
    assert layout.node_key("n") == layout.NODE_PREFIX + "n"
    # Where a script cuts a member's value, it cuts where the layout does.
    assert f"string.sub(value, {layout.NAME_START + 1})" in scripts.REAP
    assert f"string.sub(ARGV[7], {layout.NAME_START + 1})" in scripts.CREATE
    assert f"string.sub(value, 1, {2 * layout.NODE_ID_SIZE})" in scripts.PUBLISH


def test_a_logged_url_has_no_password() -> None:
    assert layout.safe_url("redis://:s3cret@db:6379/0") == "redis://***@db:6379/0"
    assert layout.safe_url("rediss://user:pw@db/1") == "rediss://***@db/1"
    assert layout.safe_url("redis://db:6379/0") == "redis://db:6379/0"
