# Supply chain: only signed, provenance-checked artifacts from allowed sources move on. Signatures are checked
# by the gatekeeper against the trust root (offline); this policy judges the facts it found.
package releasegate.gate

import rego.v1

deny contains {"rule": "artifact_digest", "msg": input.artifact.error} if is_string(input.artifact.error)

deny contains {"rule": "signed_provenance", "msg": msg} if {
	some msg in input.attestation.problems
	not source_problem(msg)
}

deny contains {"rule": "allowed_source", "msg": msg} if {
	some msg in input.attestation.problems
	source_problem(msg)
}

source_problem(msg) if startswith(msg, "source ")

# Vulnerability summary: the tier sets the highest severity allowed (data.vulnerabilities).
severities := ["low", "medium", "high", "critical"]

deny contains {"rule": "vulnerabilities", "msg": msg} if {
	not input.vulnerabilities.present
	data.vulnerabilities.require_scan[sprintf("%d", [input.service.tier])]
	msg := sprintf("tier %d services need a vulnerability summary with the candidate; none was given", [input.service.tier])
}

deny contains {"rule": "vulnerabilities", "msg": msg} if {
	input.vulnerabilities.present
	allowed := data.vulnerabilities.max_severity[sprintf("%d", [input.service.tier])]
	some i, sev in severities
	some j, allowed_sev in severities
	allowed_sev == allowed
	i > j
	input.vulnerabilities[sev] > 0
	msg := sprintf("%d %s vulnerabilities; tier %d allows at most %s", [input.vulnerabilities[sev], sev, input.service.tier, allowed])
}

warn contains {"rule": "vulnerabilities", "msg": msg} if {
	input.vulnerabilities.present
	input.vulnerabilities.medium > 0
	msg := sprintf("%d medium vulnerabilities recorded", [input.vulnerabilities.medium])
}
