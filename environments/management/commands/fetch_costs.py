"""Fetch daily spend from Cost Explorer now, e.g. to backfill after setup."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from environments.costs import fetch_costs


class Command(BaseCommand):
    help = "Fetch daily cost per environment from AWS Cost Explorer and check budgets."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days",
            type=int,
            default=None,
            help="How many days back to read (default: from the first of last month).",
        )

    def handle(self, *args, days: int | None = None, **options) -> None:
        # Cost Explorer keeps 13 months (14 with multi-year data enabled).
        if days is not None and not 1 <= days <= 400:
            raise CommandError("--days must be between 1 and 400.")
        summary = fetch_costs(days=days)
        self.stdout.write(
            f"Stored {summary['snapshots']} new or changed daily figures; "
            f"{summary['alerts']} budget alert(s) sent."
        )
        if summary["failed_accounts"]:
            raise CommandError(
                "Cost Explorer could not be read for: " + ", ".join(summary["failed_accounts"])
            )
