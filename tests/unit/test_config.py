"""Configuration: the demo loads, and every error names file, key path and expectation."""

from pathlib import Path

import pytest

from broadcaster.cli import main
from broadcaster.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = """
zones:
  - id: p
    children:
      - id: c1
        children: [{id: h1, kind: hamlet}]
channels:
  - {id: ch1, zone: c1}
loudspeakers:
  - {id: s1, zone: h1, channel: ch1, key: 0123456789abcdef}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "b.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_demo_configuration_loads() -> None:
    config = load_config(ROOT / "conf" / "broadcaster.yaml")
    assert [c.id for c in config.channels] == ["xa-an-binh", "xa-tan-hoa"]
    assert all(c.loop is not None and c.loop.is_file() for c in config.channels)
    assert all(c.multicast is None for c in config.channels), "the demo must not send to multicast groups"
    zones = {z.id: z for z in config.zones}
    assert zones["an-binh-ap-1"].parent == "xa-an-binh"
    assert zones["xa-an-binh"].parent == "vinh-long"


def test_an_edge_section_names_its_origin_and_links(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL + "edge: {origin: '127.0.0.1:5004', channels: "
                               "[{channel: ch1, device: edge-1, key: 0123456789abcdef}]}\n"))
    assert config.edge.origin == ("127.0.0.1", 5004)
    assert [(link.channel, link.device, link.origin_channel) for link in config.edge.links] == [
        ("ch1", "edge-1", "ch1")]


def test_minimal_configuration_has_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    assert config.audio.frame_ms == 20 and config.audio.frame_samples == 960
    assert config.server.udp_port == 5004
    assert config.speakers.expiry_s == 15.0
    assert config.loudspeakers[0].channel == "ch1"


@pytest.mark.parametrize("patch, key, expected", [
    ("audio: {frame_ms: 25}", "audio.frame_ms", "expected one of (20, 40, 60)"),
    ("audio: {bitrate: fast}", "audio.bitrate", "expected int"),
    ("audio: {complexity: 11}", "audio.complexity", "from 0 to 10"),
    ("server: {http_port: 70000}", "server.http_port", "from 0 to 65535"),
    ("server: {host: example.org}", "server.host", "IP address"),
    ("servre: {}", "servre", "unknown key"),
    ("speakers: {keepalive_s: 0}", "speakers.keepalive_s", "from 0.5"),
    ("server: {core_processes: 0}", "server.core_processes", "from 1 to 64"),
    ("http: {keep_burst: sometimes}", "http.keep_burst", "expected bool"),
    ("edge: {origin: 'origin.example:5004', channels: [{channel: ch1, device: e1, key: 0123456789abcdef}]}",
     "edge.origin", "IP:PORT"),
    ("edge: {origin: '127.0.0.1:5004', channels: [{channel: ch9, device: e1, key: 0123456789abcdef}]}",
     "edge.channels[0].channel", "no channel with id 'ch9'"),
    ("edge: {origin: '127.0.0.1:5004', channels: [{channel: ch1, device: e1, key: short}]}",
     "edge.channels[0].key", "at least 16 bytes"),
    ("edge: {origin: '127.0.0.1:5004'}", "edge.channels", "at least one channel"),
])
def test_bad_values_name_the_key(tmp_path: Path, patch: str, key: str, expected: str) -> None:
    path = write(tmp_path, MINIMAL + patch + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.file == str(path)
    assert info.value.key == key
    assert expected in info.value.message


@pytest.mark.parametrize("text, key, expected", [
    (MINIMAL.replace("zone: c1}", "zone: nowhere}"), "channels[0].zone", "no zone with id 'nowhere'"),
    (MINIMAL.replace("channel: ch1", "channel: ch9"), "loudspeakers[0].channel", "no channel"),
    (MINIMAL.replace("0123456789abcdef", "short"), "loudspeakers[0].key", "at least 16 bytes"),
    (MINIMAL.replace("{id: ch1, zone: c1}", "{id: ch1, zone: c1, multicast: {group: 10.0.0.1}}"),
     "channels[0].multicast.group", "not a multicast address"),
    (MINIMAL.replace("{id: ch1, zone: c1}", "{id: ch1, zone: c1, loop: nope.ogg}"),
     "channels[0].loop", "does not exist"),
    (MINIMAL + "  - {id: s1, zone: h1, channel: ch1, key: 0123456789abcdef}\n",
     "loudspeakers[1].id", "duplicate"),
    (MINIMAL.replace("id: p", "id: 'bad id!'"), "zones[0].id", "expected an id"),
    ("channels: {a: 1}", "channels", "expected a list"),
    ("key: [unclosed", "line 1, column 15", "not valid YAML"),
])
def test_structural_errors(tmp_path: Path, text: str, key: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert info.value.key == key
    assert expected in info.value.message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(ROOT / "conf" / "broadcaster.yaml")]) == 0
    assert "ok (6 zones, 2 channels, 4 loudspeakers)" in capsys.readouterr().out
    bad = write(tmp_path, MINIMAL + "audio: {frame_ms: 25}\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["check-config", str(bad)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "audio.frame_ms" in err


def test_relay_settings_are_checked_by_key(tmp_path: Path) -> None:
    from broadcaster.config import parse_config

    good = parse_config({"relay": {"allow_private": True, "max_redirects": 2}}, file="b.yaml", base_dir=tmp_path)
    assert good.relay.allow_private and good.relay.max_redirects == 2 and good.relay.stall_timeout_ms == 1000
    for relay, key in (({"max_redirects": 99}, "relay.max_redirects"),
                       ({"allow_private": "yes"}, "relay.allow_private"),
                       ({"proxy": "x"}, "relay.proxy"), ({"max_buffer_s": 0}, "relay.max_buffer_s")):
        with pytest.raises(ConfigError) as info:
            parse_config({"relay": relay}, file="b.yaml", base_dir=tmp_path)
        assert info.value.key == key and "b.yaml" in str(info.value), (relay, str(info.value))
