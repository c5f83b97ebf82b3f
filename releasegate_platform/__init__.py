"""Platform knowledge shared by several services, each module its one owner: the service catalog, the supply chain
(DSSE/in-toto/SLSA), operator identities, the artifact store and bundle reader, the verifier registry, and the
deployment targets (HAProxy runtime API, `local` processes). It imports only `contracts` and `releasegate_runtime`."""
