# Reading `terraform show -json` plans: the resource changes of a type and
# what each action means. The plan is input.plan; environments/plan_policy.py
# has checked its shape (actions a list of known action names, before and
# after objects or null) before any policy runs.
package gantry.lib.terraform

import rego.v1

# A plan without changes may leave resource_changes out.
resource_changes := object.get(input.plan, "resource_changes", [])

# Managed resource instances of one type that the plan touches, at any module
# depth (Terraform lists nested modules' resources in the same flat list, with
# addresses such as module.db.aws_db_instance.main[0]).
changes(kind) := object.get(managed_by_type, kind, [])

# The managed changes grouped by type, built once per evaluation: policies
# ask for several types, several times each, and a scan of every change per
# question cost more than the questions themselves on large plans.
managed_by_type[kind] contains rc if {
	some rc in resource_changes
	object.get(rc, "mode", "managed") == "managed"
	kind := rc.type
}

creates(rc) if "create" in rc.change.actions

updates(rc) if "update" in rc.change.actions

deletes(rc) if "delete" in rc.change.actions

# Replaced: ["delete", "create"], or ["create", "delete"] under create_before_destroy.
replaces(rc) if {
	creates(rc)
	deletes(rc)
}

# Destroyed and not created again.
destroys(rc) if {
	deletes(rc)
	not creates(rc)
}

# The object exists after the apply with the planned values: created,
# updated or replaced.
writes(rc) if {
	some action in rc.change.actions
	action in {"create", "update"}
}

# The planned value of an attribute (null included); undefined when the
# attribute is absent, as an attribute known only after apply is.
after(rc, name) := rc.change.after[name]

# The attribute is known only after apply (after_unknown marks it true).
# Undefined, not an error, when after_unknown is absent or not an object.
unknown(rc, name) if rc.change.after_unknown[name] == true

# How an action list reads in a message.
describe_actions(actions) := "delete, then create" if actions == ["delete", "create"]

else := "create the new one, then delete the old one" if actions == ["create", "delete"]

else := concat(", ", actions)

# An attribute path of change.replace_paths as Terraform writes it: engine,
# or tags.Name, or ingress.0.cidr_blocks.
path_text(path) := concat(".", [text |
	some step in path
	text := step_text(step)
])

step_text(step) := step if is_string(step)

else := format_int(step, 10)
