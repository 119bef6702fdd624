"""Releases: a version of an application with one digest-pinned image per
service. Immutable once registered."""

from __future__ import annotations

import re

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, models, transaction
from django.db.models import Prefetch, QuerySet
from django.utils import timezone

from environments.choices import ImageVerification
from environments.models import Application, Environment, Service
from portal.cloud import registries
from portal.core import audit
from portal.core.choices import Role
from portal.core.prepared import keep_prefetched, prepared
from portal.core.roles import Conflict, Forbidden, PolicyError, has_role

# An image pinned by digest: anything before "@sha256:" and exactly 64 hex digits.
IMAGE_REF_RE = re.compile(
    r"^(?P<repository>[a-z0-9][a-z0-9._\-/:]*)@sha256:(?P<digest>[0-9a-f]{64})$"
)
COMMIT_RE = re.compile(r"^[0-9a-f]{7,40}$")
EMAIL_IN_AUTHOR_RE = re.compile(r"<([^<>\s]+@[^<>\s]+)>")
NOTES_MAX = 10_000  # release notes: a changelog, not the whole history
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+\-]{0,63}$")


class Release(models.Model):
    """A version of an application with one pinned image per service. Immutable."""

    application = models.ForeignKey(Application, on_delete=models.PROTECT, related_name="releases")
    version = models.CharField(max_length=64)
    notes = models.TextField(blank=True)
    commit = models.CharField(max_length=40, blank=True)
    # Who wrote the commit, as the release's registrant gives it ("Name <email>",
    # an e-mail address or a Gantry user name) and the user it names, if any.
    commit_author = models.CharField(max_length=254, blank=True)
    commit_author_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The Gantry user commit_author names (by user name or unique e-mail).",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["application", "version"], name="release_unique_version"
            )
        ]

    def __str__(self) -> str:
        return f"{self.application.slug} {self.version}"

    def save(self, *args, **kwargs):
        if self.pk is not None and not kwargs.get("force_insert"):
            raise PolicyError("Releases are immutable; register a new version instead.")
        super().save(*args, **kwargs)

    def artifact_map(self) -> dict[str, str]:
        """{service slug: pinned image}, in one query (none when the page
        prefetched the artifacts with their services): the approval digest
        reads it on every decision, and a lazy `.service` per artifact made
        it one query per service."""
        prefetched = getattr(self, "_prefetched_objects_cache", {}).get("artifacts")
        if prefetched is not None and all(Artifact.service.is_cached(a) for a in prefetched):
            return {a.service.slug: a.image_ref for a in prefetched}
        return dict(
            self.artifacts.order_by("service__slug").values_list("service__slug", "image_ref")
        )

    @staticmethod
    def resolve_tags(application: Application, artifacts: dict, user) -> tuple[dict, list[dict]]:
        """Artifacts given by tag (`repo:tag`) pinned to the digest their registry
        names now; digests are left alone. Returns (artifacts, [{"service",
        "tag", "image"}] resolved); a tag the registry lacks, or cannot be asked
        about, is a PolicyError naming the service.

        Only deployers ask, and only the service's declared repositories are
        asked: a release form must not make Gantry call any host it is given."""
        _require_deployer(application, user)
        if not isinstance(artifacts, dict):
            return artifacts, []
        services = {s.slug: s for s in application.services.all()}
        tags = {}
        for slug, ref in sorted(artifacts.items()):
            if slug not in services or not isinstance(ref, str) or "@" in ref:
                continue  # register names the problem
            try:
                name = registries.parse(ref)
            except ValueError:
                continue
            if not services[slug].allows(f"{name.registry}/{name.repository}"):
                raise _foreign_repository(services[slug], f"{name.registry}/{name.repository}")
            tags[slug] = name
        # Every repository is checked before the first registry is asked.
        pinned, resolved = dict(artifacts), []
        for slug, name in tags.items():
            answer = registries.lookup(name)
            if answer.found is not True or not answer.digest.startswith("sha256:"):
                reason = answer.reason or "the registry names no digest"
                raise PolicyError(
                    f"{slug}: tag {artifacts[slug].strip()} could not be resolved ({reason}).",
                    field=f"artifacts.{slug}",
                )
            image = f"{name.registry}/{name.repository}@{answer.digest}"
            pinned[slug] = image
            resolved.append({"service": slug, "tag": artifacts[slug].strip(), "image": image})
        return pinned, resolved

    def check_images(self) -> list[dict]:
        """Ask each image's registry whether it holds the pinned digest:
        [{"service", "image", "found": True | False | None, "reason"}]."""
        checks = []
        for service, ref in sorted(self.artifact_map().items()):
            answer = registries.lookup(registries.parse(ref))
            checks.append(
                {"service": service, "image": ref, "found": answer.found, "reason": answer.reason}
            )
        return checks

    def verified_images(self, environment: Environment) -> list[dict]:
        """The registries' word on the release's images, when the environment asks
        for it: an image not there is refused; one that cannot be checked is
        refused where the environment says so (`image_verification`), else kept
        with the reason for the approvers to see. Rollbacks skip it: restoring
        service must not wait on a registry."""
        if environment.image_verification == ImageVerification.OFF:
            return []
        checks = self.check_images()
        for check in checks:
            if check["found"] is False:
                raise PolicyError(f"{check['service']}: {check['reason']}.", field="release")
            if check["found"] is None and environment.image_verification == ImageVerification.BLOCK:
                raise PolicyError(
                    f"{check['service']}: its image could not be verified ({check['reason']}); "
                    f"{environment} deploys only images its registry confirms.",
                    field="release",
                )
        return checks

    @staticmethod
    def problems(
        application: Application,
        version: str,
        artifacts: dict,
        notes: str = "",
        commit: str = "",
        commit_author: str = "",
    ) -> list[PolicyError]:
        """Every problem with a release's fields, each naming its field (the
        form shows them all at once; `register` refuses on the first)."""
        found = []
        if not VERSION_RE.match((version or "").strip()):
            found.append(PolicyError(
                "Use 1-64 letters, digits, '.', '_', '+' or '-', starting with a letter or digit.",
                field="version",
            ))  # fmt: skip
        if len(notes or "") > NOTES_MAX:
            found.append(PolicyError(f"Notes are {NOTES_MAX:,} characters at most "
                                     f"({len(notes):,} given).", field="notes"))  # fmt: skip
        commit = (commit or "").strip().lower()
        if commit and not COMMIT_RE.match(commit):
            found.append(PolicyError("A commit is 7 to 40 hexadecimal digits.", field="commit"))
        commit_author = " ".join((commit_author or "").split())
        if len(commit_author) > 254:
            found.append(PolicyError("A commit author is 254 characters at most.",
                                     field="commit_author"))  # fmt: skip
        if commit_author and not commit:
            found.append(PolicyError("Name the commit the author wrote.", field="commit"))
        if not isinstance(artifacts, dict):
            found.append(PolicyError("Give an object mapping service slug to image.",
                                     field="artifacts"))  # fmt: skip
            return found
        services = {s.slug: s for s in application.services.all()}
        unknown = sorted(set(artifacts) - set(services))
        if unknown:
            found.append(PolicyError(
                f"Unknown service(s) for {application.slug}: {', '.join(unknown)}.",
                field="artifacts",
            ))  # fmt: skip
        missing = sorted(set(services) - set(artifacts))
        if missing:
            found.append(PolicyError(
                f"Missing an image for service(s): {', '.join(missing)}.", field="artifacts"
            ))  # fmt: skip
        for slug, ref in artifacts.items():
            if slug not in services:
                continue
            if not isinstance(ref, str) or not IMAGE_REF_RE.match(ref.strip()):
                found.append(PolicyError(
                    f"{slug}: pin the image by digest, as repository@sha256:<64 hex digits>.",
                    field=f"artifacts.{slug}",
                ))  # fmt: skip
                continue
            repository = ref.strip().split("@", 1)[0]
            if not services[slug].allows(repository):
                found.append(_foreign_repository(services[slug], repository))
        return found

    @classmethod
    def register(
        cls,
        application: Application,
        version: str,
        artifacts: dict[str, str],
        user,
        notes: str = "",
        commit: str = "",
        commit_author: str = "",
    ) -> Release:
        """Validate and store a release; every problem names the field it is about."""
        _require_deployer(application, user)
        problems = cls.problems(application, version, artifacts, notes, commit, commit_author)
        if problems:
            raise problems[0]
        version = version.strip()
        commit = (commit or "").strip().lower()
        commit_author = " ".join((commit_author or "").split())
        services = {s.slug: s for s in application.services.all()}
        with transaction.atomic():
            if cls.objects.filter(application=application, version=version).exists():
                raise Conflict(
                    f"{application.slug} {version} is already registered; releases are immutable.",
                    field="version",
                )
            try:
                with transaction.atomic():
                    release = cls.objects.create(
                        application=application,
                        version=version,
                        notes=notes or "",
                        commit=commit,
                        commit_author=commit_author,
                        commit_author_user=user_named_by(commit_author),
                        created_by=user,
                    )
            except IntegrityError:  # the unique constraint lost a race
                raise Conflict(
                    f"{application.slug} {version} is already registered.", field="version"
                ) from None
            Artifact.objects.bulk_create(
                Artifact(release=release, service=services[slug], image_ref=ref.strip())
                for slug, ref in sorted(artifacts.items())
            )
            audit.record(
                "release.registered",
                release,
                actor=user,
                application=application,
                after={
                    "version": version,
                    "artifacts": artifacts,
                    "commit": commit,
                    "commit_author": commit_author,
                    "commit_author_user": (
                        release.commit_author_user.get_username()
                        if release.commit_author_user_id
                        else None
                    ),
                },
            )
        return release


def user_named_by(author: str):
    """The Gantry user a commit author names: `Name <email>`, an e-mail
    address or a user name; None when it names nobody, or several (an
    e-mail address two accounts share proves nothing)."""
    if not author:
        return None
    users = get_user_model().objects
    match = EMAIL_IN_AUTHOR_RE.search(author)
    address = match.group(1) if match else (author if "@" in author else "")
    if address:
        found = list(users.filter(email__iexact=address)[:2])
        if len(found) == 1:
            return found[0]
    found = list(users.filter(username__iexact=address or author)[:2])
    return found[0] if len(found) == 1 else None


class Artifact(models.Model):
    """The image a release pins for one service."""

    release = models.ForeignKey(Release, on_delete=models.CASCADE, related_name="artifacts")
    service = models.ForeignKey(Service, on_delete=models.PROTECT, related_name="+")
    image_ref = models.CharField(max_length=300)

    class Meta:
        ordering = ["service__slug"]
        constraints = [
            models.UniqueConstraint(fields=["release", "service"], name="artifact_one_per_service")
        ]

    def __str__(self) -> str:
        return self.image_ref

    @property
    def repository(self) -> str:
        return self.image_ref.split("@", 1)[0]

    @property
    def digest(self) -> str:
        return self.image_ref.split("@", 1)[1]


def _require_deployer(application: Application, user) -> None:
    if not any(has_role(user, env, Role.DEPLOYER) for env in application.environments.all()):
        raise Forbidden("You need the deployer role in this application to register releases.")


def _foreign_repository(service: Service, repository: str) -> PolicyError:
    return PolicyError(
        f"{service.slug}: {repository} is not where {service.slug}'s images come from "
        f"({', '.join(service.image_repositories)}).",
        field=f"artifacts.{service.slug}",
    )


def artifacts_with_services(lookup: str = "artifacts") -> Prefetch:
    """Prefetch a release's artifacts (`lookup` from another model, e.g.
    "release__artifacts") with their services: what `Release.artifact_map`
    and the pages read, then without a query."""
    return Prefetch(lookup, queryset=_with_services())


def _with_services() -> QuerySet:
    return Artifact.objects.select_related("service")


def load_artifacts(*releases: Release) -> None:
    """What artifacts_with_services() prefetches for these releases (a
    deployment and what it replaces, say), in one query whose SQL is
    compiled once a process (portal/core/prepared.py)."""
    keys = list(dict.fromkeys(release.pk for release in releases))
    if not keys:
        return
    by_release: dict[int, list[Artifact]] = {}
    for artifact in _artifacts_of.list(release_ids=keys):
        by_release.setdefault(artifact.release_id, []).append(artifact)
    for release in releases:
        keep_prefetched(release, "artifacts", list(by_release.get(release.pk, [])))


@prepared(release_ids=list)
def _artifacts_of(release_ids: list[int]) -> QuerySet:
    return _with_services().filter(release_id__any=release_ids)
