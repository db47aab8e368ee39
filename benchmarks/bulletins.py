"""What a province's bulletins cost control's reactor each second, while none of them is due.

The desk (control/bulletins.py) polls once a second on the reactor. A province can hold
thousands of approved recurring bulletins (every commune's daily 06:30 and 17:00 readings).
This builds the desk on the in-memory server (tests/integration/memory.py: real storage,
the real desk, the core in this process), stores N approved recurring bulletins, and times
``poll`` over an hour of wall-clock seconds in which no slot is due. The reference, in the
same run: what the poll did before (every bulletin's plan parsed and its slots expanded each
second), on the same rows.

    .venv/bin/python benchmarks/bulletins.py --bulletins 500 2000 5000 --seconds 3600
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine  # noqa: E402
from broadcaster.control.bulletin_plan import Plan  # noqa: E402
from broadcaster.storage.bulletins import BulletinContent, _create  # noqa: E402
from broadcaster.storage.logs import Actor  # noqa: E402
from tests.integration.memory import Server  # noqa: E402

VN = ZoneInfo("Asia/Ho_Chi_Minh")
PLANS = [{"times": ["06:30", "17:00"], "repeat": 2, "gap_s": 10.0},
         {"times": ["06:30"], "weekdays": [0, 2, 4]},
         {"times": ["07:00"], "monthdays": [1, 15]}]


def run(count: int, seconds: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp))
        desk, storage = server.app.bulletins, server.app.storage
        approved = Actor("chair")
        now = server.wall()
        for i in range(count):
            content = BulletinContent(title=f"Bản tin {i}", summary="", body="Thông báo.", category="",
                                      klass="thong-thuong", language="vi", valid_from=None,
                                      valid_until=None, zones=["commune-a"], plan=PLANS[i % len(PLANS)])
            storage.db.run_sync(_create, Actor("editor"), "b-" + uuid.uuid4().hex[:10], content, "approved",
                                now, approved.name)
        desk.load()
        # Start the hour at 08:00 local: no slot of these plans falls in it.
        day = datetime.fromtimestamp(now, VN).date()
        start = datetime(day.year, day.month, day.day, 8, 0, tzinfo=VN).timestamp() + 86400
        desk._poll(start)  # each bulletin's next look is planned once
        began = time.process_time()
        for s in range(seconds):
            desk._poll(start + s)
        ours = (time.process_time() - began) / seconds
        rows = list(desk.active.values())
        began = time.process_time()
        for s in range(min(seconds, 60)):
            for row in rows:
                Plan.parse(row["plan"]).slots(desk.tz, start + s - 600, start + s + 60, asap_at=row["approved_at"])
        before = (time.process_time() - began) / min(seconds, 60)
        return ours, before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bulletins", type=int, nargs="+", default=[500, 2000, 5000])
    parser.add_argument("--seconds", type=int, default=3600)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print("| approved recurring bulletins | poll, ms of reactor per second | before (every plan expanded) | ratio |")
    print("|---|---|---|---|")
    for count in args.bulletins:
        ours, before = run(count, args.seconds)
        print(f"| {count} | {ours * 1000:.3f} | {before * 1000:.1f} | {before / ours:.0f}× less |"
              if ours > 0 else f"| {count} | <0.001 | {before * 1000:.1f} | - |", flush=True)


if __name__ == "__main__":
    main()
