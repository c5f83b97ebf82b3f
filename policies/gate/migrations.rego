# Schema migrations, expand and contract. The gatekeeper parses every migration with PostgreSQL's own parser
# (pglast) and passes the findings; expand migrations may run before the new code, contract migrations only
# once the release in production no longer uses what they drop.
package releasegate.gate

import rego.v1

deny contains {"rule": "migration_safety", "msg": msg} if {
	some m in input.migrations
	some f in m.findings
	f.severity == "error"
	not contract_rule(f.rule)
	msg := sprintf("%s: %s", [m.name, f.message])
}

warn contains {"rule": "migration_safety", "msg": msg} if {
	some m in input.migrations
	some f in m.findings
	f.severity == "warning"
	msg := sprintf("%s: %s", [m.name, f.message])
}

# Findings that make a migration contract: judged by expand_contract below, not blocked outright.
contract_rule(rule) if rule in {"drop_column", "drop_table", "rename"}

deny contains {"rule": "expand_contract", "msg": msg} if {
	some m in input.migrations
	m.kind == "contract"
	some object in m.drops
	object_in_use(object, input.schema.candidate_uses)
	msg := sprintf("%s drops %s, but this release's own code still uses it", [m.name, object])
}

deny contains {"rule": "expand_contract", "msg": msg} if {
	production_usage_unknown
	some m in input.migrations
	m.kind == "contract"
	msg := sprintf("%s is a contract migration, but the release in production (%s) does not declare the schema it uses; ship and promote a release that declares it first", [m.name, object.get(input.schema, "production_version", "unknown")])
}

deny contains {"rule": "expand_contract", "msg": msg} if {
	not production_usage_unknown
	some m in input.migrations
	m.kind == "contract"
	some object in m.drops
	object_in_use(object, input.schema.production_uses)
	msg := sprintf("%s drops %s, which %s (promoted in production) still uses; first promote a release that stops using it, then contract", [m.name, object, input.schema.production_version])
}

production_usage_unknown if input.schema.production_uses == null

production_usage_unknown if not input.schema.production_uses

# `orders` dropped while `orders.note` is used, or exactly the used column dropped.
object_in_use(object, uses) if object in uses

object_in_use(object, uses) if {
	some used in uses
	startswith(used, concat("", [object, "."]))
}

# Migration presence requires proof of recovery before the change goes further.
requires contains "dr-check" if count(input.migrations) > 0
