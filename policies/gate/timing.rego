# Freeze windows and business hours, computed by the gatekeeper from the calendar (IANA zones) and passed in as
# booleans and epoch seconds. During a freeze content may ship; frozen domains need an exception approval
# from the elevated group.
package releasegate.gate

import rego.v1

exceptions := counted("exception", input.service.exception_group)

wait contains {"rule": "freeze_window", "msg": msg} if {
	production
	input.timing.frozen
	count(exceptions) == 0
	msg := concat("", [
		concat(", ", input.timing.frozen_domains),
		sprintf(" changes are frozen by %s; waiting for it to end or for an exception approval from %s", [
			input.timing.freeze_name, input.service.exception_group,
		]),
	])
}

warn contains {"rule": "freeze_window", "msg": msg} if {
	production
	input.timing.frozen
	count(exceptions) > 0
	msg := concat("", [sprintf("released during %s on an exception approved by ", [input.timing.freeze_name]), concat(", ", sort(exceptions))])
}

wait contains {"rule": "business_hours", "msg": msg} if {
	production
	not input.timing.inside_business_hours
	count(exceptions) == 0
	msg := input.timing.business_hours_reason
}
