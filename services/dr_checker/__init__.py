"""DR-checker: proves recovery is possible (backup freshness within the tier's RPO) before risky releases."""
