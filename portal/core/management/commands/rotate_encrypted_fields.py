"""manage.py rotate_encrypted_fields [--batch-size N]

Re-encrypt every encrypted column in place with the first field encryption
key (FIELD_ENCRYPTION_KEY's first, or the one derived from the current
SECRET_KEY), so the older keys can then be dropped from FIELD_ENCRYPTION_KEY
or SECRET_KEY_FALLBACKS. Rows are rewritten in batches, each batch in its own
transaction under row locks; a value already under the first key is left as
it is, so the command can be run again (or resumed after a failure) safely.
The run is recorded in the audit trail, with the count per column.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import models, transaction
from django.db.models.functions import Cast

from portal.core import audit, crypto


def encrypted_columns() -> list[tuple[type[models.Model], models.Field]]:
    """Every (model, field) stored encrypted, in a stable order."""
    found = []
    for model in apps.get_models():
        if model._meta.proxy or not model._meta.managed:
            continue
        for field in model._meta.concrete_fields:
            if isinstance(field, crypto.ENCRYPTED_FIELDS):
                found.append((model, field))
    return sorted(found, key=lambda pair: (pair[0]._meta.label_lower, pair[1].name))


def rotate_column(model: type[models.Model], field: models.Field, batch_size: int) -> int:
    """Re-encrypt one column; returns how many values were rewritten."""
    current = Fernet(crypto.configured_keys()[0])
    stored = Cast(field.attname, output_field=models.TextField())  # the ciphertext as stored
    rewritten, after_pk = 0, None
    while True:
        with transaction.atomic():
            rows = model._default_manager.select_for_update().order_by("pk")
            if after_pk is not None:
                rows = rows.filter(pk__gt=after_pk)
            batch = list(
                rows.exclude(**{field.attname: ""})
                .annotate(gantry_ciphertext=stored)
                .values_list("pk", "gantry_ciphertext")[:batch_size]
            )
            for pk, ciphertext in batch:
                if not ciphertext:
                    continue
                try:
                    current.decrypt(ciphertext.encode())
                    continue  # already under the first key
                except InvalidToken:
                    pass
                value = models.Value(crypto.reencrypt(ciphertext), output_field=models.TextField())
                model._default_manager.filter(pk=pk).update(**{field.attname: value})
                rewritten += 1
        if len(batch) < batch_size:
            return rewritten
        after_pk = batch[-1][0]


class Command(BaseCommand):
    help = "Re-encrypt every encrypted column with the first field encryption key (audited)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=500, help="Rows per transaction.")

    def handle(self, *args, batch_size: int, **options) -> None:
        if batch_size < 1:
            raise CommandError("--batch-size: give a number from 1.")
        keys = crypto.configured_keys()
        counts: dict[str, int] = {}
        context = audit.set_context(audit.AuditContext(request_id=audit.new_request_id()))
        try:
            for model, field in encrypted_columns():
                name = f"{model._meta.label_lower}.{field.name}"
                try:
                    counts[name] = rotate_column(model, field, batch_size)
                except ImproperlyConfigured as exc:
                    raise CommandError(f"{name}: {exc}") from None
                self.stdout.write(f"{name}: {counts[name]} value(s) re-encrypted")
            with transaction.atomic():
                audit.record(
                    "encryption.rotated",
                    ("encryption", "", "field encryption"),
                    actor_name="manage.py rotate_encrypted_fields",
                    after={"columns": counts, "keys_configured": len(keys)},
                )
        finally:
            audit.reset_context(context)
        total = sum(counts.values())
        self.stdout.write(
            f"{total} value(s) re-encrypted; every stored value is now under the first key. "
            "The older keys can be removed once every process runs with the new configuration."
        )
