"""HAProxy's per-request log as the verifier reads it (services/verifier/adapters/haproxy_log.py): one JSON object
per line (deploy/haproxy/haproxy.cfg), every field checked; a value can never shift into another field, and a
line that is not exactly the request object is refused and counted, never guessed at."""

import asyncio
import json
import socket

import pytest

from services.verifier.adapters.haproxy_log import MAX_LINE, LineCounts, MalformedLine, parse, receive


def line(**fields) -> str:
    record = {
        "backend": "shop_production",
        "server": "s2",
        "status": 201,
        "ta": 14,
        "tenant": "acme",
        "version": "v3",
    } | fields
    return json.dumps(record, separators=(",", ":"))


class TestRequestLine:
    def test_parses_environment_server_version_status_latency_tenant(self):
        assert parse(line() + "\n") == ("production", "s2", "v3", 201, 14, "acme")

    def test_a_line_as_haproxy_writes_it(self):
        # captured from HAProxy 2.6.12 with the log-format of deploy/haproxy/haproxy.cfg
        raw = '{"backend":"shop_staging_wave","server":"s1","status":200,"ta":0,"tenant":"globex","version":"v1"}'
        assert parse(raw) == ("staging", "s1", "v1", 200, 0, "globex")

    def test_values_haproxy_does_not_have_become_none(self):
        assert parse(line(tenant="-", version="-", status=503, ta=0)) == ("production", "s2", None, 503, 0, None)

    def test_a_request_answered_by_haproxy_itself_belongs_to_its_frontend_environment(self):
        # maintenance 503s and refused requests (two Host headers) never reach a backend
        assert parse(line(backend="fe_production", server="<NOSRV>", status=400, ta=0, tenant="-", version="-")) == (
            "production",
            "<NOSRV>",
            None,
            400,
            0,
            None,
        )

    @pytest.mark.parametrize("text", ["Proxy fe_production started.", "", "   ", "shop_production s2 201 14 acme v3"])
    def test_lines_that_are_not_request_lines_are_ignored(self, text):
        assert parse(text) is None


class TestNoValueShiftsAnother:
    def test_a_version_with_spaces_and_quotes_stays_one_field_and_is_refused(self):
        # what HAProxy logs when candidate code answers `X-Shop-Version: v9 acme","tenant":"globex`
        raw = line(version='v9 acme","tenant":"globex')
        assert '\\"tenant\\":\\"globex' in raw
        with pytest.raises(MalformedLine) as refused:
            parse(raw)
        assert refused.value.what == "version"

    @pytest.mark.parametrize("version", ["v1 v2", "v1\tx", "v\u00e9", "", "-v1", "v" * 65, "v1\n", "v1\\"])
    def test_versions_outside_the_pattern_are_refused(self, version):
        with pytest.raises(MalformedLine, match="version"):
            parse(line(version=version))

    @pytest.mark.parametrize("tenant", ["ac me", "ACME", "a" * 33, "acme.shop.test", "", "-acme"])
    def test_tenants_outside_haproxys_rule_are_refused(self, tenant):
        with pytest.raises(MalformedLine, match="tenant"):
            parse(line(tenant=tenant))


class TestMalformedLines:
    @pytest.mark.parametrize(
        ("text", "what"),
        [
            ('{"backend":"shop_production","server":"s2"', "line"),  # cut short
            ("{" + " " * MAX_LINE + "}", "line"),  # too long to be HAProxy's
            ('{"backend":' + "[" * 1000, "line"),
            (line()[:-1] + ',"extra":1}', "fields"),
            (json.dumps({"backend": "shop_production", "server": "s2", "status": 1, "ta": 1, "tenant": "-"}), "fields"),
            ("{}", "fields"),
            (line(backend="production"), "backend"),  # no environment in it
            (line(backend="shop_production extra"), "backend"),
            (line(backend=None), "backend"),
            (line(server="s 1"), "server"),
            (line(status="201"), "status"),
            (line(status=True), "status"),
            (line(status=2.5), "status"),
            (line(status=10**400), "status"),
            (line(ta=-2), "ta"),
            (line(ta=2**31), "ta"),
            (line(tenant=None), "tenant"),
            (line(version=["v1"]), "version"),
        ],
    )
    def test_is_refused_with_the_part_that_is_wrong(self, text, what):
        with pytest.raises(MalformedLine) as refused:
            parse(text)
        assert refused.value.what == what


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_the_receiver_hands_on_valid_lines_and_counts_the_refused_ones():
    port, counts, got = free_udp_port(), LineCounts(), asyncio.Queue()

    async def sink(batch):
        for sample in batch:
            got.put_nowait(sample)

    async def next_sample(tenant: str, timeout: float) -> tuple:
        while (sample := await asyncio.wait_for(got.get(), timeout))[5] != tenant:
            pass
        return sample

    task = asyncio.create_task(receive(f"127.0.0.1:{port}", sink, flush_seconds=0, counts=counts))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for attempt in range(100):  # the receiver is listening once a probe line comes back as a sample
                sender.sendto(line(tenant="probe").encode(), ("127.0.0.1", port))
                try:
                    await next_sample("probe", 0.05)
                    break
                except TimeoutError:
                    assert attempt < 99, "the receiver never started listening"
            sender.sendto(
                b'{"backend":\xff\n' + line(version="v9 x").encode() + b"\nProxy fe_production started.\n",
                ("127.0.0.1", port),
            )
            sender.sendto(line(tenant="last").encode(), ("127.0.0.1", port))
            sample = await next_sample("last", 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert sample == ("production", "s2", "v3", 201, 14, "last")
    assert counts.refused == {"line": 1, "version": 1}
    assert "v9 x" in counts.last_refusal
