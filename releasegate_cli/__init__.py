"""The `releasegate` command line: submit candidates, follow and steer releases."""
