"""Credentials travel only over verified TLS, or to this machine."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bitmusa_plugin._core import machine as lc
from bitmusa_plugin._engine.pipeline import Pipeline
from bitmusa_plugin._engine.plugins import PluginRegistry
from bitmusa_plugin._engine.secrets import Credentials, InsecureURLError, require_secure
from bitmusa_plugin._engine.stream import AccountConfig, AccountStream


@pytest.mark.parametrize(
    "url",
    [
        "https://openapi.bitmusa.com/api/v2",
        "wss://websocket.bitmusa.com:60002",
        "http://127.0.0.1:8080/api/v2",
        "ws://localhost:9",
        "ws://[::1]:9",
        "http://127.8.9.10",
    ],
)
def test_tls_or_this_machine_is_accepted(url: str) -> None:
    require_secure(url)


@pytest.mark.parametrize(
    "url", ["http://openapi.bitmusa.com/api/v2", "ws://10.0.0.5:60002", "ws://example.com"]
)
def test_plaintext_to_another_host_is_refused_unless_insecure(url: str) -> None:
    with pytest.raises(InsecureURLError, match="not encrypted"):
        require_secure(url)
    require_secure(url, insecure=True)
    credentials = Credentials("api-key-123", "auth-key-123")
    urls: dict[str, Any] = {"ws_url": url} if url.startswith("ws") else {"rest_url": url}
    with pytest.raises(InsecureURLError):
        replace(AccountConfig("a", credentials), **urls)


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[str]:
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def anything(request: web.Request) -> web.Response:
        return web.json_response({"code": 0})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"127.0.0.1:{port}"
    await runner.cleanup()


async def test_a_certificate_that_does_not_verify_fails_with_a_clear_error(
    tls_server: str,
) -> None:
    reasons: list[str] = []

    class States:
        from bitmusa_hookspecs import hookimpl

        @hookimpl
        def on_stream_state(self, state: dict[str, str]) -> None:
            if state["status"] == "connecting" and state["reason"]:
                reasons.append(state["reason"])

    plugins = PluginRegistry()
    plugins.register(States(), "states")
    host = Pipeline(plugins, command="test")
    host.start(["tls"])
    config = AccountConfig(
        "tls",
        Credentials("api-key-123", "auth-key-123"),
        f"https://{tls_server}/api/v2",
        f"wss://{tls_server}",
    )
    stream = AccountStream(config, host, timing=lc.Timing(retry_initial=0.1, retry_max=0.2))
    task = asyncio.get_running_loop().create_task(stream.run())
    await asyncio.sleep(1.0)
    stream.stop()
    await asyncio.wait_for(task, 3)
    await host.dispatcher.drain(2)
    await host.stop()
    assert stream.machine.counters.reconnects == 0
    assert stream.status == "closed"  # never connected: nothing was sent to that server
    # every failed attempt is a state whose reason names the URL and the certificate
    assert reasons
    for reason in reasons:
        assert f"POST https://{tls_server}/api/v2/future/userDataStream" in reason
        assert "TLS certificate not trusted" in reason
        assert "verification stays on" in reason


@pytest.mark.parametrize(
    "argv",
    [
        ["listen", "--auth-key", "s3cr3t-auth-value"],
        ["listen", "--api-key=s3cr3t-auth-value"],
        ["worker", "--redis", "redis://127.0.0.1:1/0", "--secret", "s3cr3t-auth-value"],
    ],
)
def test_a_secret_typed_on_the_command_line_is_not_echoed_by_the_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """There is no such option (credentials come from the environment or a file), and
    the usage error that says so goes to logs: the value the user typed is masked, and
    the line says where credentials come from."""
    from bitmusa_plugin._cli import build_parser

    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "s3cr3t" not in err
    assert "***" in err
    assert "BITMUSA_API_KEY" in err
    assert len(err.strip().splitlines()) == 1


def test_a_key_given_where_its_variables_name_goes_is_refused_and_never_shown() -> None:
    """``accounts add --api-key-env`` takes a variable's name; the key itself typed there
    (a new user's mistake) would be stored in Redis and printed by ``worker status``.
    It is refused, without repeating it."""
    from bitmusa_plugin._scale import registry

    with pytest.raises(ValueError, match="--api-key-env takes the name") as refused:
        registry.AccountRecord("carol", "demo-api-key-0001", "CAROL_AUTH")
    assert "demo-api-key-0001" not in str(refused.value)
    with pytest.raises(ValueError, match="--auth-key-env takes the name"):
        registry.AccountRecord("carol", "CAROL_API", "x y")
    assert registry.AccountRecord("carol", "CAROL_API", "_auth2").auth_key_env == "_auth2"
