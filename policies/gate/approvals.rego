# regopy quotes a computed string passed to sprintf's %s, so such strings are joined with concat instead.
# Approvals: N distinct approvers from the service's approver group, never the change's author, not expired.
# The gatekeeper verified each signature; this policy decides which approvals count.
package releasegate.gate

import rego.v1

required_approvals := 0 if not production

required_approvals := data.approvals.required[risk] if production

counted(kind, group) := {a.actor |
	some a in input.approvals
	a.kind == kind
	a.signature_valid
	a.actor != input.change.author
	a.age_seconds <= data.approvals.ttl_seconds
	group in a.groups
}

approvers := counted("approval", input.service.approver_group)

wait contains {"rule": "approvals", "msg": msg} if {
	count(approvers) < required_approvals
	msg := concat("", [
		risk, " risk (", concat(", ", sort(risk_reasons)), "): needs ",
		sprintf("%d approvals from %s, has %d", [required_approvals, input.service.approver_group, count(approvers)]),
		approver_list,
	])
}

approver_list := "" if count(approvers) == 0

approver_list := concat("", [" (", concat(", ", sort(approvers)), ")"]) if count(approvers) > 0

# Every approval that does not count is refused with its reason, and recorded.
refused contains sprintf("%s: %s", [a.actor, a.refused_reason]) if {
	some a in input.approvals
	not a.signature_valid
}

refused contains sprintf("%s: the author of a change cannot approve it", [a.actor]) if {
	some a in input.approvals
	a.signature_valid
	a.actor == input.change.author
}

refused contains sprintf("%s: not in the %s group required for a %s", [a.actor, group_for(a.kind), a.kind]) if {
	some a in input.approvals
	a.signature_valid
	a.actor != input.change.author
	a.kind in {"approval", "exception"}
	not group_for(a.kind) in a.groups
}

refused contains sprintf("%s: %s expired %d s ago", [a.actor, a.kind, a.age_seconds - data.approvals.ttl_seconds]) if {
	some a in input.approvals
	a.signature_valid
	a.age_seconds > data.approvals.ttl_seconds
}

group_for("approval") := input.service.approver_group

group_for("exception") := input.service.exception_group

warn contains {"rule": "approvals", "msg": sprintf("approval refused: %s", [r])} if some r in refused
