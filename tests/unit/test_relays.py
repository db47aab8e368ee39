"""Relays on air (control/relays.py) on a fake clock: what the worker reports becomes states,
broadcast-log notes and outcomes; runs of one relay share one worker; a refused relay ends its
runs; a worker that dies is started again. The worker is a process in life; here its frames are
fed to the protocol the feed gives the reactor, and the core is a list of the commands sent."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from broadcaster.config import Config
from broadcaster.control.relays import RelayDesk, RelayItem
from broadcaster.core import commands as c

VOV1 = RelayItem("rl-vov1", "VOV1", "https://station.example/vov1/playlist.m3u8", "province")


class Reactor(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[Any] = []

    def spawnProcess(self, protocol: Any, executable: str, args: list[str], env: Any = None) -> Any:  # noqa: N802
        process = Process(protocol, json.loads(args[-1]))
        protocol.transport = process
        self.spawned.append(process)
        return process


@dataclass
class Process:
    protocol: Any
    settings: dict[str, Any]
    pid: int | None = 4242
    signals: list[str] = field(default_factory=list)

    def signalProcess(self, name: str) -> None:  # noqa: N802
        self.signals.append(name)

    def send(self, kind: bytes, payload: bytes) -> None:
        self.protocol.outReceived(struct.pack(">cI", kind, len(payload)) + payload)

    def event(self, name: str, **fields: Any) -> None:
        self.send(b"E", json.dumps({"event": name, **fields}).encode())


class Records:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def open(self, channels: list[Any], kind: str, item: str, by: str, detail: str = "",
             source: str = "local") -> dict[str, Any]:
        entry = {"channels": [ch.id for ch in channels], "kind": kind, "item": item, "by": by, "detail": detail,
                 "source": source, "notes": [], "outcome": None}
        self.entries.append(entry)
        return entry

    def note(self, entry: dict[str, Any], note: str) -> None:
        entry["notes"].append(note)

    def close(self, entry: dict[str, Any], outcome: str) -> None:
        entry["outcome"] = outcome


@dataclass
class Channel:
    id: str


class Core:
    def __init__(self) -> None:
        self.sent: list[c.Command] = []

    def send(self, command: c.Command) -> None:
        self.sent.append(command)


class App:
    def __init__(self) -> None:
        self.config = Config(path="test.yaml")
        self.reactor = Reactor()
        self.core = Core()
        self.records = Records()
        self.tracked: dict[str, Any] = {}

    def wall(self) -> float:
        return 1_764_650_000.0 + self.reactor.seconds()

    def track(self, input_id: str, started: Any, ended: Any) -> None:
        self.tracked[input_id] = ended

    def untrack(self, input_id: str) -> None:
        self.tracked.pop(input_id, None)


def desk_and_app() -> tuple[RelayDesk, App]:
    app = App()
    return RelayDesk(app), app  # type: ignore[arg-type]


def test_upstream_lost_and_back_is_noted_and_audio_goes_to_the_input() -> None:
    desk, app = desk_and_app()
    run = desk.start(VOV1, [Channel("ch-a")], kind="scheduled", title="Tiếp sóng VOV1", by="schedule",  # type: ignore[list-item]
                     priority=20, end_at=app.wall() + 1800)
    worker = app.reactor.spawned[0]
    assert worker.settings["url"] == VOV1.url and worker.settings["limits"]["allow_private"] is False
    added = [cmd for cmd in app.core.sent if isinstance(cmd, c.AddInput)]
    assert added[0].input_id == run.id and added[0].channels == ("ch-a",) and added[0].priority == 20
    worker.event("up", url=VOV1.url)
    worker.send(b"A", bytes(4 * 4800))
    assert [cmd for cmd in app.core.sent if isinstance(cmd, c.LiveAudio)][0].input_id == run.id
    assert run.describe()["state"] == "up"
    app.reactor.advance(600)
    worker.event("down", reason="str.example:443: timed out")
    worker.event("retry", reason="connection refused", in_s=1)
    app.reactor.advance(37)
    worker.event("up", url=VOV1.url)
    entry = app.records.entries[0]
    assert len(entry["notes"]) == 2, entry["notes"]
    assert "upstream lost: str.example:443: timed out" in entry["notes"][0]
    assert "upstream back after 37 s" in entry["notes"][1]
    assert run.describe()["reconnects"] == 2
    app.reactor.advance(1800)
    assert entry["outcome"] == "completed" and not desk.runs
    assert worker.signals == ["TERM"], "the last run's end stops the worker"
    assert any(isinstance(cmd, c.RemoveInput) and cmd.input_id == run.id for cmd in app.core.sent)


def test_runs_of_one_relay_share_its_worker() -> None:
    desk, app = desk_and_app()
    first = desk.start(VOV1, [Channel("ch-a")], kind="relay", title="VOV1", by="op-a",  # type: ignore[list-item]
                       priority=30, end_at=None)
    second = desk.start(VOV1, [Channel("ch-b")], kind="relay", title="VOV1", by="op-b",  # type: ignore[list-item]
                        priority=30, end_at=None)
    assert len(app.reactor.spawned) == 1
    worker = app.reactor.spawned[0]
    worker.send(b"A", bytes(400))
    assert {cmd.input_id for cmd in app.core.sent if isinstance(cmd, c.LiveAudio)} == {first.id, second.id}
    first.stop()
    assert worker.signals == [] and second.describe()["state"] == "connecting"
    second.stop()
    assert worker.signals == ["TERM"] and not desk.feeds


def test_a_refused_relay_ends_its_runs_as_failed_with_the_reason() -> None:
    desk, app = desk_and_app()
    run = desk.start(VOV1, [Channel("ch-a")], kind="relay", title="VOV1", by="op-a",  # type: ignore[list-item]
                     priority=30, end_at=None)
    worker = app.reactor.spawned[0]
    worker.event("refused", reason="'station.example' resolves to 10.0.0.5, which is not a public address")
    worker.protocol.processEnded(Failure(ProcessTerminated(exitCode=3)))
    entry = app.records.entries[0]
    assert entry["outcome"] == "failed" and "not a public address" in entry["notes"][0]
    assert run.ended and not desk.runs
    again = desk.start(VOV1, [Channel("ch-a")], kind="relay", title="VOV1", by="op-a",  # type: ignore[list-item]
                       priority=30, end_at=None)
    assert len(app.reactor.spawned) == 2 and again.feed is not run.feed, "a refused feed is not reused"


def test_a_worker_that_dies_is_started_again_with_a_note() -> None:
    desk, app = desk_and_app()
    desk.start(VOV1, [Channel("ch-a")], kind="relay", title="VOV1", by="op-a",  # type: ignore[list-item]
               priority=30, end_at=None)
    worker = app.reactor.spawned[0]
    worker.event("up", url=VOV1.url)
    worker.protocol.processEnded(Failure(ProcessDone(None)))
    assert len(app.reactor.spawned) == 1
    app.reactor.advance(1.0)
    assert len(app.reactor.spawned) == 2, "started again after a second"
    app.reactor.spawned[1].event("up", url=VOV1.url)
    notes = app.records.entries[0]["notes"]
    assert "worker exited" in notes[0] and "upstream back" in notes[1], notes


def test_a_worker_sending_nonsense_is_killed_not_believed() -> None:
    desk, app = desk_and_app()
    desk.start(VOV1, [Channel("ch-a")], kind="relay", title="VOV1", by="op-a",  # type: ignore[list-item]
               priority=30, end_at=None)
    worker = app.reactor.spawned[0]
    worker.protocol.outReceived(struct.pack(">cI", b"A", 1 << 30))
    assert worker.signals == ["KILL"]


def test_a_scheduled_relay_opens_its_entry_at_its_start_time() -> None:
    desk, app = desk_and_app()
    desk.start(VOV1, [Channel("ch-a")], kind="scheduled", title="VOV1", by="schedule",  # type: ignore[list-item]
               priority=20, end_at=app.wall() + 65, start_at=app.reactor.seconds() + 5)
    app.reactor.spawned[0].event("retry", reason="connection refused", in_s=1)
    assert app.records.entries == [], "not on air yet"
    app.reactor.advance(5)
    entry = app.records.entries[0]
    assert "cannot reach the upstream" in entry["notes"][0], "what happened before the start is kept"


def test_the_public_view_has_no_url_or_reason_and_workers_are_capped() -> None:
    from dataclasses import replace

    import pytest

    from broadcaster.control.relays import RelaysBusy

    desk, app = desk_and_app()
    app.config = replace(app.config, relay=replace(app.config.relay, max_workers=1))
    run = desk.start(VOV1, [Channel("ch-a")], kind="relay", title="VOV1", by="op-a",  # type: ignore[list-item]
                     priority=30, end_at=None)
    app.reactor.spawned[0].event("down", reason="'station.example' resolves to 10.0.0.5")
    assert "url" not in run.describe(detail=False) and "reason" not in run.describe(detail=False)
    assert "10.0.0.5" in run.describe()["reason"]
    other = RelayItem("rl-vov2", "VOV2", "https://station.example/vov2/playlist.m3u8", "province")
    with pytest.raises(RelaysBusy, match="max_workers"):
        desk.start(other, [Channel("ch-b")], kind="relay", title="VOV2", by="op-b",  # type: ignore[list-item]
                   priority=30, end_at=None)
    # The same relay again is no new worker: not refused.
    desk.start(VOV1, [Channel("ch-b")], kind="relay", title="VOV1", by="op-b",  # type: ignore[list-item]
               priority=30, end_at=None)
    assert len(app.reactor.spawned) == 1
