"""The relay benchmark (bench/) in miniature, so that it cannot rot.

It runs ``python -m bench.run --smoke``: real relay processes on loopback, tiny counts,
a fraction of a second per scenario. It asserts that every scenario ran and reported
sane fields, never how fast anything was: on a shared 2-core machine the figures
are noise at this size. The C load generator is used where it compiles; the Python
one is run on its own as well, so both stay working. The cost of the delivery
extension (delivery members, a "before" server from another source tree: here this
one's own src/, which exercises the mechanism), the relay core's cost per line
(bench/relay_cost.py), the lossy scenario (bench/lossy.py, and its quiet members),
tunnelled members against UDP members (bench/tunnel.py), sealed rooms against plaintext
rooms (bench/sealed.py) and rooms across server nodes on one Redis (bench/cluster.py) run
in miniature too.
"""

from __future__ import annotations

import asyncio
import datetime
import importlib.util
import json
import ssl
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from bench.run import SCENARIOS
from bench.sealed import enter
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ocm.client.exchange import read_message
from ocm.wire import Ack, Admission, CreateRoom, TcrpReader, encode_reply, parse_request
from ocm.wire.sealed import Sealer, down_prefix, member_opener, session_of
from ocm.wire.tcrp import Operation, SealedKeys, StartTls, TlsReady

ROOT = Path(__file__).resolve().parents[1]
CHAT = [s.name for s in SCENARIOS if s.mode != "idle"]
MEMBERS = "members10k"


def bench(tmp_path: Path, *args: str, module: str = "bench.run") -> dict[str, Any]:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", module, "--smoke", "--json", str(out), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    if module == "bench.run":
        assert "| goal | measured | met |" in result.stdout  # the report was rendered
    report: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    report["stdout"] = result.stdout
    return report


def rows_by_key(report: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(row["scenario"], row["target"]): row for row in report["rows"]}


def assert_sane_chat(row: dict[str, Any]) -> None:
    where = f"{row['target']} / {row['scenario']}"
    assert row["unregistered"] == 0, where
    assert row["errors"] == row["closed"] == row["malformed"] == 0, where
    assert row["sent"] > 0 and row["offered_per_s"] > 0, where
    assert 0 < row["delivered"] <= row["expected"], where
    assert row["delivered_per_s"] > 0, where
    assert 0.0 <= row["loss_pct"] <= 100.0, where
    # Histogram buckets: a quantile may sit up to half a bucket above the maximum.
    assert 0 <= row["p50_us"] <= row["p99_us"] <= row["max_us"] + 1000, where
    assert row["generator_cpu_pct"] >= 0, where
    if sys.platform.startswith("linux"):
        assert row["server_cpu_pct"] >= 0, where
        assert row["peak_rss_mib"] > 0, where


def assert_sane_members(row: dict[str, Any]) -> None:
    where = f"{row['target']} / {row['scenario']}"
    assert row["unregistered"] == 0 and row["errors"] == 0, where
    assert row["sent"] == 0, where  # heartbeats only
    if sys.platform.startswith("linux"):
        assert row["rss_after_mib"] >= row["rss_before_mib"] > 0, where
        assert row["rss_growth_mib"] >= 0, where
    if row["target"].startswith("ocm"):
        assert row["heartbeats_per_s"] > 0, where
        assert row["creates_per_s"] > 0 and row["joins_per_s"] > 0, where


@pytest.mark.timeout(200)
def test_every_scenario_runs_on_ocm_and_every_relay_runs(tmp_path: Path) -> None:
    every_scenario = bench(tmp_path / "a", "--targets", "ocm-uvloop")
    every_relay = bench(tmp_path / "b", "--scenarios", "room10," + MEMBERS)

    rows = rows_by_key(every_scenario)
    assert set(rows) == {(name, "ocm-uvloop") for name in [*CHAT, MEMBERS]}
    for name in CHAT:
        assert_sane_chat(rows[name, "ocm-uvloop"])
    assert_sane_members(rows[MEMBERS, "ocm-uvloop"])
    assert every_scenario["meta"]["smoke"] is True

    rows = rows_by_key(every_relay)
    relays = {"ocm-uvloop", "ocm-asyncio", "bare", "ocm-delivery"}  # no --before-src
    if every_relay["meta"]["generator"] == "C":
        relays.add("c-relay")
    assert {target for (name, target) in rows if name == "room10"} == relays
    for target in relays:
        assert_sane_chat(rows["room10", target])
    for target in ("ocm-uvloop", "ocm-asyncio", "bare", "ocm-delivery"):
        assert_sane_members(rows[MEMBERS, target])
    # The baseline really ran on the plain loop, and uvloop was used where installed.
    assert rows["room10", "ocm-asyncio"]["loop"] == "asyncio"
    uvloop = importlib.util.find_spec("uvloop") is not None and sys.platform != "win32"
    assert rows["room10", "ocm-uvloop"]["loop"] == ("uvloop" if uvloop else "asyncio")


@pytest.mark.timeout(120)
def test_the_python_load_generator_works_too(tmp_path: Path) -> None:
    report = bench(
        tmp_path, "--generator", "python", "--targets", "ocm-uvloop,bare", "--scenarios", "room10"
    )

    assert report["meta"]["generator"] == "Python"
    rows = rows_by_key(report)
    assert set(rows) == {("room10", "ocm-uvloop"), ("room10", "bare")}
    for row in rows.values():
        assert_sane_chat(row)


@pytest.mark.timeout(120)
def test_the_hash_memory_bench_runs() -> None:
    """bench/hash_memory.py in miniature: a few protected joins, sane figures."""
    command = [sys.executable, "-m", "bench.hash_memory", "--joins", "6", "--clients", "3"]
    result = subprocess.run(
        [*command, "--hashes", "1,2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")][1:]
    assert [row.split("|")[1].strip() for row in rows] == ["1", "2"]
    if sys.platform.startswith("linux"):
        for row, hashes in zip(rows, (1, 2), strict=True):
            cells = [cell.strip() for cell in row.split("|")[2:-1]]
            assert float(cells[1]) >= float(cells[0]) > 0  # RSS after >= before
            most, after = (int(n) for n in cells[3].split(" / "))
            assert after <= most <= 1 + hashes  # the main thread and the hash workers


@pytest.mark.timeout(120)
def test_the_cost_of_history_and_message_numbers_is_measured(tmp_path: Path) -> None:
    """The three variants of the cost table in one run: a "before" server from another
    source tree (here this checkout's own src/), version 1 members and delivery members."""
    source = ROOT / "src"
    variants = "ocm-before,ocm-uvloop,ocm-delivery"
    report = bench(
        tmp_path, "--scenarios", "room2", "--targets", variants, "--before-src", str(source)
    )

    rows = rows_by_key(report)
    assert set(rows) == {("room2", t) for t in variants.split(",")}
    for row in rows.values():
        assert_sane_chat(row)
        assert row["accepted"] == 0  # nothing is sent twice without loss
    delivery = rows["room2", "ocm-delivery"]
    assert delivery["delivery_members"] == delivery["members"] == 2
    assert delivery["statuses"] > 0  # its PINGs were answered
    assert rows["room2", "ocm-before"]["delivery_members"] == 0
    assert rows["room2", "ocm-uvloop"]["delivery_members"] == 0
    assert str(source) in report["meta"]["before"]
    (cost,) = report["cost"]
    assert cost["scenario"] == "room2"
    for key in ("v1_vs_before", "delivery_vs_before", "delivery_vs_v1"):
        assert cost[key] > 0
    assert isinstance(cost["met"], bool)
    assert "What history and message numbers cost" in report["stdout"]


def test_an_unknown_before_source_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--before-src", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "--before-src" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.timeout(60)
def test_the_relay_cost_bench_runs(tmp_path: Path) -> None:
    report = bench(
        tmp_path,
        "--before-src",
        str(ROOT / "src"),
        "--text-sizes",
        "100",
        module="bench.relay_cost",
    )
    (row,) = report["rows"]
    for variant in ("before", "v1", "delivery"):
        assert 0 < row[f"{variant}_best_ns"] <= row[f"{variant}_median_ns"]
    assert "| 10 members | 100 |" in report["stdout"]


@pytest.mark.timeout(60)
def test_the_lossy_bench_runs(tmp_path: Path) -> None:
    """bench/lossy.py in miniature: a room of 3 through the fault proxy at 10 % loss,
    delivery members and version 1 members."""
    report = bench(tmp_path, module="bench.lossy")

    rows = {row["mode"]: row for row in report["rows"]}
    assert set(rows) == {"delivery", "v1"}
    for mode, row in rows.items():
        assert row["loss"] == 0.10 and row["members"] == 3
        assert row["granted"] == (3 if mode == "delivery" else 0), mode
        assert row["sent"] > 0 and row["expected"] == row["sent"] * 3, mode
        assert 0 < row["delivered"] <= row["expected"], mode
        assert 0 < row["worst_member_pct"] <= row["delivered_pct"] <= 100, mode
        assert 0 <= row["p50_ms"] <= row["p99_ms"] <= row["max_ms"], mode
        assert row["errors"] == row["overflow"] == row["strange"] == row["closed_early"] == 0
        assert row["up"]["received"] > 0 and row["down"]["received"] > 0, mode
    # The delivery extension's promise: never twice, and the same order for everyone.
    assert rows["delivery"]["duplicates"] == 0
    assert rows["delivery"]["same_order"] and rows["delivery"]["seq_increasing"]
    assert "| delivery | 10% |" in report["stdout"]


@pytest.mark.timeout(60)
def test_the_lossy_bench_runs_quiet_members(tmp_path: Path) -> None:
    """bench/lossy.py --quiet in miniature: 4 silent members at 20 % loss for 2 s, the
    server's idle timeout 0.6 s (3 idle timeouts): none is dropped, and they ping."""
    report = bench(tmp_path, "--quiet", module="bench.lossy")

    (row,) = report["rows"]
    assert row["scenario"] == "quiet" and row["members"] == row["granted"] == 4
    assert row["idle_timeout"] == 0.6 and row["loss"] == 0.2 and row["quiet_s"] >= 2.0
    assert row["dropped"] == 0, (row["closed"], row["timed_out"])
    assert row["moved_to_tcp"] == 0, row["path_changes"]
    # A PING every 0.2 s minus up to 20 %: at least 300 a minute, more with the resends.
    assert 300 <= row["up_per_member_per_min"] < 1200
    assert row["up_dropped"] > 0  # it was lossy
    assert "| 4 | 0.6 | 20% | 5% | 10% | 11 |" in report["stdout"]


@pytest.mark.timeout(60)
def test_the_tunnel_bench_runs(tmp_path: Path) -> None:
    """bench/tunnel.py in miniature: latency for every pair of paths, and throughput to
    UDP, half tunnelled and tunnelled receivers, all on a real server process."""
    report = bench(tmp_path, module="bench.tunnel")

    pairs = {(row["sender"], row["receiver"]): row for row in report["latency"]}
    assert set(pairs) == {(s, r) for s in ("udp", "tunnel") for r in ("udp", "tunnel")}
    for pair, row in pairs.items():
        assert row["samples"] > 0, pair
        assert 0 < row["p50_ms"] <= row["p99_ms"] <= row["max_ms"], pair
    rows = {row["config"]: row for row in report["throughput"]}
    assert set(rows) == {"udp", "half", "tunnel", "everyone"}
    assert [rows[c]["tunnelled_receivers"] for c in ("udp", "half", "tunnel")] == [0, 2, 4]
    assert rows["everyone"]["sender"] == "tunnel" and rows["udp"]["sender"] == "udp"
    for config, row in rows.items():
        assert row["sent"] > 0 and row["deliveries_per_s"] > 0, config
        # Nothing is lost on loopback with a window, and no tunnel is cut.
        assert row["lost"] == row["stalls"] == row["tunnels_lost"] == 0, config
        assert row["errors"] == row["closed"] == 0, config
        if sys.platform.startswith("linux"):
            assert row["server_us_per_copy"] > 0, config
    assert report["meta"]["smoke"] is True
    assert "| UDP | tunnel |" in report["stdout"]


def _server_has_tls() -> bool:
    """Whether this checkout's server speaks TLS (section 5): it then has the flag that
    lets plaintext members in beside encrypted ones."""
    result = subprocess.run(
        [sys.executable, "-m", "ocm", "server", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return "--allow-plaintext" in result.stdout


def _assert_sane_sealed_bench(report: dict[str, Any], kinds: set[str]) -> None:
    latency = {row["kind"]: row for row in report["latency"]}
    throughput = {row["kind"]: row for row in report["throughput"]}
    assert set(latency) == set(throughput) == kinds
    for kind, row in latency.items():
        assert row["samples"] > 0 and row["bad"] == 0, kind
        assert 0 < row["p50_ms"] <= row["p99_ms"] <= row["max_ms"], kind
    for kind, row in throughput.items():
        assert row["sent"] > 0 and row["deliveries_per_s"] > 0 and row["checked"] > 0, kind
        # Nothing is lost on loopback with a window; every CHAT checked opened to one.
        assert row["lost"] == row["stalls"] == row["bad"] == 0, kind
        assert row["errors"] == row["closed"] == 0, kind
        if sys.platform.startswith("linux"):
            assert row["server_us_per_message"] > 0, kind
    assert report["meta"]["smoke"] is True


@pytest.mark.timeout(60)
def test_the_sealed_bench_runs_its_plaintext_half(tmp_path: Path) -> None:
    """bench/sealed.py in miniature, plaintext rooms only: what runs on any server."""
    report = bench(tmp_path, "--kinds", "plain", module="bench.sealed")
    _assert_sane_sealed_bench(report, {"plain"})
    assert report["meta"]["verdict"]["throughput_ratio"] is None  # nothing to compare


@pytest.mark.timeout(90)
def test_the_sealed_bench_compares_sealed_rooms_with_plaintext(tmp_path: Path) -> None:
    """bench/sealed.py in miniature, both kinds, on this checkout's server. Sealed
    members need their keys from a COMPLETE over TLS: a server without TLS must make
    the bench stop at once and say why, not measure half and report it whole."""
    if _server_has_tls():
        report = bench(tmp_path, module="bench.sealed")
        _assert_sane_sealed_bench(report, {"plain", "sealed"})
        assert report["meta"]["verdict"]["throughput_ratio"] > 0
        assert "--allow-plaintext" in report["meta"]["server_flags"]
        return
    result = subprocess.run(
        [sys.executable, "-m", "bench.sealed", "--smoke", "--json", str(tmp_path / "b.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "sealed rooms need a server with TLS" in result.stderr
    assert "--kinds plain" in result.stderr
    assert "latency ..." not in result.stderr  # stopped before measuring anything
    assert not (tmp_path / "b.json").exists()


@pytest.mark.timeout(30)
async def test_the_sealed_benchs_members_go_through_starttls_for_their_keys(
    tmp_path: Path,
) -> None:
    """The half of bench/sealed.py that a server without TLS cannot run, against a TCRP
    listener that does what section 5 says: STARTTLS answered in clear, then TLS 1.3
    (a self-signed key, as the server's own), then a CREATE_ROOM that grants sealed."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "OCM server")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    keys = SealedKeys(bytes(range(8)), bytes(range(32)), b"kid!", bytes(range(32, 64)))
    seen: list[object] = []
    granted = ("delivery", "sealed")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(parse_request(await read_message(reader, TcrpReader())))
        writer.write(encode_reply(Ack(Operation.STARTTLS)) + encode_reply(TlsReady()))
        await writer.drain()
        await writer.start_tls(context)
        seen.append(secure := writer.get_extra_info("ssl_object").version())
        request = parse_request(await read_message(reader, TcrpReader()))
        seen.append(request)
        assert isinstance(request, CreateRoom) and secure == "TLSv1.3"
        admission = Admission(Operation.CREATE_ROOM, "lobby", "tok", 9, "m0", ("m0",))
        admission = replace(admission, features=granted, boot="00" * 8, sealed=keys)
        writer.write(encode_reply(Ack(Operation.CREATE_ROOM, "lobby")) + encode_reply(admission))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        peer = await asyncio.to_thread(enter, "sealed", "lobby", "m0", True, port)
    finally:
        server.close()
    try:
        assert seen == [StartTls(), "TLSv1.3", CreateRoom("lobby", "m0", None, granted)]
        assert peer.token == "tok" and peer.sealer is not None and peer.opener is not None
        sealed = peer.sealer.seal(b"\x00\x02")  # its datagrams: under its Session and key
        assert session_of(sealed) == keys.session
        assert member_opener(keys.key).open(sealed) == b"\x00\x02"
        room = Sealer(keys.room_key, down_prefix(keys.room_key_id))  # the room's: its opener
        assert peer.opener.open(room.seal(b"\x06status")) == b"\x06status"
    finally:
        peer.close()


@pytest.mark.posix
@pytest.mark.skipif(sys.platform == "win32", reason="no redis-server on Windows")
@pytest.mark.timeout(60)
def test_the_cluster_bench_runs(tmp_path: Path) -> None:
    """bench/cluster.py in miniature: the embedded baseline and 2 nodes on a real
    redis-server (tests/redis_kit.py), a fixed rate and one step each, nothing lost."""
    report = bench(tmp_path, module="bench.cluster")

    rows = {row["setup"]: row for row in report["rows"]}
    assert set(rows) == {"embedded, 1 node", "redis, 2 nodes"}
    assert rows["redis, 2 nodes"]["redis_rtt"]["p50_ms"] > 0
    assert "redis_rtt" not in rows["embedded, 1 node"]
    for setup, row in rows.items():
        for run in [row["latency"], *row["steps"]]:
            assert run["unregistered"] == run["errors"] == run["malformed"] == 0, setup
            assert 0 < run["delivered"] <= run["expected"], setup
            assert 0 < run["p50_us"] <= run["p99_us"], setup
        assert row["log_problems"] == [], setup
    assert report["meta"]["smoke"] is True
    assert "Caveat:" in report["stdout"] and "| redis, 2 nodes |" in report["stdout"]
