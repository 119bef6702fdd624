# A plan that raises the environment's monthly cost by more than its limit
# needs one more approval, from the group named for it (finance, say). Not a
# violation: the deployment goes on once that group has approved too.
#
# context.cost is the plan's estimate (environments/pricing.py) or null when
# there is none; context.cost_increase_limit_usd is null when the
# environment sets no limit.
package gantry.policies.cost_increase_approval

import rego.v1

extra_approvals contains {"group": group, "count": 1, "message": message} if {
	cost := input.context.cost
	limit := input.context.cost_increase_limit_usd
	is_number(limit)
	is_number(cost.delta_usd)
	cost.delta_usd > limit
	group := input.context.cost_approval_group
	message := sprintf(
		"The plan raises the monthly cost by $%.2f (from $%.2f to $%.2f), above the $%.2f limit: one more approval from %s is needed.",
		[cost.delta_usd, cost.previous_monthly_usd, cost.monthly_total_usd, limit, group],
	)
}
