# Destroying or replacing an RDS instance in a production-tier environment.
# Hard mandatory: nobody overrides it from the approval page. Replacing an
# instance deletes it and its data (whatever the final snapshot settings),
# so such a change is done by hand, with its own runbook, not by a deploy.
package gantry.policies.rds_production_destroy

import rego.v1

import data.gantry.lib.terraform as tf

violations contains {"level": "hard_mandatory", "address": rc.address, "message": message(rc)} if {
	input.context.tier == "production"
	some rc in tf.changes("aws_db_instance")
	tf.deletes(rc)
}

message(rc) := sprintf(
	"%s would be destroyed in production: the database and its data would be deleted.",
	[rc.address],
) if tf.destroys(rc)

else := sprintf(
	"%s would be replaced in production (%s%s): the database and its data would be deleted.",
	[rc.address, tf.describe_actions(rc.change.actions), forced_by(rc)],
)

# Terraform names what forces the replacement (replace_paths, Terraform 1.2+).
forced_by(rc) := sprintf(", forced by %s", [concat(", ", [tf.path_text(path) | some path in rc.change.replace_paths])]) if {
	count(rc.change.replace_paths) > 0
}

else := ""
