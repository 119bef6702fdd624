# fraud-detector's release-facing infrastructure, reduced to what the portal
# needs to demonstrate real plans offline: one null_resource per service whose
# triggers change when the service's image or the environment changes.
# Production swaps these for aws_ecs_task_definition & co.; the variables stay.

terraform {
  required_version = ">= 1.0"

  required_providers {
    null = {
      source  = "hashicorp/null"
      version = "~> 2.1"
    }
  }

  # State per workspace (one workspace per environment). The portal passes
  # `-backend-config=workspace_dir=…` to keep state outside the checkout.
  backend "local" {}
}

variable "environment" {
  description = "Environment slug: dev, staging or production."
  type        = string
}

variable "release_version" {
  description = "Version of the release being deployed."
  type        = string
  default     = ""
}

variable "images" {
  description = "Pinned image per service (repository@sha256:digest)."
  type        = map(string)
  default     = {}
}

variable "desired_count" {
  description = "Tasks per service."
  type        = number
  default     = 2
}

variable "apply_delay_seconds" {
  description = "Seconds each service's rollout hook takes (lets tests watch output stream)."
  type        = number
  default     = 0
}

resource "null_resource" "service" {
  for_each = var.images

  triggers = {
    environment   = var.environment
    image         = each.value
    desired_count = tostring(var.desired_count)
  }

  # Values reach the shell as environment variables, never spliced into the command.
  provisioner "local-exec" {
    command = "echo \"rolling out $SERVICE in $ENVIRONMENT\"; sleep \"$DELAY\"; echo \"$SERVICE ready\""
    environment = {
      SERVICE     = each.key
      ENVIRONMENT = var.environment
      DELAY       = tostring(var.apply_delay_seconds)
    }
  }
}

resource "null_resource" "release" {
  triggers = {
    environment     = var.environment
    release_version = var.release_version
  }
}

output "environment" {
  value = var.environment
}

output "images" {
  value = var.images
}

output "release_version" {
  value = var.release_version
}
