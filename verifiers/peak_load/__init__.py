"""peak-load: the load gate at staging (a releasegate verifier). Run it with `python -m verifiers.peak_load`; its
check is in check.py, its judgement in judge.py, the load (Locust) in load.py and locustfile.py."""
