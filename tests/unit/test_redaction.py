"""Log redaction: secrets never reach a log line, and no value, however hostile, makes redaction slow (it runs on
the event loop, before every line is written)."""

from __future__ import annotations

import itertools
import re

import pytest

from releasegate_runtime import logs
from releasegate_runtime.logs import REDACTED, redact, redact_url_passwords

# the regex redaction used before: the reference for which passwords are found
BACKTRACKING = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@\s]+@", re.I)
MILLION = 1_000_000


class TestSecretsAreRedacted:
    def test_the_password_of_a_connection_url_is_replaced(self):
        assert (
            redact("connecting to postgresql://rg_deployer:s3cr3t@127.0.0.1:15432/releasegate")
            == f"connecting to postgresql://rg_deployer:{REDACTED}@127.0.0.1:15432/releasegate"
        )

    def test_every_url_in_a_value_is_redacted(self):
        assert (
            redact("a HTTPS://u:p@h and redis://x:y:z@h2 but not ftp://anonymous@h3")
            == f"a HTTPS://u:{REDACTED}@h and redis://x:{REDACTED}@h2 but not ftp://anonymous@h3"
        )

    def test_values_of_secret_named_keys_are_replaced_at_any_depth(self):
        event = {
            "event": "login",
            "Password": "hunter2",
            "nested": [{"api_key": "k", "note": "ok"}],
            "tuple": ("amqp://a:b@c",),
        }
        assert redact(event) == {
            "event": "login",
            "Password": REDACTED,
            "nested": [{"api_key": REDACTED, "note": "ok"}],
            "tuple": [f"amqp://a:{REDACTED}@c"],
        }

    def test_a_traceback_is_kept_longer_than_other_values_and_redacted_too(self):
        trace = "Traceback\n" + "  frame\n" * 2000 + "OSError: postgresql://u:pw@h refused"
        out = logs._redact_processor(None, "error", {"event": "x", "exception": trace})
        assert out["exception"] == trace.replace("u:pw@", f"u:{REDACTED}@") and len(trace) > logs.STRING_LIMIT
        huge = logs._redact_processor(None, "error", {"event": "x", "exception": trace * 10})
        assert huge["exception"].endswith("more characters]")


class TestTheScanFindsWhatTheRegexFound:
    def test_every_short_string_of_url_fragments_is_redacted_as_the_regex_did(self):
        pieces = ["a", "Z9", ":", "/", "@", " ", "://", "+"]
        for n in range(6):
            for parts in itertools.product(pieces, repeat=n):
                text = "".join(parts)
                assert redact_url_passwords(text) == BACKTRACKING.sub(rf"\g<scheme>{REDACTED}@", text), text


class TestHostileValuesAreBounded:
    @pytest.mark.parametrize(
        "unit,redacted",
        [
            ("a", "a"),
            ("a://", "a://"),
            ("x://a:", "x://a:"),
            ("://", "://"),
            ("a://b:c ", "a://b:c "),
            ("a:b@", "a:b@"),
            ("1+.-", "1+.-"),
            ("x://a:b@", f"x://a:{REDACTED}@"),
            ("a://b:c@d", f"a://b:{REDACTED}@d"),
        ],
    )
    def test_a_million_characters_of_url_fragments_are_scanned_whole_in_one_pass(self, unit, redacted):
        """The scan itself, without the length bound: it is linear, so even a million characters finish at
        once (the regex took about 20 s for 40,000 letters)."""
        copies = MILLION // len(unit)
        assert redact_url_passwords(unit * copies) == redacted * copies

    def test_a_long_value_is_cut_to_the_limit_with_a_marker(self):
        out = redact("x://a:" * MILLION)
        assert out.startswith("x://a:x://a:")
        assert out.endswith(f"[{6 * MILLION - logs.STRING_LIMIT} more characters]")
        assert len(out) < logs.STRING_LIMIT + 40

    def test_long_keys_and_deep_nesting_are_bounded(self):
        deep: object = "leaf"
        for _ in range(10_000):
            deep = [deep]
        out = redact({"k" * MILLION: deep})
        (key,) = out
        assert len(key) < 300
        level = out[key]
        for _ in range(logs.DEPTH_LIMIT - 1):
            level = level[0]
        assert level == f"[nested deeper than {logs.DEPTH_LIMIT} levels]"
