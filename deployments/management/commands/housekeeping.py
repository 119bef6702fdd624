"""manage.py housekeeping [CONFIG]: the periodic jobs (deployments/cron.py by
default) on RQ's cron scheduler, kept running through Redis outages
(deployments.worker.HousekeepingScheduler). Run exactly one."""

from __future__ import annotations

import logging

from django.core.management.base import BaseCommand, CommandParser

from deployments.worker import HousekeepingScheduler


class Command(BaseCommand):
    help = "Run the periodic jobs (expiry, stalled runs, waiting deployments, alarms, costs)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "config", nargs="?", default="deployments.cron",
            help="Module registering the jobs (default: deployments.cron).",
        )  # fmt: skip
        parser.add_argument(
            "--logging-level", default="INFO",
            choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        )  # fmt: skip

    def handle(self, *args, **options) -> None:
        scheduler = HousekeepingScheduler(logging_level=getattr(logging, options["logging_level"]))
        scheduler.load_config_from_file(options["config"])
        self.stdout.write(
            f"Running {len(scheduler.get_jobs())} periodic jobs from {options['config']}"
        )
        scheduler.start()  # until SIGINT/SIGTERM
