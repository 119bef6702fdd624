# The entry point Gantry queries: data.gantry.decision.
#
# Every package under gantry.policies is a policy, named by its last part
# (gantry.policies.s3_public_bucket is "s3_public_bucket"). A policy may
# define `violations` (a set of {"level", "message", "address"}) and
# `extra_approvals` (a set of {"group", "count", "message"}); the name is
# added here so that a policy cannot report under another's name.
# environments/plan_policy.py checks the shape of what comes back and turns
# the levels into the outcome.
package gantry

import rego.v1

decision := {
	"violations": [object.union(v, {"policy": name}) |
		some name
		some v in data.gantry.policies[name].violations
	],
	"extra_approvals": [object.union(a, {"policy": name}) |
		some name
		some a in data.gantry.policies[name].extra_approvals
	],
}
