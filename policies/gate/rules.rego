# Release gate policy: every rule the gatekeeper applies, with the sentence it explains itself with.
# Conventions as in conftest: `deny` blocks the release with a reason, `warn` is recorded, and `wait` holds it
# until something missing arrives (approvals, a release window). Each entry names its rule so a decision can
# list the result of every rule. Times are epoch seconds computed by the gatekeeper (see policies/README.md).
package releasegate.gate

import rego.v1

rules := {
	"artifact_digest": "the artifact is referenced by an immutable sha256 digest and matches it",
	"signed_provenance": "a trusted builder signed SLSA provenance for exactly this artifact",
	"allowed_source": "the artifact was built from an allowed repository and ref",
	"catalog_entry": "the service is in the catalog and deploys to the environment",
	"tests_passed": "upstream tests passed",
	"passed_staging": "production only takes a digest that passed staging verification",
	"vulnerabilities": "no vulnerability above the severity the tier allows",
	"security_controls": "the environment has every security control the service needs",
	"migration_safety": "schema migrations are safe for a zero-downtime release",
	"expand_contract": "a contract migration only drops what production no longer uses",
	"approvals": "risky changes have enough approvals from the approver group",
	"freeze_window": "no freeze window blocks this change, or an exception was approved",
	"business_hours": "production releases of this tier run inside business hours",
	"parity": "staging matches production, or each difference is documented in deploy/parity.yaml",
	"regional_config": "the regional configuration matches its schema and holds secret references only",
	"open_followups": "no open incident follow-up of a severity the catalog blocks on (closed before production)",
}

production if input.environment == "production"

deny contains {"rule": "catalog_entry", "msg": input.catalog.error} if is_string(input.catalog.error)

deny contains {"rule": "catalog_entry", "msg": msg} if {
	not is_string(input.catalog.error)
	not input.environment in input.service.environments
	msg := sprintf("%s has no %s environment in the catalog", [input.service.name, input.environment])
}

deny contains {"rule": "tests_passed", "msg": msg} if {
	not tests_green
	msg := sprintf("upstream tests: %d passed, %d failed in %s", [input.tests.passed, input.tests.failed, input.tests.suite])
}

tests_green if {
	input.tests.failed == 0
	input.tests.passed > 0
}

deny contains {"rule": "passed_staging", "msg": "production only takes a digest that already passed staging verification"} if {
	production
	not input.staging.verified
}
