"""Kafka topic names. The first four and `release.verifiers` are public; the rest are internal to releasegate."""

CANDIDATES = "release.candidates"
STATUS = "release.status"
ALERTS = "release.alerts"
DEADLETTER = "release.deadletter"

CONTROL = "release.control"
RESULTS = "release.results"
GATE_COMMANDS = "release.commands.gatekeeper"
DR_COMMANDS = "release.commands.dr-checker"
DEPLOY_COMMANDS = "release.commands.deployer"
VERIFY_COMMANDS = "release.commands.verifier"
ROLLBACK_COMMANDS = "release.commands.rollback"

VERIFIERS = "release.verifiers"

SHOP_EVENTS = "shop.events"

ALL = [
    CANDIDATES, STATUS, ALERTS, DEADLETTER, CONTROL, RESULTS, GATE_COMMANDS, DR_COMMANDS,
    DEPLOY_COMMANDS, VERIFY_COMMANDS, ROLLBACK_COMMANDS, VERIFIERS, SHOP_EVENTS,
]
