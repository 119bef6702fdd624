"""ECS steps (seeds 001/002).

`ecs_rolling`: for each service, register a task-definition revision that is
the current one with the release's images, `update_service(forceNewDeployment)`
and wait until every service is stable. Rollback puts the previous revision back.

Config::

    {"cluster": "fraud-detector-${environment}",
     "services": ["fraud-api", "fraud-ml", "fraud-worker"],
     "container_artifacts": {"api": "fraud-api"},   # container name → release service
     "timeout_seconds": 900, "poll_seconds": 10}

`ecs_blue_green`: update the idle colour's service, wait until it is stable and
its targets are healthy, then move the ALB listener's weights to it (e.g.
10 → 50 → 100 % with pauses). The old colour keeps running, so rollback is an
instant switch of the listener back.

Config::

    {"cluster": "fraud-detector-${environment}", "service": "fraud-api",
     "blue": {"service": "fraud-api-blue", "target_group": "fraud-api-blue"},
     "green": {"service": "fraud-api-green", "target_group": "fraud-api-green"},
     "load_balancer": "fraud-detector-${environment}", "listener_port": 80,  # or "listener_arn"
     "weights": [10, 50, 100], "pause_seconds": 60,
     "timeout_seconds": 900, "poll_seconds": 10}
"""

from __future__ import annotations

from dataclasses import replace

from botocore.exceptions import ClientError

from deployments.runners.base import Runner, StepContext, StepFailed
from environments.steps import COLOURS
from portal.cloud.aws import aws_call
from portal.cloud.process import Deadline

# What `register_task_definition` accepts back from `describe_task_definition`.
REGISTRATION_FIELDS = (
    "family", "taskRoleArn", "executionRoleArn", "networkMode", "containerDefinitions",
    "volumes", "placementConstraints", "requiresCompatibilities", "cpu", "memory", "pidMode",
    "ipcMode", "proxyConfiguration", "inferenceAccelerators", "ephemeralStorage",
    "runtimePlatform",
)  # fmt: skip


def describe_service(ecs, cluster: str, service: str) -> dict:
    found = aws_call(
        f"Describing ECS service {service}",
        ecs.describe_services,
        cluster=cluster,
        services=[service],
    )
    services = [s for s in found.get("services", []) if s.get("status") != "INACTIVE"]
    if not services:
        raise StepFailed(f"ECS service {service} not found in cluster {cluster}.")
    return services[0]


def register_revision(
    ctx: StepContext, ecs, cluster: str, service: dict, container_artifacts: dict
) -> tuple[str, dict[str, str]]:
    """Register a copy of the service's task definition with the release's
    images; returns the new ARN and the images per container."""
    current = aws_call(
        "Reading the task definition",
        ecs.describe_task_definition,
        taskDefinition=service["taskDefinition"],
        include=["TAGS"],
    )
    definition = current["taskDefinition"]
    containers = definition["containerDefinitions"]
    images = {}
    for container in containers:
        slug = container_artifacts.get(container["name"], container["name"])
        if slug in ctx.artifacts:
            images[container["name"]] = ctx.artifacts[slug]
    if not images and len(containers) == 1 and service["serviceName"] in ctx.artifacts:
        images[containers[0]["name"]] = ctx.artifacts[service["serviceName"]]
    if not images:
        raise StepFailed(
            f"No container of ECS service {service['serviceName']} matches a service of the "
            f"release ({', '.join(sorted(ctx.artifacts)) or 'none'}); set container_artifacts."
        )
    registration = {k: definition[k] for k in REGISTRATION_FIELDS if definition.get(k)}
    registration["containerDefinitions"] = [
        {**c, "image": images.get(c["name"], c["image"])} for c in containers
    ]
    if current.get("tags"):
        registration["tags"] = current["tags"]
    registered = aws_call(
        f"Registering a {definition['family']} revision",
        ecs.register_task_definition,
        **registration,
    )["taskDefinition"]
    arn = registered["taskDefinitionArn"]
    ctx.log(
        f"{service['serviceName']}: registered {registered['family']}:{registered['revision']} "
        f"({', '.join(f'{c} → {i}' for c, i in images.items())})",
        "system",
    )
    return arn, images


def update_service(ctx: StepContext, ecs, cluster: str, service: str, arn: str, **extra) -> None:
    aws_call(
        f"Updating ECS service {service}",
        ecs.update_service,
        cluster=cluster,
        service=service,
        taskDefinition=arn,
        forceNewDeployment=True,
        **extra,
    )
    ctx.log(f"{service}: update_service → {arn.rsplit('/', 1)[-1]}", "system")


def wait_stable(
    ctx: StepContext, ecs, cluster: str, services: list[str], timeout: float, poll: float,
    outputs: dict,
) -> None:  # fmt: skip
    """Poll like the `services_stable` waiter (one deployment, running ==
    desired), logging progress; a failed rollout (circuit breaker) fails fast."""
    deadline = Deadline(timeout)
    last: dict[str, str] = {}
    while True:
        ctx.check_cancelled()
        found = aws_call(
            "Describing ECS services", ecs.describe_services, cluster=cluster, services=services
        )["services"]
        pending = []
        for service in found:
            name = service["serviceName"]
            deployments = service.get("deployments", [])
            primary = next((d for d in deployments if d.get("status") == "PRIMARY"), {})
            if primary.get("rolloutState") == "FAILED":
                raise StepFailed(
                    f"{name}: the ECS deployment failed: {primary.get('rolloutStateReason', '')}",
                    outputs=outputs,
                )
            state = (
                f"{service['runningCount']}/{service['desiredCount']} running, "
                f"{len(deployments)} deployment(s)"
            )
            if last.get(name) != state:
                ctx.log(f"{name}: {state}")
                last[name] = state
            if len(deployments) != 1 or service["runningCount"] != service["desiredCount"]:
                pending.append(name)
        if not pending:
            ctx.log(f"Stable: {', '.join(services)}", "system")
            return
        if deadline.passed:
            raise StepFailed(
                f"Not stable within {timeout:g} s: {', '.join(pending)}. Check the services' "
                "events and stopped tasks in the ECS console.",
                outputs=outputs,
            )
        ctx.sleep(poll)


class EcsRollingRunner(Runner):
    kind = "ecs_rolling"

    def run(self, ctx: StepContext) -> dict:
        config = self.config(ctx)
        cluster = ctx.expand(config["cluster"])
        ecs = ctx.aws.client("ecs")
        records = []
        outputs = {"cluster": cluster, "services": records}
        return self._each_service(
            ctx, ecs, config, outputs,
            lambda name: self._update(ctx, ecs, cluster, name, config, records),
        )  # fmt: skip

    @staticmethod
    def _each_service(ctx, ecs, config: dict, outputs: dict, update) -> dict:
        """`update(name)` for each service, then wait until all are stable."""
        try:
            for name in config["services"]:
                update(name)
        except StepFailed as failure:
            # Services updated before the failure are in the outputs: rollback needs them.
            failure.outputs = failure.outputs or outputs
            raise
        wait_stable(
            ctx, ecs, outputs["cluster"], config["services"], config["timeout_seconds"],
            config["poll_seconds"], outputs,
        )  # fmt: skip
        return outputs

    def _update(self, ctx, ecs, cluster: str, name: str, config: dict, records: list) -> None:
        service = describe_service(ecs, cluster, name)
        arn, images = register_revision(ctx, ecs, cluster, service, config["container_artifacts"])
        # Recorded before the update, so a failure from here on can be rolled back.
        records.append(
            {
                "service": name,
                "previous_task_definition": service["taskDefinition"],
                "task_definition": arn,
                "images": images,
            }
        )
        update_service(ctx, ecs, cluster, name, arn)

    def rollback(self, ctx: StepContext) -> dict:
        """Bring the target release (ctx's) back: each service goes to the task
        definition recorded when that release last succeeded here, or, with
        none recorded (or it is gone), to a new revision with its images."""
        config = self.config(ctx)
        cluster = ctx.expand(config["cluster"])
        ecs = ctx.aws.client("ecs")
        recorded = {
            record.get("service"): record.get("task_definition")
            for record in (ctx.previous_outputs or {}).get("services", [])
        }
        records = []
        outputs = {"cluster": cluster, "services": records, "rollback": True}

        def restore(name: str) -> None:
            arn = recorded.get(name)
            if not (arn and self._still_registered(ctx, ecs, arn)):
                self._update(ctx, ecs, cluster, name, config, records)
                return
            service = describe_service(ecs, cluster, name)
            records.append({"service": name, "previous_task_definition":
                            service["taskDefinition"], "task_definition": arn,
                            "restored": True})  # fmt: skip
            update_service(ctx, ecs, cluster, name, arn)

        return self._each_service(ctx, ecs, config, outputs, restore)

    @staticmethod
    def _still_registered(ctx: StepContext, ecs, arn: str) -> bool:
        """The recorded revision can still run (not deregistered since)."""
        try:
            found = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
        except ClientError:
            found = None
        if found is None or found.get("status") == "INACTIVE":
            ctx.log(f"{arn.rsplit('/', 1)[-1]} is no longer registered; registering the "
                    "release's images again.", "system")  # fmt: skip
            return False
        return True


class EcsBlueGreenRunner(Runner):
    kind = "ecs_blue_green"

    def run(self, ctx: StepContext) -> dict:
        config = self.config(ctx)
        cluster = ctx.expand(config["cluster"])
        ecs, elb = ctx.aws.client("ecs"), ctx.aws.client("elbv2")
        listener_arn = self._listener_arn(ctx, elb, config)
        groups = {c: self._target_group_arn(ctx, elb, config[c]["target_group"]) for c in COLOURS}
        weights = self._weights(elb, listener_arn)
        live = max(COLOURS, key=lambda c: weights.get(groups[c], 0))
        idle = "green" if live == "blue" else "blue"
        ctx.log(f"Live colour: {live} ({weights.get(groups[live], 0)}%); deploying to {idle}.")
        outputs = {
            "listener_arn": listener_arn,
            "previous_weights": weights,
            "previous_colour": live,
            "colour": idle,
            "target_groups": groups,
        }
        idle_name, live_name = config[idle]["service"], config[live]["service"]
        idle_service = describe_service(ecs, cluster, idle_name)
        live_service = describe_service(ecs, cluster, live_name)
        container_artifacts = dict(config["container_artifacts"])
        names = self._container_names(ecs, idle_service)
        if config["service"] and len(names) == 1:
            # A single-container colour service runs the app service's image.
            container_artifacts.setdefault(names[0], config["service"])
        try:
            arn, images = register_revision(ctx, ecs, cluster, idle_service, container_artifacts)
        except StepFailed as failure:
            failure.outputs = outputs
            raise
        outputs.update(
            previous_task_definition=idle_service["taskDefinition"], task_definition=arn,
            images=images,
        )  # fmt: skip
        extra = {}
        if idle_service["desiredCount"] == 0:
            # The idle colour was scaled in after the last switch; match the live one.
            extra["desiredCount"] = max(live_service["desiredCount"], 1)
        update_service(ctx, ecs, cluster, idle_name, arn, **extra)
        wait_stable(
            ctx, ecs, cluster, [idle_name], config["timeout_seconds"], config["poll_seconds"],
            outputs,
        )  # fmt: skip
        deadline = Deadline(config["timeout_seconds"])
        self._wait_healthy(ctx, elb, groups[idle], deadline, config["poll_seconds"], outputs)
        for step, weight in enumerate(config["weights"]):
            self._set_weights(
                ctx, elb, listener_arn, {groups[idle]: weight, groups[live]: 100 - weight}
            )
            outputs["weights"] = {groups[idle]: weight, groups[live]: 100 - weight}
            if step < len(config["weights"]) - 1:
                ctx.log(f"Holding at {weight}% for {config['pause_seconds']:g} s.")
                ctx.sleep(config["pause_seconds"])
                # Traffic is flowing to the new colour now; stop if its targets sicken.
                self._wait_healthy(
                    ctx, elb, groups[idle], Deadline(0), config["poll_seconds"], outputs
                )
        ctx.log(f"{idle} is live; {live} keeps running for an instant switch back.", "system")
        return outputs

    def rollback(self, ctx: StepContext) -> dict:
        """Bring the target release (ctx's) back: if a colour still runs the task
        definition recorded when it last succeeded here, switch the listener to
        that colour at once; otherwise deploy its images to the idle colour and
        switch in one move (no pauses: service is being restored)."""
        config = self.config(ctx)
        cluster = ctx.expand(config["cluster"])
        ecs, elb = ctx.aws.client("ecs"), ctx.aws.client("elbv2")
        listener_arn = self._listener_arn(ctx, elb, config)
        groups = {c: self._target_group_arn(ctx, elb, config[c]["target_group"]) for c in COLOURS}
        weights = self._weights(elb, listener_arn)
        live = max(COLOURS, key=lambda c: weights.get(groups[c], 0))
        recorded = (ctx.previous_outputs or {}).get("task_definition")
        for colour in (live, *[c for c in COLOURS if c != live]):
            service = describe_service(ecs, cluster, config[colour]["service"])
            if not recorded or service["taskDefinition"] != recorded:
                continue
            if colour == live and weights.get(groups[live], 0) == 100:
                ctx.log(f"{colour} already runs {recorded.rsplit('/', 1)[-1]} with all traffic.",
                        "system")  # fmt: skip
                return {"listener_arn": listener_arn, "colour": colour, "switched": False,
                        "task_definition": recorded, "rollback": True}  # fmt: skip
            if service["runningCount"] == 0:
                break  # scaled in since: it must be deployed again
            other = "green" if colour == "blue" else "blue"
            self._wait_healthy(ctx, elb, groups[colour], Deadline(config["timeout_seconds"]),
                               config["poll_seconds"], {})  # fmt: skip
            new = {groups[colour]: 100, groups[other]: 0}
            self._set_weights(ctx, elb, listener_arn, new)
            ctx.log(f"Switched all traffic to {colour}, which still runs the release.", "system")
            return {"listener_arn": listener_arn, "previous_weights": weights, "weights": new,
                    "colour": colour, "task_definition": recorded, "switched": True,
                    "rollback": True}  # fmt: skip
        ctx.log("No colour runs the release's recorded task definition: deploying it.", "system")
        quick = replace(ctx, config={**ctx.config, "weights": [100], "pause_seconds": 0})
        return {**self.run(quick), "rollback": True}

    # -- ELB helpers -------------------------------------------------------------

    def _listener_arn(self, ctx: StepContext, elb, config: dict) -> str:
        if config["listener_arn"]:
            return ctx.expand(config["listener_arn"])
        name = ctx.expand(config["load_balancer"])
        balancers = aws_call(
            f"Finding load balancer {name}", elb.describe_load_balancers, Names=[name]
        )["LoadBalancers"]
        listeners = aws_call(
            "Listing listeners",
            elb.describe_listeners,
            LoadBalancerArn=balancers[0]["LoadBalancerArn"],
        )["Listeners"]
        for listener in listeners:
            if listener["Port"] == config["listener_port"]:
                return listener["ListenerArn"]
        raise StepFailed(f"Load balancer {name} has no listener on port {config['listener_port']}.")

    def _target_group_arn(self, ctx: StepContext, elb, name_or_arn: str) -> str:
        value = ctx.expand(name_or_arn)
        if value.startswith("arn:"):
            return value
        return aws_call(f"Finding target group {value}", elb.describe_target_groups, Names=[value])[
            "TargetGroups"
        ][0]["TargetGroupArn"]

    def _weights(self, elb, listener_arn: str) -> dict[str, int]:
        listener = aws_call(
            "Reading the listener", elb.describe_listeners, ListenerArns=[listener_arn]
        )["Listeners"][0]
        action = next(a for a in listener["DefaultActions"] if a["Type"] == "forward")
        if "ForwardConfig" in action:
            return {
                g["TargetGroupArn"]: g.get("Weight", 1)
                for g in action["ForwardConfig"]["TargetGroups"]
            }
        return {action["TargetGroupArn"]: 100}

    def _set_weights(self, ctx: StepContext, elb, listener_arn: str, weights: dict) -> None:
        groups = [{"TargetGroupArn": arn, "Weight": int(w)} for arn, w in weights.items()]
        aws_call(
            "Switching the listener",
            elb.modify_listener,
            ListenerArn=listener_arn,
            DefaultActions=[{"Type": "forward", "ForwardConfig": {"TargetGroups": groups}}],
        )
        shares = ", ".join(f"{arn.rsplit('/', 2)[-2]} {w}%" for arn, w in weights.items())
        ctx.log(f"Listener weights: {shares}", "system")

    def _wait_healthy(self, ctx, elb, group_arn: str, deadline: Deadline, poll: float, outputs):
        """All registered targets healthy (and at least one), or fail."""
        while True:
            ctx.check_cancelled()
            targets = aws_call(
                "Reading target health", elb.describe_target_health, TargetGroupArn=group_arn
            )["TargetHealthDescriptions"]
            states = [t["TargetHealth"]["State"] for t in targets]
            if states and all(s == "healthy" for s in states):
                ctx.log(f"{group_arn.rsplit('/', 2)[-2]}: {len(states)} healthy target(s)")
                return
            if deadline.passed:
                summary = ", ".join(
                    f"{t['Target']['Id']} {t['TargetHealth']['State']}" for t in targets
                )
                raise StepFailed(
                    f"Target group {group_arn.rsplit('/', 2)[-2]} is not healthy: "
                    f"{summary or 'no registered targets'}.",
                    outputs=outputs,
                )
            ctx.sleep(poll)

    @staticmethod
    def _container_names(ecs, service: dict) -> list[str]:
        definition = aws_call(
            "Reading the task definition",
            ecs.describe_task_definition,
            taskDefinition=service["taskDefinition"],
        )["taskDefinition"]
        return [c["name"] for c in definition["containerDefinitions"]]
