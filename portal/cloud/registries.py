"""Container registries: does an image exist at the digest a release pins,
and which digest does a tag name now.

ECR (`<account>.dkr.ecr.<region>.amazonaws.com/<repository>`) is asked
through boto3 (`describe_images`, the sandbox's moto in the demo and tests);
any other registry through the OCI distribution API (`HEAD
/v2/<name>/manifests/<reference>`), anonymously, following a bearer-token
challenge once (as Docker Hub and most registries ask).

A definite "not there" is `found=False`; a registry that cannot be asked
(unreachable, refused, throttled) is `found=None` with the reason: whether
that blocks a deployment is the environment's decision, not this module's.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlencode

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from portal.cloud.aws import AwsAccess

ECR_RE = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com$")
MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])  # fmt: skip
TIMEOUT_SECONDS = 5
DOCKER_HUB = "registry-1.docker.io"


@dataclass(frozen=True)
class ImageName:
    """`registry/repository` and a reference (`sha256:…` digest or a tag)."""

    registry: str
    repository: str
    reference: str

    @property
    def is_digest(self) -> bool:
        return self.reference.startswith("sha256:")

    @property
    def pinned(self) -> str:
        return f"{self.registry}/{self.repository}@{self.reference}"


@dataclass(frozen=True)
class Lookup:
    """What the registry said: found (True/False), or None with why it could not say."""

    found: bool | None
    digest: str = ""
    reason: str = ""


def parse(image: str) -> ImageName:
    """`registry/name@sha256:…` or `registry/name:tag` (Docker Hub when the first
    part names no host). ValueError says what is wrong."""
    image = image.strip()
    if "@" in image:
        name, reference = image.split("@", 1)
    else:
        slash, colon = image.rfind("/"), image.rfind(":")
        if colon <= slash:
            raise ValueError(f"{image!r} names no tag and no digest")
        name, reference = image[:colon], image[colon + 1 :]
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
    else:
        registry, repository = DOCKER_HUB, name if "/" in name else f"library/{name}"
    if not repository or not reference:
        raise ValueError(f"{image!r} is not registry/repository@digest or :tag")
    return ImageName(registry, repository, reference)


def lookup(name: ImageName, endpoint_url: str | None = None) -> Lookup:
    """Ask the image's registry about its reference (digest or tag)."""
    ecr = ECR_RE.match(name.registry)
    if ecr:
        return _ecr(name, ecr.group("account"), ecr.group("region"), endpoint_url)
    return _oci(name)


def _ecr(name: ImageName, account: str, region: str, endpoint_url: str | None) -> Lookup:
    access = AwsAccess(region=region, session_name="gantry-registry")
    if endpoint_url is not None:
        access.endpoint_url = endpoint_url
    key = "imageDigest" if name.is_digest else "imageTag"
    try:
        client = access.client(
            "ecr",
            config=Config(
                connect_timeout=TIMEOUT_SECONDS,
                read_timeout=TIMEOUT_SECONDS,
                retries={"max_attempts": 2, "mode": "standard"},
            ),  # fmt: skip
        )
        found = client.describe_images(
            registryId=account, repositoryName=name.repository,
            imageIds=[{key: name.reference}],
        )["imageDetails"]  # fmt: skip
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code in ("ImageNotFoundException", "RepositoryNotFoundException"):
            return Lookup(False, reason=f"ECR has no {name.pinned} ({code})")
        return Lookup(None, reason=f"ECR refused to say ({code or error})")
    except BotoCoreError as error:
        return Lookup(None, reason=f"ECR could not be reached ({error})")
    if not found:
        return Lookup(False, reason=f"ECR has no {name.pinned}")
    return Lookup(True, digest=found[0]["imageDigest"])


def _oci(name: ImageName) -> Lookup:
    scheme = "http" if name.registry.startswith(("127.0.0.1", "localhost")) else "https"
    url = f"{scheme}://{name.registry}/v2/{name.repository}/manifests/{name.reference}"
    token = None
    for _ in range(2):
        request = urllib.request.Request(url, method="HEAD", headers={"Accept": MANIFEST_TYPES})
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
                digest = response.headers.get("Docker-Content-Digest", "")
                if name.is_digest and digest and digest != name.reference:
                    return Lookup(False, reason=f"{name.registry} answers {digest} instead")
                return Lookup(True, digest=digest or name.reference)
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return Lookup(False, reason=f"{name.registry} has no {name.pinned} (HTTP 404)")
            challenge = error.headers.get("WWW-Authenticate", "")
            if error.code == 401 and token is None and challenge.lower().startswith("bearer"):
                token = _anonymous_token(challenge)
                if token:
                    continue
            return Lookup(None, reason=f"{name.registry} answered HTTP {error.code}")
        except (urllib.error.URLError, OSError, ValueError) as error:
            return Lookup(None, reason=f"{name.registry} could not be reached ({error})")
    return Lookup(None, reason=f"{name.registry} asks for credentials Gantry does not hold")


def _anonymous_token(challenge: str) -> str | None:
    """The anonymous pull token a `Bearer realm=…,service=…,scope=…` challenge offers."""
    fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    realm = fields.pop("realm", "")
    if not realm.startswith("https://") and not realm.startswith("http://127.0.0.1"):
        return None
    try:
        with urllib.request.urlopen(f"{realm}?{urlencode(fields)}", timeout=TIMEOUT_SECONDS) as r:
            answer = json.load(r)
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return answer.get("token") or answer.get("access_token")
