"""The `broadcaster` command: serve, check-config, speaker."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from broadcaster.config import Config, ConfigError, load_config

DEFAULT_CONFIG = Path("conf/broadcaster.yaml")


def _default_config() -> Path:
    if DEFAULT_CONFIG.is_file():
        return DEFAULT_CONFIG
    # An editable install run from elsewhere still finds the demo next to the package.
    beside = Path(__file__).resolve().parents[1] / DEFAULT_CONFIG
    return beside if beside.is_file() else DEFAULT_CONFIG


def _load(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_serve(args: argparse.Namespace) -> int:
    config = _load(args.config or _default_config())
    from twisted.internet import reactor

    from broadcaster.server import BroadcastServer

    server = BroadcastServer(config, reactor)
    try:
        http_port, udp_port = server.start(args.http_port, args.udp_port)
    except Exception as exc:  # a port in use, an unreadable programme file
        print(f"cannot start: {exc}", file=sys.stderr)
        return 1
    host = config.server.host
    print(f"listening http={host}:{http_port} udp={host}:{udp_port}", flush=True)
    logging.getLogger("broadcaster").info(
        "%d channels; listen with: ffplay http://%s:%d/channels/%s.ogg", len(server.channels),
        "127.0.0.1" if host in ("0.0.0.0", "::") else host, http_port,
        next(iter(server.channels), "CHANNEL"))
    reactor.addSystemEventTrigger("before", "shutdown", server.stop)
    reactor.run()
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.file)
    print(f"{args.file}: ok ({len(config.zones)} zones, {len(config.channels)} channels, "
          f"{len(config.loudspeakers)} loudspeakers)")
    return 0


def cmd_speaker(args: argparse.Namespace) -> int:
    from broadcaster.speaker_client import run_speaker

    stats = run_speaker(device=args.device, key=args.key.encode("utf-8"), channel=args.channel,
                        server=args.server, out=args.out, duration_s=args.duration,
                        target_delay_s=args.delay)
    print(json.dumps(stats), flush=True)
    return 0 if stats.get("acked") else 1


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("a port is 0..65535 (0 = any free port)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="broadcaster", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("-c", "--config", type=Path, help=f"configuration file (default {DEFAULT_CONFIG})")
    serve.add_argument("--http-port", type=_port, help="override server.http_port (0 = any free port)")
    serve.add_argument("--udp-port", type=_port, help="override server.udp_port (0 = any free port)")
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check-config", help="validate a configuration file without starting")
    check.add_argument("file", type=Path)
    check.set_defaults(func=cmd_check_config)

    speaker = sub.add_parser("speaker", help="run the reference loudspeaker client")
    speaker.add_argument("--device", required=True, help="device id as registered on the server")
    speaker.add_argument("--key", required=True, help="the device's secret key")
    speaker.add_argument("--channel", required=True)
    speaker.add_argument("--server", required=True, help="HOST:PORT of the server's UDP port")
    speaker.add_argument("--out", type=Path, help="write the decoded audio to this WAV file")
    speaker.add_argument("--duration", type=float, help="stop after this many seconds (default: run until killed)")
    speaker.add_argument("--delay", type=float, default=0.12, help="jitter-buffer target delay in seconds")
    speaker.set_defaults(func=cmd_speaker)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
