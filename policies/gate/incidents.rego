# Incident follow-ups: a rolled-back release opens an incident, and its follow-up actions (a new verifier, a policy
# rule, a runbook change, a test) are tracked to closure. The catalog may require that the service's open
# follow-ups of some severities (`incidents.block_production_on_open`, e.g. [high]) are closed before its next
# production release; the coordinator tells the production gate which are open (GateCheckRequested.open_followups).
package releasegate.gate

import rego.v1

blocking_followups := [f |
	some f in input.incidents.open_followups
	f.severity in input.incidents.block_production_on_open
]

deny contains {"rule": "open_followups", "msg": msg} if {
	production
	count(blocking_followups) > 0
	names := [concat("", [f.release_id, "#", format_int(f.followup, 10), " (", f.severity, " ", f.kind, ", ", f.owner, ": ", f.title, ")"]) |
		some f in blocking_followups
	]
	msg := concat("", [
		"open incident follow-ups of ", input.service.name, " must be closed before a production release: ",
		concat("; ", names),
	])
}

# The coordinator always tells a production gate; a command without the fact (an older coordinator) cannot be
# checked against the catalog's requirement, so it is recorded.
warn contains {"rule": "open_followups", "msg": "the gate was not told the service's open incident follow-ups; not checked"} if {
	production
	count(input.incidents.block_production_on_open) > 0
	not input.incidents.known
}
