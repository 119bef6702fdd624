# An RDS instance created or changed in production without encrypted storage
# or without deletion protection. Soft mandatory: an approver may override
# it with a reason (a short-lived copy for an investigation, say).
#
# The plan must show the setting true: a value known only after apply
# cannot be approved, and the message says that is why.
package gantry.policies.rds_production_settings

import rego.v1

import data.gantry.lib.terraform as tf

required := {
	"storage_encrypted": "encrypted storage",
	"deletion_protection": "deletion protection",
}

violations contains {"level": "soft_mandatory", "address": rc.address, "message": message(rc, setting)} if {
	input.context.tier == "production"
	some rc in tf.changes("aws_db_instance")
	tf.writes(rc)
	some setting, _ in required
	not tf.after(rc, setting) == true
}

message(rc, setting) := sprintf(
	"%s in production: %s is known only after apply, so the plan does not show %s.",
	[rc.address, setting, required[setting]],
) if tf.unknown(rc, setting)

else := sprintf(
	"%s in production has %s = %s: production databases need %s.",
	[rc.address, setting, shown(object.get(rc.change.after, setting, null)), required[setting]],
)

shown(value) := "false" if value == false

else := "null (not set)" if value == null

else := json.marshal(value)
