"""releasegate's microservices: one sub-package per OS process, plus `common` for what they share."""
