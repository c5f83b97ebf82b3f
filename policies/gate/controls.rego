# Environment security controls: each environment manifest declares what it has; the catalog says what a
# service needs (an ERP connector needs private connectivity).
package releasegate.gate

import rego.v1

deny contains {"rule": "security_controls", "msg": msg} if {
	some control in input.service.security_controls
	not control in input.environment_controls
	msg := sprintf("%s requires security control %q, which the %s environment does not declare", [input.service.name, control, input.environment])
}
