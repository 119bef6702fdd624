from django.db import models


class Role(models.TextChoices):
    """What a user may do in one environment. Roles combine: a user may hold several."""

    VIEWER = "viewer", "Viewer"
    DEPLOYER = "deployer", "Deployer"
    APPROVER = "approver", "Approver"
    ADMIN = "admin", "Admin"


ROLE_COLOURS = {
    Role.VIEWER: "grey",
    Role.DEPLOYER: "blue",
    Role.APPROVER: "green",
    Role.ADMIN: "red",
}
