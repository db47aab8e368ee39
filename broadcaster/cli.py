"""The `broadcaster` command: serve, check-config, speaker."""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from broadcaster.config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from broadcaster.control.auth import ZoneTree
    from broadcaster.storage import Storage

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
    import time

    from twisted.internet import reactor

    from broadcaster.control.coreproc import CoreProcess, udp_socket
    from broadcaster.core.commands import CoreSettings

    # Audio time must not jump when NTP (or an operator) steps the wall clock:
    # every delayed call and the frame clock then run on the monotonic clock.
    reactor.seconds = time.monotonic  # type: ignore[method-assign]
    from broadcaster.storage.lock import Held, hold

    try:
        lock = hold(config.storage.path)  # noqa: F841 (held while this process serves)
    except (Held, OSError) as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 1
    host = config.server.host
    try:
        udp = udp_socket(host, config.server.udp_port if args.udp_port is None else args.udp_port)
    except OSError as exc:
        print(f"cannot start: UDP port: {exc}", file=sys.stderr)
        return 1
    # Control's threads (storage pools, decoding, command rounds) hand work back to the reactor
    # through the GIL; a 1 ms switch interval instead of 5 keeps those hand-offs, and so the
    # API's latency, short while a report or a listing is being built.
    sys.setswitchinterval(0.001)
    # The audio core boots in its own process while control imports the rest.
    core = CoreProcess(reactor)
    core.start(CoreSettings.of(config), udp)

    from broadcaster.app import BroadcastServer

    server = BroadcastServer(config, reactor, core=core, udp=udp)
    try:
        http_port, udp_port = server.start(args.http_port, args.udp_port)
    except Exception as exc:  # a port in use, an unreadable programme file
        print(f"cannot start: {exc}", file=sys.stderr)
        return 1

    def ready(_: object) -> None:
        # Only once the core has built every channel: a listener arriving now gets a whole stream.
        print(f"listening http={host}:{http_port} udp={host}:{udp_port}", flush=True)
        logging.getLogger("broadcaster").info(
            "%d channels; listen with: ffplay http://%s:%d/channels/%s.ogg", len(server.channels),
            "127.0.0.1" if host in ("0.0.0.0", "::") else host, http_port,
            next(iter(server.channels), "CHANNEL"))

    server.ready.addCallback(ready)
    reactor.addSystemEventTrigger("before", "shutdown", server.stop)
    reactor.run()
    if server.core_failed:
        print("the audio core's process ended; the server stopped (see the log above)", file=sys.stderr)
        return 3
    return 0


def _storage(args: argparse.Namespace) -> tuple[Config, Storage]:
    from broadcaster.storage import KeySealer, Storage, StorageError, seed_from_config

    config = _load(args.config or _default_config())
    try:
        storage = Storage(config.storage.path, KeySealer.from_file(config.storage.secret_file))
    except StorageError as exc:
        print(f"storage error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if storage.is_empty():
        seed_from_config(storage, config)
    return config, storage


def cmd_user_add(args: argparse.Namespace) -> int:
    from broadcaster.control.auth import PERMISSIONS, ROLES
    from broadcaster.storage import Conflict

    config, storage = _storage(args)
    if args.role not in ROLES:
        print(f"--role must be one of {', '.join(ROLES)}", file=sys.stderr)
        return 2
    wrong = [p for p in args.permission if p not in PERMISSIONS]
    if wrong:
        print(f"--permission {wrong[0]!r}: must be one of {', '.join(PERMISSIONS)}", file=sys.stderr)
        return 2
    if args.role != "admin" and not args.zone:
        print("an operator or viewer needs at least one --zone", file=sys.stderr)
        return 2
    known = {r["id"] for r in storage.zones.all_sync()}
    unknown = [z for z in args.zone if z not in known]
    if unknown:
        print(f"no zone {unknown[0]!r}; zones: {', '.join(sorted(known))}", file=sys.stderr)
        return 2
    password = _read_password(args.name) if args.password else None
    if args.password and password is None:
        return 2
    try:
        storage.add_user(args.name, args.role, args.zone, password, permissions=tuple(args.permission))
    except Conflict:
        print(f"a user named {args.name!r} already exists", file=sys.stderr)
        return 1
    print(f"user {args.name} ({args.role}{': ' + ', '.join(args.zone) if args.zone else ''}) added")
    if args.token:
        print(storage.new_token(args.name, "cli", config.api.token_days))
    storage.close()
    return 0


def _read_password(name: str) -> str | None:
    """Prompted on a terminal, else the first line of stdin; None (said why) if shorter than 8."""
    import getpass

    prompt = f"password for {name}: "
    password = getpass.getpass(prompt) if sys.stdin.isatty() else sys.stdin.readline().strip()
    if len(password) < 8:
        print("a password needs at least 8 characters", file=sys.stderr)
        return None
    return password


def cmd_user_password(args: argparse.Namespace) -> int:
    """A new password from the server's own shell: the way back in for a locked-out admin. Every
    console session of the user ends; with --temporary it must be changed at the next sign-in."""
    password = _read_password(args.name)
    if password is None:
        return 2
    _, storage = _storage(args)
    try:
        found = storage.users.set_password_sync(args.name, password, must_change=args.temporary)
    finally:
        storage.close()
    if not found:
        print(f"no user named {args.name!r}", file=sys.stderr)
        return 1
    print(f"password of {args.name} set" + (" (to be changed at the next sign-in)" if args.temporary else ""))
    return 0


def cmd_user_token(args: argparse.Namespace) -> int:
    from broadcaster.storage import Conflict

    config, storage = _storage(args)
    days = args.days if args.days is not None else config.api.token_days
    if not 1 <= days <= 3650:
        print("--days must be from 1 to 3650", file=sys.stderr)
        return 2
    try:
        row = storage.users.new_token_sync(args.name, args.label, days)
    except Conflict as exc:
        print(str(exc).strip('"'), file=sys.stderr)
        return 1
    finally:
        storage.close()
    print(row["token"])
    print(f"{row['id']}: expires {_when(row['expires_at'])}", file=sys.stderr)
    return 0


def _when(at: float | None) -> str:
    import datetime

    if at is None:
        return "never"
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def cmd_user_tokens(args: argparse.Namespace) -> int:
    _, storage = _storage(args)
    page = storage.users.tokens_sync(args.name)
    storage.close()
    print(f"{'id':<17} {'user':<16} {'created':<20} {'expires':<20} {'last used':<20} label")
    for t in page.items:
        print(f"{t['id']:<17} {t['user']:<16} {_when(t['created_at']):<20} {_when(t['expires_at']):<20} "
              f"{_when(t['last_used_at']) if t['last_used_at'] else '-':<20} {t['label']}")
    return 0


def cmd_user_revoke(args: argparse.Namespace) -> int:
    _, storage = _storage(args)
    revoked = storage.users.revoke_token_sync(args.id)
    storage.close()
    if not revoked:
        print(f"no token {args.id!r} (see: broadcaster user tokens)", file=sys.stderr)
        return 1
    print(f"token {args.id} revoked")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import time

    from broadcaster.api.call import ApiError, time_query
    from broadcaster.control.auth import ZoneTree
    from broadcaster.storage.reports import report_csv

    if args.year is not None and (args.since or args.until):
        print("--year gives the period itself: leave out --from and --to", file=sys.stderr)
        return 2
    if args.year is not None and not 2000 <= args.year <= 2100:
        print(f"--year must be from 2000 to 2100, got {args.year}", file=sys.stderr)
        return 2
    if args.year is None and args.format == "xlsx":
        print("--format xlsx is for the yearly report: add --year", file=sys.stderr)
        return 2
    config, storage = _storage(args)
    zones = ZoneTree.from_rows(storage.zones.all_sync())
    zone = args.zone or next((z for z, p in zones.parents.items() if p is None), "")
    if zone not in zones:
        print(f"no zone {zone!r}", file=sys.stderr)
        return 2
    now = time.time()
    if args.year is not None:
        return _yearly(args, config, storage, zones, zone, now)
    try:
        start = time_query({"from": args.since or ""}, "from", now - 365 * 86400)
        end = time_query({"to": args.until or ""}, "to", now)
    except ApiError as exc:
        print(exc.message, file=sys.stderr)
        return 2
    result = storage.reports.broadcast_sync(zones, zone, start, end, now)
    storage.close()
    return _write(report_csv(result) if args.format == "csv" else json.dumps(result, ensure_ascii=False, indent=1),
                  args.output)


def _write(data: str | bytes, output: Path | None) -> int:
    """A report to stdout (text), or to a file (text or the XLSX workbook)."""
    if output is None:
        assert isinstance(data, str), "a workbook always goes to a file"
        print(data, end="")
        return 0
    try:
        if isinstance(data, bytes):
            output.write_bytes(data)
        else:
            output.write_text(data, encoding="utf-8")
    except OSError as exc:
        print(f"cannot write {output}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def _yearly(args: argparse.Namespace, config: Config, storage: Storage, zones: ZoneTree, zone: str,
            now: float) -> int:
    """``broadcaster report --year``: the yearly report to stdout, or to --output (an XLSX always
    goes to a file: report-YEAR.xlsx unless --output names one)."""
    from broadcaster.control.report_files import yearly_csv, yearly_xlsx

    result = storage.reports.yearly_sync(zones, zone, args.year, config.schedule.timezone,
                                         config.reports.year_starts, now)
    storage.close()
    data: str | bytes
    if args.format == "xlsx":
        data = yearly_xlsx(result)
    elif args.format == "csv":
        data = yearly_csv(result)
    else:
        data = json.dumps(result, ensure_ascii=False, indent=1) + "\n"
    output = args.output or (Path(f"report-{args.year}.xlsx") if args.format == "xlsx" else None)
    if output is None:
        return _write(data, None)
    if _write(data, output):
        return 1
    print(f"wrote {output} (the report year {args.year}: {result['first_day']} to {result['last_day']}, "
          f"{len(result['communes'])} communes)", file=sys.stderr)
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.file)
    print(f"{args.file}: ok ({len(config.zones)} zones, {len(config.channels)} channels, "
          f"{len(config.loudspeakers)} loudspeakers)")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    from broadcaster.storage.backup import BackupError, take

    config = _load(args.config or _default_config())
    s = config.storage
    try:
        summary = take(s.path, s.media_dir, s.secret_file, args.directory, progress=lambda line: print(line))
    except (BackupError, OSError, sqlite3.Error) as exc:
        print(f"backup failed: {exc}", file=sys.stderr)
        return 1
    print(f"backup in {summary.directory}: {summary.files} files, {summary.bytes / 1e6:.1f} MB")
    if summary.missing:
        print(f"warning: {len(summary.missing)} media rows had no file (deleted while the backup ran?): "
              f"{', '.join(summary.missing[:10])}", file=sys.stderr)
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from broadcaster.storage.backup import BackupError, restore

    config = _load(args.config or _default_config())
    s = config.storage
    try:
        summary = restore(args.directory, s.path, s.media_dir, s.secret_file, force=args.force,
                          progress=lambda line: print(line))
    except (BackupError, OSError, sqlite3.Error) as exc:
        print(f"restore failed: {exc}", file=sys.stderr)
        return 1
    print(f"restored {summary.files} files into {s.path.parent} and {s.media_dir}: "
          f"{', '.join(f'{n} {t}' for t, n in summary.rows.items())}")
    return 0


def cmd_speaker(args: argparse.Namespace) -> int:
    from broadcaster.speaker.client import run_speaker

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
    parser.add_argument("--log-format", choices=("text", "json"), default=None,
                        help="text (default) or json: one JSON object per line, for a log shipper")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("-c", "--config", type=Path, help=f"configuration file (default {DEFAULT_CONFIG})")
    serve.add_argument("--http-port", type=_port, help="override server.http_port (0 = any free port)")
    serve.add_argument("--udp-port", type=_port, help="override server.udp_port (0 = any free port)")
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check-config", help="validate a configuration file without starting")
    check.add_argument("file", type=Path)
    check.set_defaults(func=cmd_check_config)

    backup = sub.add_parser("backup", help="back up the database, media library and secret into a new directory "
                            "(while the server runs)")
    backup.add_argument("directory", type=Path)
    backup.set_defaults(func=cmd_backup)
    restore = sub.add_parser("restore", help="restore a backup into the configured storage (server stopped)")
    restore.add_argument("directory", type=Path)
    restore.add_argument("--force", action="store_true", help="replace a database that holds data, or another secret")
    restore.set_defaults(func=cmd_restore)
    for p in (backup, restore):
        p.add_argument("-c", "--config", type=Path, help=f"configuration file (default {DEFAULT_CONFIG})")

    user = sub.add_parser("user", help="manage users, passwords and API tokens")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    add = user_sub.add_parser("add", help="add a user")
    add.add_argument("name")
    add.add_argument("--role", required=True, help="admin, operator or viewer")
    add.add_argument("--zone", action="append", default=[], help="a zone the user may act in (repeat)")
    add.add_argument("--permission", action="append", default=[],
                     help="grant bulletin.create or bulletin.approve beyond the role's (repeat)")
    add.add_argument("--password", action="store_true",
                     help="also set a password (prompted; for the console and studio ingest)")
    add.add_argument("--token", action="store_true", help="print a new API token for the user")
    add.set_defaults(func=cmd_user_add)
    token = user_sub.add_parser("token", help="print a new API token for a user")
    token.add_argument("name")
    token.add_argument("--label", default="", help="a note stored with the token")
    token.add_argument("--days", type=int, help="lifetime in days (default: api.token_days, 90)")
    token.set_defaults(func=cmd_user_token)
    tokens = user_sub.add_parser("tokens", help="list API tokens (ids, expiry, last use; never secrets)")
    tokens.add_argument("name", nargs="?", help="one user's (default: everyone's)")
    tokens.set_defaults(func=cmd_user_tokens)
    revoke = user_sub.add_parser("revoke", help="revoke an API token by its id (tok_...)")
    revoke.add_argument("id")
    revoke.set_defaults(func=cmd_user_revoke)
    passwd = user_sub.add_parser("password", help="set a user's password (prompted, or stdin's first line); "
                                 "their console sessions end")
    passwd.add_argument("name")
    passwd.add_argument("--temporary", action="store_true", help="the user must change it at the next sign-in")
    passwd.set_defaults(func=cmd_user_password)
    for p in (add, token, tokens, revoke, passwd):
        p.add_argument("-c", "--config", type=Path, help=f"configuration file (default {DEFAULT_CONFIG})")

    report = sub.add_parser("report", help="the yearly report (--year), or hours on air and loudspeaker "
                                           "availability per commune over --from/--to")
    report.add_argument("-c", "--config", type=Path, help=f"configuration file (default {DEFAULT_CONFIG})")
    report.add_argument("--zone", help="zone to report on (default: the province)")
    report.add_argument("--year", type=int, help="the yearly report of this report year: 2025 is 15/12/2024 to "
                                                 "14/12/2025 (reports.year_starts); docs/reports.md")
    report.add_argument("--from", dest="since", help="start, ISO 8601 or Unix seconds (default: a year ago)")
    report.add_argument("--to", dest="until", help="end, ISO 8601 or Unix seconds (default: now)")
    report.add_argument("--format", choices=["json", "csv", "xlsx"], default="csv",
                        help="csv (default), json, or xlsx (with --year; written to report-YEAR.xlsx "
                             "unless --output)")
    report.add_argument("--output", type=Path, help="write to this file instead of stdout")
    report.set_defaults(func=cmd_report)

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
    from broadcaster.logfmt import configure

    configure("control", logging.DEBUG if args.verbose else logging.INFO, args.log_format)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
