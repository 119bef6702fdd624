"""Walk the audit chain and say whether it is intact.

Exit status 0 when every event is present, linked and correctly signed;
1 with the first broken event on stderr otherwise. An auditor can verify with
a key file of their own (`--key-file`), e.g. the key from the vault rather
than the one the running portal was given.

On PostgreSQL the trail is read in `--workers` processes at once (contiguous
seq ranges, one connection and one shared snapshot each), which reports the
same first broken event as one process walking it from the start.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from portal.core.audit_chain import verify_chain
from portal.core.jobs import store_verdict

MAX_DEFAULT_WORKERS = 4


def default_workers() -> int:
    """One process per CPU, at most four: PostgreSQL needs CPU of its own too."""
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_WORKERS))


class Command(BaseCommand):
    help = "Verify the audit trail's HMAC chain; exit 1 at the first broken event."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--key-file",
            type=Path,
            help="Read the HMAC key from this file instead of AUDIT_KEY (final newline ignored).",
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=default_workers(),
            help="Processes verifying seq ranges in parallel on PostgreSQL "
            f"(default: number of CPUs, at most {MAX_DEFAULT_WORKERS}; 1 walks sequentially).",
        )
        parser.add_argument(
            "--record",
            action="store_true",
            help="Store the verdict for the audit page, as the scheduled check does "
            "(and alert the superusers on a break not seen before).",
        )

    def handle(self, *args, key_file: Path | None = None, workers: int = 1, **options) -> None:
        if workers < 1:
            raise CommandError(f"--workers must be at least 1 (got {workers}).")
        key = None
        if key_file is not None:
            try:
                key = key_file.read_bytes().rstrip(b"\r\n")
            except OSError as exc:
                raise CommandError(f"--key-file {key_file}: {exc.strerror}") from None
            if not key:
                raise CommandError(f"--key-file {key_file} is empty.")
        started = timezone.now()
        check = verify_chain(key=key, workers=workers)
        if options.get("record"):
            store_verdict(check, started)
        if options["verbosity"] >= 2:
            self.stdout.write(f"read by {check.workers} process(es)")
        if check.ok:
            if check.checked:
                self.stdout.write(
                    f"audit chain intact: {check.checked} events, "
                    f"last #{check.last_seq} at {check.last_at.isoformat()}"
                )
            else:
                self.stdout.write("audit chain intact: 0 events")
            return
        self.stderr.write(
            f"audit chain BROKEN at event #{check.broken_seq}: {check.reason} "
            f"({check.checked} events verified before it)"
        )
        sys.exit(1)
