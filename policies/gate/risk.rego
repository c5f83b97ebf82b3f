# Risk classification from the service tier and the change itself. Low risk flows without ceremony; medium
# and high need approvals in production (data.approvals.required).
package releasegate.gate

import rego.v1

critical_domains := {"checkout", "payment", "pricing", "erp-sync"}

touches_critical_domain if {
	some d in input.change.domains
	d in critical_domains
}

large_change if input.change.lines_changed > data.risk.large_change_lines

risk_reasons contains "schema migration present" if count(input.migrations) > 0

risk_reasons contains concat("", ["touches ", concat(", ", sort([d | some d in input.change.domains; d in critical_domains]))]) if {
	touches_critical_domain
}

risk_reasons contains sprintf("large change: %d lines", [input.change.lines_changed]) if large_change

risk_reasons contains "catalog requires approval for every release" if input.service.approval_required

risk_reasons contains concat("", ["unclassified files changed: ", concat(", ", input.change.unclassified)]) if {
	count(input.change.unclassified) > 0
}

risk := "high" if {
	input.service.tier == 1
	high_signal
} else := "medium" if {
	count(risk_reasons) > 0
} else := "low"

high_signal if touches_critical_domain

high_signal if count(input.migrations) > 0

high_signal if large_change

high_signal if input.service.approval_required
