"""Kafka topic names. The first four are public; the rest are internal to releasegate. Who may write and read
each one: deploy/kafka/acls.yaml."""

CANDIDATES = "release.candidates"
STATUS = "release.status"
ALERTS = "release.alerts"
DEADLETTER = "release.deadletter"

CONTROL = "release.control"
RESULTS_PREFIX = "release.results."
GATE_COMMANDS = "release.commands.gatekeeper"
DR_COMMANDS = "release.commands.dr-checker"
DEPLOY_COMMANDS = "release.commands.deployer"
VERIFY_COMMANDS = "release.commands.verifier"
ROLLBACK_COMMANDS = "release.commands.rollback"
# The deployer's read model (EnvironmentState), compacted, keyed by service and environment; only it writes.
ENVIRONMENTS = "release.environments"

SHOP_EVENTS = "shop.events"

ALL = [
    CANDIDATES,
    STATUS,
    ALERTS,
    DEADLETTER,
    CONTROL,
    GATE_COMMANDS,
    DR_COMMANDS,
    DEPLOY_COMMANDS,
    VERIFY_COMMANDS,
    ROLLBACK_COMMANDS,
    ENVIRONMENTS,
    SHOP_EVENTS,
]

# Topics whose records are states keyed by what they describe: Kafka keeps the latest record per key.
COMPACTED = frozenset({ENVIRONMENTS})


def results_for(principal: str) -> str:
    """The topic only `principal` may write: its step results (and a verifier's heartbeats and verdicts), so the
    coordinator knows who sent each one from where it arrived."""
    return RESULTS_PREFIX + principal
