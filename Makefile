# releasegate — local stack, demo and tests. `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
PY ?= python3
export PYTHON := $(PY)
PROC := deploy/proc.sh
BASELINE := examples/candidates/shop-v1.json

K8S := deploy/k8s
# strict type checking: the contracts, the runtime, the coordinator's saga core, the API and token validation (mypy's strict set in
# pyproject.toml); paths not (yet) present are left out
TYPECHECK_PATHS := contracts releasegate_runtime services/coordinator/saga.py services/coordinator/plans \
    services/coordinator/compensation.py services/coordinator/config.py services/coordinator/upcast.py \
    services/api releasegate_platform/oidc.py

.PHONY: install secrets stack k8s up down reset status demo test test-quick unit lint typecheck check bench \
    bench-quality bench-judge bench-auth bench-fuzz bench-scale bench-notifier bench-chaos bench-chaos-live backup drill bundles schemas shoppers acls

install:            ## apt packages, Kafka jars, Python packages (idempotent)
	bash deploy/stack.sh install

secrets:            ## per-machine passwords and keys in .run/secrets (idempotent; `make stack` does it too)
	$(PY) -m releasegate_runtime.secrets

stack: install      ## Kafka, PostgreSQL, HAProxy, payment sandbox + topics, schema, bundles, first backup
	bash deploy/stack.sh up
	$(PY) -m releasegate_runtime.init_stack
	$(PY) -m shop.build_bundles >/dev/null
	$(PY) -m services.dr_checker.backup shop

k8s:                ## the Kubernetes test cluster: control plane built from Go modules once (cached), started
	bash $(K8S)/build.sh
	@[[ -f $(K8S)/cluster.sh ]] || { echo "$(K8S)/cluster.sh is missing: the kubernetes tests cannot run" >&2; exit 1; }
	bash $(K8S)/cluster.sh up

up: stack           ## the whole local stack: infrastructure, the six services, shop v1, synthetic shoppers
	bash deploy/services.sh start
	$(PY) -m services.deployer.bootstrap $(BASELINE)
	$(MAKE) --no-print-directory shoppers

shoppers:
	$(PROC) start shopper-production -- $(PY) -m shop.shopper --target http://127.0.0.1:18080 --rate 16 \
	    --tenants acme,globex,initech --cards mixed --duration 0
	$(PROC) start shopper-staging -- $(PY) -m shop.shopper --target http://127.0.0.1:18081 --rate 6 \
	    --tenants qa --cards visa --duration 0

down:               ## stop everything started by `make up` (and the Kubernetes test cluster)
	bash deploy/stack.sh down
	if [[ -f $(K8S)/cluster.sh ]]; then bash $(K8S)/cluster.sh down; fi

reset:              ## stop everything (the Kubernetes test cluster too) and delete all local state (.run/)
	bash deploy/stack.sh reset

status:             ## infrastructure, then each service: pid, uptime and crash count (its supervisor restarts it)
	bash deploy/stack.sh status; bash deploy/services.sh status

backup:             ## a real pg_dump of the shop database, recorded in the backup catalog
	$(PY) -m services.dr_checker.backup shop

drill:              ## restore drill: newest shop backup into a scratch database, timed and integrity-checked
	$(PY) -m services.dr_checker.drill shop

bundles:
	$(PY) -m shop.build_bundles

schemas:            ## regenerate the committed JSON Schemas and AsyncAPI document from contracts/
	$(PY) -m contracts.generate
	$(PY) -m releasegate_platform.regional > docs/schemas/regional-config.json

demo: up            ## release v2 (promoted) then v3 (rolled back by itself); exit 0 only if both happened
	$(PY) deploy/demo.py

test: stack k8s     ## the whole suite: unit, integration, kubernetes and e2e against the real local stack
	bash deploy/services.sh stop
	$(PROC) stop shopper-production shopper-staging
	$(PY) -m pytest -ra --durations=60

test-quick: stack k8s  ## everything but the slow end-to-end scenarios
	$(PY) -m pytest -ra -m "not slow"

unit:               ## the unit tests and the architecture rules: no stack, no cluster, no network
	$(PY) -m pytest -ra -p no:cacheprovider -m "not integration and not kubernetes and not slow" \
	    tests/unit tests/test_architecture.py verifiers

lint:               ## ruff: lint and formatting (configuration in pyproject.toml)
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

typecheck:          ## mypy, strict on the contracts, the runtime and the saga core (pyproject.toml)
	$(PY) -m mypy $(wildcard $(TYPECHECK_PATHS))

check: lint typecheck unit  ## every quality gate that needs no stack

bench: up           ## benchmark: time to rollback, per-hop latency vs a bare Kafka round trip
	$(PY) -m bench.rollback_latency

bench-auth: stack    ## benchmark: a hop with and without message authentication (step grants), same run
	$(PY) -m bench.auth_overhead

bench-fuzz: stack    ## benchmark: 10,000 hostile records on every consumed topic; refused, parked, crashes, health, a release after
	bash deploy/services.sh stop
	$(PROC) stop shopper-production shopper-staging
	$(PY) -m bench.fuzz --records 10000

bench-scale: stack  ## benchmark: the hop at rest, then 100, 300, 1,000 concurrent releases through 1-3 coordinators; steps/s, hop p50/p99, CPU, docs/scale.png
	bash deploy/services.sh stop
	$(PY) -m bench.scale

bench-notifier: stack  ## benchmark: the notifier's intake of status events, batched vs one transaction each, same run
	bash deploy/services.sh stop
	$(PY) -m bench.notifier_intake

bench-chaos: stack  ## chaos soak: 200 releases of mixed plans, 100+ SIGKILLs, a broker and a PostgreSQL restart; invariants
	bash deploy/services.sh stop
	$(PY) -m bench.chaos

bench-chaos-live: stack  ## chaos soak of the real services: 24 shop releases, 100+ SIGKILLs at their moments, restarts; invariants
	bash deploy/services.sh stop
	$(PROC) stop shopper-production shopper-staging
	$(PY) -m bench.chaos_live

acls:               ## apply deploy/kafka/acls.yaml to the running broker (credentials, topics, exactly these ACLs)
	$(PY) -m releasegate_runtime.init_stack

bench-quality: up   ## benchmark: releasegate's judge vs a fixed-threshold judge on the same recorded canaries (ARGS="--runs 20 --versions v2,v4")
	$(PY) -m bench.decision_quality $(ARGS)

bench-judge: install  ## benchmark: the judges on 10,000 simulated canaries per scenario vs the oracle (no stack; docs/judge.png)
	$(PY) -m bench.judge
