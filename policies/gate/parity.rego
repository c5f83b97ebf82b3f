# Staging/production parity and the regional configuration. The gatekeeper measures parity for a production gate
# (releasegate_platform/parity.py); a difference deploy/parity.yaml does not accept with exactly its values is
# drift, and parity that could not be measured (a probe failed, the file is invalid) blocks like drift. Messages
# are joined with concat: regopy's sprintf does not escape the strings it inserts (test_regopy_known_issues.py).
package releasegate.gate

import rego.v1

deny contains {"rule": "parity", "msg": msg} if {
	production
	some drift in input.parity.drift
	msg := concat("", ["staging differs from production where deploy/parity.yaml does not say it may: ", drift.msg])
}

deny contains {"rule": "parity", "msg": msg} if {
	production
	some error in input.parity.errors
	msg := concat("", ["parity with staging could not be measured: ", error])
}

deny contains {"rule": "parity", "msg": "no parity report for a production gate: staging and production were not compared"} if {
	production
	not is_object(input.parity)
}

deny contains {"rule": "regional_config", "msg": msg} if {
	some problem in input.regional.problems
	msg := concat("", ["regional configuration refused: ", problem])
}

deny contains {"rule": "regional_config", "msg": "the candidate drops the regional configuration production runs with (config/regions/)"} if {
	input.regional.removed
}
