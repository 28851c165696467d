"""Parsing speed of the Asterisk CDR parser: N Master.csv lines generated in memory, then parsed.

Usage: .venv/bin/python bench/parse_cdrs.py [--records 1000000] [--timezone UTC] [--bad-every 0]
Measures parsing only (bytes lines -> UsageEvent / RejectedLine), as a file would be read: the lines
come from an in-memory binary stream. Prints one final JSON line: records, events, rejected,
seconds, cpu_seconds, parse_records_per_cpu_s and parse_records_per_s (wall clock; on a shared
machine the CPU figure is the steadier one)."""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from mediation import asterisk  # noqa: E402
from mediation.records import UsageEvent  # noqa: E402

DISPOSITIONS = ("ANSWERED", "ANSWERED", "ANSWERED", "NO ANSWER", "BUSY")


def generate(records: int, bad_every: int) -> bytes:
    """Realistic Master.csv lines: 12-digit subscribers, quoted clid with a comma, a month of start times."""
    out = io.StringIO()
    for n in range(records):
        src = f"49151{n % 10_000_000:08d}"
        dst = f"4930{(n * 7919) % 10_000_000:07d}"
        day, second = 1 + n % 28, (n * 37) % 86_400
        start = f"2024-03-{day:02d} {second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}"
        disposition = DISPOSITIONS[n % len(DISPOSITIONS)]
        answered = disposition == "ANSWERED"
        answer = f'"{start}"' if answered else ""  # cdr_csv leaves the answer time out of unanswered calls
        billsec = (n % 600) if answered else 0
        uniqueid = f"{1709251200 + n // 100}.{n}"
        if bad_every and n % bad_every == 0:
            start = "2024-02-30 10:00:00"  # a rejected line, to measure the reject path too
        out.write(f'"","{src}","{dst}","from-internal","""Meier, Hans"" <{src}>","PJSIP/{src}-0001a2b3","PJSIP/telekom-0001a2b4",'
                  f'"Dial","PJSIP/{dst}@telekom,60,tT","{start}",{answer},"{start}",'
                  f'{billsec + 5},{billsec},"{disposition}","DOCUMENTATION","{uniqueid}",""\n')
    return out.getvalue().encode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--timezone", default="UTC")
    parser.add_argument("--bad-every", type=int, default=0, help="make every Nth line invalid (0: none)")
    args = parser.parse_args()

    data = generate(args.records, args.bad_every)
    stream = io.BytesIO(data)
    events = rejected = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    for item in asterisk.parse(stream, source_file="bench", timezone=args.timezone):
        if item.__class__ is UsageEvent:
            events += 1
        else:
            rejected += 1
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print(f"parsed {args.records} lines ({len(data) / 1e6:.0f} MB) in {elapsed:.2f} s", file=sys.stderr)
    print(json.dumps({"records": args.records, "events": events, "rejected": rejected, "timezone": args.timezone,
                      "seconds": round(elapsed, 3), "cpu_seconds": round(cpu, 3),
                      "parse_records_per_cpu_s": round(args.records / cpu), "parse_records_per_s": round(args.records / elapsed)}))


if __name__ == "__main__":
    main()
