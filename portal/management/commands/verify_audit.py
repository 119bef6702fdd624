"""Walk the audit chain and say whether it is intact.

Exit status 0 when every event is present, linked and correctly signed;
1 with the first broken event on stderr otherwise. An auditor can verify with
a key file of their own (`--key-file`), e.g. the key from the vault rather
than the one the running portal was given.
"""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from portal.audit import verify_chain


class Command(BaseCommand):
    help = "Verify the audit trail's HMAC chain; exit 1 at the first broken event."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--key-file",
            type=Path,
            help="Read the HMAC key from this file instead of AUDIT_KEY (final newline ignored).",
        )

    def handle(self, *args, key_file: Path | None = None, **options) -> None:
        key = None
        if key_file is not None:
            try:
                key = key_file.read_bytes().rstrip(b"\r\n")
            except OSError as exc:
                raise CommandError(f"--key-file {key_file}: {exc.strerror}") from None
            if not key:
                raise CommandError(f"--key-file {key_file} is empty.")
        check = verify_chain(key=key)
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
