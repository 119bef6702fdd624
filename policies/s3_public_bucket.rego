# An S3 bucket made public: a public canned ACL (on aws_s3_bucket or
# aws_s3_bucket_acl), a grant to everyone or to every AWS account, or a
# public access block that leaves any of its four settings off. Soft
# mandatory: some buckets are public on purpose (a static site), and an
# approver with the right may override it with a reason.
package gantry.policies.s3_public_bucket

import rego.v1

import data.gantry.lib.terraform as tf

# Canned ACLs that open the bucket beyond its account. AWS counts
# "authenticated-read" (any AWS account at all) as public too.
public_acls := {"public-read", "public-read-write", "authenticated-read"}

public_grantees := {
	"http://acs.amazonaws.com/groups/global/AllUsers": "everyone",
	"http://acs.amazonaws.com/groups/global/AuthenticatedUsers": "every AWS account",
}

block_settings := ["block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"]

acl_types := {"aws_s3_bucket", "aws_s3_bucket_acl"}

violations contains violation(rc, sprintf("%s sets the public ACL %s.", [rc.address, acl])) if {
	some kind in acl_types
	some rc in tf.changes(kind)
	tf.writes(rc)
	acl := tf.after(rc, "acl")
	acl in public_acls
}

# Grants spelled out: aws_s3_bucket's grant blocks, aws_s3_bucket_acl's
# access_control_policy. walk finds the grantee URI at whatever depth the
# provider version nests it; only those blocks are walked, not the whole
# resource (tags, policies), which costs most of the time on large plans.
grant_blocks := {"aws_s3_bucket": "grant", "aws_s3_bucket_acl": "access_control_policy"}

violations contains violation(rc, sprintf("%s grants access to %s (%s).", [rc.address, who, uri])) if {
	some kind, block in grant_blocks
	some rc in tf.changes(kind)
	tf.writes(rc)
	grants := tf.after(rc, block)
	walk(grants, [path, uri])
	path[count(path) - 1] == "uri"
	who := public_grantees[uri]
}

violations contains violation(rc, message) if {
	some rc in tf.changes("aws_s3_bucket_public_access_block")
	tf.writes(rc)
	off := [setting |
		some setting in block_settings
		not tf.unknown(rc, setting)
		not tf.after(rc, setting) == true # false, or null: the provider's default is false
	]
	count(off) > 0
	message := sprintf("%s turns off %s: the bucket can be made public.", [rc.address, concat(", ", off)])
}

# A setting known only after apply cannot be shown to block anything.
violations contains violation(rc, message) if {
	some rc in tf.changes("aws_s3_bucket_public_access_block")
	tf.writes(rc)
	unknown := [setting |
		some setting in block_settings
		tf.unknown(rc, setting)
	]
	count(unknown) > 0
	message := sprintf(
		"%s leaves %s unknown until apply: the plan does not show that public access is blocked.",
		[rc.address, concat(", ", unknown)],
	)
}

violation(rc, message) := {"level": "soft_mandatory", "address": rc.address, "message": message}
