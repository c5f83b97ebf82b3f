"""HAProxy runtime API commands are built from checked names only: an argument that could split or change a
command is refused with a ValueError and nothing is sent (a recording transport stands in for HAProxy)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from releasegate_platform.haproxy import HAProxy, HAProxyError, UnsafeArgument
from releasegate_platform.local_target import LocalTarget, backend_for, wave_backend_for

MAP = "/srv/releasegate/.run/haproxy/tenants-production.map"


class Recorder:
    """Stands in for the runtime API socket: records each command line, answers like HAProxy."""

    def __init__(self, replies: dict[bytes, bytes] | None = None) -> None:
        self.sent: list[bytes] = []
        self._replies = replies or {}

    async def __call__(self, line: bytes) -> bytes:
        self.sent.append(line)
        return next((reply for prefix, reply in self._replies.items() if line.startswith(prefix)), b"\n")


def client(**replies: bytes) -> tuple[HAProxy, Recorder]:
    recorder = Recorder({k.replace("_", " ").encode(): v for k, v in replies.items()})
    return HAProxy("/unused.sock", transport=recorder), recorder


class TestCommandsSent:
    async def test_weight_state_and_address_are_one_line_each(self):
        haproxy, sent = client()
        await haproxy.set_weight("shop_production", "s2", 50)
        await haproxy.set_state("shop_production", "s2", "drain")
        await haproxy.point("shop_production_wave", "s2", 20101)
        assert sent.sent == [
            b"set weight shop_production/s2 50\n",
            b"set server shop_production/s2 state drain\n",
            b"set server shop_production_wave/s2 addr 127.0.0.1 port 20101\n",
        ]

    async def test_a_new_map_key_is_added_and_a_known_one_set(self):
        haproxy, sent = client(show_map=b"0x1 acme shop_production_wave\n")
        await haproxy.map_set(MAP, "globex", "shop_production_wave")
        await haproxy.map_set(MAP, "acme", "shop_production")
        assert sent.sent[1] == f"add map {MAP} globex shop_production_wave\n".encode()
        assert sent.sent[3] == f"set map {MAP} acme shop_production\n".encode()

    async def test_a_refusal_from_haproxy_is_an_error_naming_the_command(self):
        haproxy, _ = client(set_weight=b"No such server.\n")
        with pytest.raises(HAProxyError, match="set weight shop_production/s9 10"):
            await haproxy.set_weight("shop_production", "s9", 10)


class TestReplies:
    """HAProxy 2.6's own words (recorded from the stack's runtime API): a refusal is an error, never an empty
    answer, and data that merely contains such a word is data."""

    async def test_servers_of_a_backend_haproxy_does_not_have_is_an_error_not_an_empty_list(self):
        haproxy, _ = client(show_servers=b"Can't find backend.\n\n")
        with pytest.raises(HAProxyError, match="Can't find backend"):
            await haproxy.servers("shop_staging_wave")

    @pytest.mark.parametrize(
        "call",
        [
            lambda h: h.map_entries(MAP),
            lambda h: h.map_set(MAP, "acme", "shop_production_wave"),
            lambda h: h.map_del(MAP, "acme"),
            lambda h: h.map_clear(MAP),
        ],
    )
    async def test_every_map_command_on_a_map_haproxy_does_not_know_is_an_error(self, call):
        haproxy, _ = client(
            show_map=b"Unknown map identifier. Please use #<id> or <file>.\n\n",
            add_map=b"Unknown map identifier. Please use #<id> or <file>.\n\n",
            del_map=b"Unknown map identifier. Please use #<id> or <file>.\n\n",
            clear_map=b"Unknown map identifier. Please use #<id> or <file>.\n\n",
        )
        with pytest.raises(HAProxyError, match="Unknown map identifier"):
            await call(haproxy)

    @pytest.mark.parametrize(
        "command, reply",
        [
            (lambda h: h.set_state("shop_production", "s1", "ready"), b"'set server <srv> state' expects 'ready'\n"),
            (lambda h: h.set_weight("shop_production", "s1", 1), b"Backend is using a static LB algorithm\n"),
            (lambda h: h.map_del(MAP, "acme"), b"Key not found.\n\n"),
        ],
    )
    async def test_other_refusals_are_errors(self, command, reply):
        haproxy, _ = client(set_server=reply, set_weight=reply, del_map=reply)
        with pytest.raises(HAProxyError, match="HAProxy refused"):
            await command(haproxy)

    async def test_a_map_entry_named_like_a_refusal_is_read_as_an_entry(self):
        haproxy, _ = client(show_map=b"0x1 invalid shop_production_wave\n0x2 required-co shop_production_wave\n")
        assert await haproxy.map_entries(MAP) == {
            "invalid": "shop_production_wave",
            "required-co": "shop_production_wave",
        }

    async def test_a_new_address_is_reported_not_refused(self):
        haproxy, _ = client(
            set_server=b"IP changed from '127.0.0.1' to '127.0.0.1', port changed from '9' to '20101'\n"
        )
        await haproxy.point("shop_production", "s1", 20101)


class TestHostileArguments:
    @pytest.mark.parametrize(
        "tenant",
        [
            "acme;set server shop_production/s1 addr 10.0.0.1 port 22",
            "acme beta",
            "acme\nclear map x",
            "acme\\;x",
            "acme\t",
            "acme\x00",
            "'acme'",
            "ACME",
            "",
            "a" * 200,
        ],
    )
    async def test_a_map_key_that_is_not_a_plain_name_is_refused_and_nothing_is_sent(self, tenant):
        haproxy, sent = client()
        with pytest.raises(ValueError, match="map key"):
            await haproxy.map_set(MAP, tenant, "shop_production_wave")
        assert sent.sent == []

    @pytest.mark.parametrize(
        "call",
        [
            lambda h: h.set_weight("shop_production;shutdown sessions", "s1", 1),
            lambda h: h.set_weight("shop_production", "s1 ", 1),
            lambda h: h.set_weight("shop_production", "s1", 10_000),
            lambda h: h.set_weight("shop_production", "s1", True),
            lambda h: h.set_state("shop_production", "s1", "ready;clear map x"),
            lambda h: h.point("shop_production", "s1", 20101, addr="10.0.0.1;x"),
            lambda h: h.point("shop_production", "s1", 0),
            lambda h: h.map_set(MAP, "acme", "shop_production wave"),
            lambda h: h.map_clear(MAP + " ; show env"),
            lambda h: h.map_clear("/srv/../etc/passwd"),
            lambda h: h.map_clear("relative.map"),
            lambda h: h.map_del(MAP, "acme;clear map x"),
            lambda h: h.servers("shop_production\r\nshow env"),
        ],
    )
    async def test_every_role_checks_its_argument_before_anything_is_sent(self, call):
        haproxy, sent = client()
        with pytest.raises(UnsafeArgument):
            await call(haproxy)
        assert sent.sent == []

    def test_the_refusal_is_a_value_error_and_an_haproxy_error(self):
        assert issubclass(UnsafeArgument, ValueError) and issubclass(UnsafeArgument, HAProxyError)


class FakePool:
    """No instance is live: only the map commands of the local target are exercised."""

    def acquire(self):
        return self

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False

    async def fetch(self, *args):
        return []


class TestLocalTarget:
    @pytest.fixture
    def target(self, tmp_path: Path) -> tuple[LocalTarget, Recorder]:
        (tmp_path / "haproxy").mkdir()
        (tmp_path / "haproxy" / "tenants-production.map").write_text("")
        (tmp_path / "haproxy" / "maintenance-production.map").write_text("")
        recorder = Recorder()
        return LocalTarget(FakePool(), HAProxy("/unused.sock", transport=recorder), tmp_path), recorder

    async def test_routes_checked_tenants_to_the_wave_backend(self, target):
        local, recorder = target
        await local.route_tenants("shop", "production", ["acme", "globex"])
        assert [line for line in recorder.sent if line.startswith(b"add")] == [
            f"add map {local.tenant_map('production')} {t} shop_production_wave\n".encode() for t in ("acme", "globex")
        ]

    async def test_an_injected_tenant_moves_nobody_and_sends_nothing(self, target):
        local, recorder = target
        with pytest.raises(ValueError, match="tenant 'acme;set server"):
            await local.route_tenants(
                "shop", "production", ["globex", "acme;set server shop_production/s1 addr 10.0.0.1 port 22"]
            )
        assert recorder.sent == []

    @pytest.mark.parametrize(
        "service, environment",
        [("shop;x", "production"), ("shop", "../../etc"), ("shop", "production x"), ("Shop", "production")],
    )
    async def test_service_and_environment_are_names_before_any_command_or_path(self, target, service, environment):
        local, recorder = target
        for call in (
            local.route_tenants(service, environment, ["acme"]),
            local.maintenance(service, environment, on=True),
            local.split(service, environment, {"v2": 100}),
            local.clear_tenant_routes(service, environment),
        ):
            with pytest.raises(UnsafeArgument):
                await call
        assert recorder.sent == []

    async def test_versions_in_a_split_are_names(self, target):
        local, recorder = target
        with pytest.raises(UnsafeArgument, match="version"):
            await local.split("shop", "production", {"v2 ;x": 100})
        assert recorder.sent == []

    async def test_maintenance_off_deletes_the_service_key(self, target):
        local, _ = target
        recorder = Recorder({b"show map": b"0x1 shop 1\n"})
        local.haproxy = HAProxy("/unused.sock", transport=recorder)
        await local.maintenance("shop", "production", on=False)
        assert recorder.sent[-1] == f"del map {local.maintenance_map('production')} shop\n".encode()

    def test_backend_names_come_from_checked_names(self):
        assert (backend_for("shop", "production"), wave_backend_for("shop", "staging")) == (
            "shop_production",
            "shop_staging_wave",
        )
        with pytest.raises(ValueError):
            backend_for("shop", "production/s1 addr")


class TestSocketTransport:
    async def test_sends_one_line_and_reads_the_reply_to_the_end(self, tmp_path: Path):
        received: list[bytes] = []

        async def answer(reader, writer):
            received.append(await reader.readline())
            writer.write(b"0x1 acme shop_production_wave\n" * 5000)
            await writer.drain()
            writer.close()

        server = await asyncio.start_unix_server(answer, path=str(tmp_path / "admin.sock"))
        async with server:
            entries = await HAProxy(str(tmp_path / "admin.sock")).map_entries(MAP)
        assert received == [f"show map {MAP}\n".encode()] and entries == {"acme": "shop_production_wave"}

    async def test_an_absent_socket_is_an_haproxy_error(self, tmp_path: Path):
        with pytest.raises(HAProxyError, match="unreachable"):
            await HAProxy(str(tmp_path / "absent.sock")).map_entries(MAP)
