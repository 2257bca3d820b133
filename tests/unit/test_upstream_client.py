"""`UpstreamClient` against a real token-auth docker-registry and the Docker Hub-style token
server from tests/support. Only the redirect and the fault tests use tiny local servers:
a real registry cannot be told to redirect, hang or vanish on cue."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from dproxy_fetcher.upstream import MAX_REDIRECTS, Credentials, UpstreamClient, UpstreamError
from dproxy_shared.coordination import MemoryCache
from dproxy_shared.oci.media_types import UPSTREAM_ACCEPT
from tests.support import Image, ImageBuilder, TokenServer, UpstreamRegistry
from tests.support.upstream import free_port

ALICE = Credentials("alice", "alice-secret")
MANIFEST_HEADERS = {"Accept": UPSTREAM_ACCEPT}


@dataclass
class Upstream:
    tokens: TokenServer
    registry: UpstreamRegistry


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    builder = ImageBuilder(tmp_path_factory.mktemp("images"), seed=41)
    return builder.oci_image("upstream-client", layer_sizes=(64 * 1024,))


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory, image: Image) -> Iterator[Upstream]:
    root = tmp_path_factory.mktemp("upstream")
    tokens = TokenServer(root / "tokens").start()
    registry = UpstreamRegistry(root / "registry", token_auth=tokens).start()
    try:
        for repository in ("library/alpine", "library/busybox", "alice/private"):
            registry.push(image, repository, "latest")
        yield Upstream(tokens, registry)
    finally:
        registry.stop()
        tokens.stop()


@pytest.fixture
def tokens(upstream: Upstream) -> Iterator[TokenServer]:
    upstream.tokens.reset_stats()
    yield upstream.tokens
    upstream.tokens.fail_with = None


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as client:
        yield client


@pytest.fixture
def auth_front(
    tmp_path: Path, upstream: Upstream
) -> Iterator[Callable[[int], tuple[TokenServer, UpstreamRegistry]]]:
    """Another token server (with its own `expires_in`) and a registry trusting it, serving
    the same storage as `upstream`."""
    with contextlib.ExitStack() as stack:

        def make(expires_in: int) -> tuple[TokenServer, UpstreamRegistry]:
            work = tmp_path / f"front-{expires_in}"
            tokens = stack.enter_context(TokenServer(work / "tokens", expires_in=expires_in))
            registry = UpstreamRegistry(
                work / "registry",
                token_auth=tokens,
                storage_root=upstream.registry.storage_root,
                read_only=True,
            ).start()
            stack.callback(registry.stop)
            tokens.reset_stats()
            return tokens, registry

        yield make


async def get_manifest(client: UpstreamClient, repository: str) -> httpx.Response:
    response = await client.send("GET", repository, "manifests/latest", headers=MANIFEST_HEADERS)
    await response.aread()
    return response


# ---- the token dance -----------------------------------------------------------------------
async def test_manifest_through_the_token_dance(
    upstream: Upstream, tokens: TokenServer, http: httpx.AsyncClient, image: Image
) -> None:
    client = UpstreamClient(upstream.registry.url, http, MemoryCache())
    response = await get_manifest(client, "library/alpine")

    assert response.status_code == 200
    assert response.content == image.manifest
    assert response.headers["docker-content-digest"] == image.digest
    stats = tokens.stats()
    assert stats.tokens_issued == 1
    assert stats.by_scope == {"repository:library/alpine:pull": 1}
    assert stats.by_user == {"": 1}


async def test_blob_streams_and_head_works(
    upstream: Upstream, tokens: TokenServer, http: httpx.AsyncClient, image: Image
) -> None:
    client = UpstreamClient(upstream.registry.url, http, MemoryCache())
    layer = image.layers[0]

    response = await client.send("GET", "library/alpine", f"blobs/{layer.digest}", stream=True)
    try:
        assert response.status_code == 200
        hasher = hashlib.sha256()
        async for chunk in response.aiter_bytes():
            hasher.update(chunk)
    finally:
        await response.aclose()
    assert f"sha256:{hasher.hexdigest()}" == layer.digest

    head = await client.send("HEAD", "library/alpine", "manifests/latest", headers=MANIFEST_HEADERS)
    assert head.status_code == 200
    assert head.headers["docker-content-digest"] == image.digest
    assert tokens.stats().tokens_issued == 1


async def test_same_scope_reuses_the_cached_token(
    upstream: Upstream, tokens: TokenServer, http: httpx.AsyncClient
) -> None:
    client = UpstreamClient(upstream.registry.url, http, MemoryCache())
    assert (await get_manifest(client, "library/alpine")).status_code == 200
    assert tokens.stats().tokens_issued == 1

    for _ in range(3):
        assert (await get_manifest(client, "library/alpine")).status_code == 200
    assert tokens.stats().tokens_issued == 1


async def test_clients_sharing_a_cache_share_tokens(
    upstream: Upstream, tokens: TokenServer, http: httpx.AsyncClient
) -> None:
    """Replicas share the cache (Redis in production): a token one fetched serves the other."""
    cache = MemoryCache()
    first = UpstreamClient(upstream.registry.url, http, cache)
    second = UpstreamClient(upstream.registry.url, http, cache)
    for client in (first, second):  # each learns the registry's challenge
        assert (await get_manifest(client, "library/alpine")).status_code == 200
    issued = tokens.stats().tokens_issued

    assert (await get_manifest(first, "library/busybox")).status_code == 200
    assert (await get_manifest(second, "library/busybox")).status_code == 200
    assert (await get_manifest(first, "library/alpine")).status_code == 200
    assert tokens.stats().tokens_issued == issued + 1


async def test_token_past_its_expiry_margin_is_never_reused(
    auth_front: Callable[[int], tuple[TokenServer, UpstreamRegistry]], http: httpx.AsyncClient
) -> None:
    # issued_at + 20 s - 30 s skew is already in the past: no token may be cached.
    tokens, registry = auth_front(20)
    client = UpstreamClient(registry.url, http, MemoryCache())
    for _ in range(3):
        assert (await get_manifest(client, "library/alpine")).status_code == 200
    assert tokens.stats().tokens_issued == 3


async def test_token_is_reused_until_it_expires(
    auth_front: Callable[[int], tuple[TokenServer, UpstreamRegistry]], http: httpx.AsyncClient
) -> None:
    # Usable for about 32 - 30 = 2 s.
    tokens, registry = auth_front(32)
    client = UpstreamClient(registry.url, http, MemoryCache())
    assert (await get_manifest(client, "library/alpine")).status_code == 200
    assert (await get_manifest(client, "library/alpine")).status_code == 200
    assert tokens.stats().tokens_issued == 1

    await asyncio.sleep(2.5)
    assert (await get_manifest(client, "library/alpine")).status_code == 200
    assert tokens.stats().tokens_issued == 2


async def test_different_scopes_get_different_tokens(
    upstream: Upstream, tokens: TokenServer, http: httpx.AsyncClient
) -> None:
    client = UpstreamClient(upstream.registry.url, http, MemoryCache())
    assert (await get_manifest(client, "library/alpine")).status_code == 200
    assert (await get_manifest(client, "library/busybox")).status_code == 200
    assert tokens.stats().by_scope == {
        "repository:library/alpine:pull": 1,
        "repository:library/busybox:pull": 1,
    }
    # Each is cached under its own scope.
    assert (await get_manifest(client, "library/alpine")).status_code == 200
    assert (await get_manifest(client, "library/busybox")).status_code == 200
    assert tokens.stats().tokens_issued == 2


# ---- credentials ---------------------------------------------------------------------------
async def test_credentials_unlock_a_private_namespace(
    upstream: Upstream, tokens: TokenServer, http: httpx.AsyncClient, image: Image
) -> None:
    anonymous = UpstreamClient(upstream.registry.url, http, MemoryCache())
    assert (await get_manifest(anonymous, "alice/private")).status_code == 401

    tokens.reset_stats()
    alice = UpstreamClient(upstream.registry.url, http, MemoryCache(), ALICE)
    response = await get_manifest(alice, "alice/private")
    assert response.status_code == 200
    assert response.content == image.manifest
    stats = tokens.stats()
    assert stats.by_user == {"alice": 1}
    assert stats.anonymous == 0
    assert stats.by_scope == {"repository:alice/private:pull": 1}


async def test_credentialed_token_is_never_used_for_anonymous_requests(
    upstream: Upstream, tokens: TokenServer, http: httpx.AsyncClient
) -> None:
    cache = MemoryCache()
    anonymous = UpstreamClient(upstream.registry.url, http, cache)
    alice = UpstreamClient(upstream.registry.url, http, cache, ALICE)
    # The anonymous client learns the challenge, so its next request goes straight to the cache.
    assert (await get_manifest(anonymous, "library/alpine")).status_code == 200
    assert (await get_manifest(alice, "alice/private")).status_code == 200

    assert (await get_manifest(anonymous, "alice/private")).status_code == 401
    assert tokens.stats().by_user["alice"] == 1


async def test_wrong_password_is_an_upstream_error(
    upstream: Upstream, tokens: TokenServer, http: httpx.AsyncClient
) -> None:
    client = UpstreamClient(
        upstream.registry.url, http, MemoryCache(), Credentials("alice", "wrong")
    )
    with pytest.raises(UpstreamError) as caught:
        await get_manifest(client, "alice/private")
    assert caught.value.kind == "status"
    assert caught.value.status == 401
    assert tokens.stats().auth_failures == 1


async def test_token_endpoint_outage_is_an_upstream_error(
    upstream: Upstream, tokens: TokenServer, http: httpx.AsyncClient
) -> None:
    tokens.fail_with = 503
    client = UpstreamClient(upstream.registry.url, http, MemoryCache())
    with pytest.raises(UpstreamError) as caught:
        await get_manifest(client, "library/alpine")
    assert caught.value.kind == "status"
    assert caught.value.status == 503


# ---- redirects -----------------------------------------------------------------------------
@dataclass
class Seen:
    path: str
    authorization: str | None


@dataclass
class LocalServer:
    """A ThreadingHTTPServer answering with `route(path, headers) -> (status, headers, body)`."""

    route: Callable[[str, dict[str, str]], tuple[int, dict[str, str], bytes]]
    seen: list[Seen] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> LocalServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                owner.seen.append(Seen(self.path, self.headers.get("Authorization")))
                status, headers, body = owner.route(self.path, dict(self.headers.items()))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def cdn() -> Iterator[LocalServer]:
    server = LocalServer(lambda path, headers: (200, {}, b"blob bytes from the cdn")).start()
    yield server
    server.stop()


@pytest.fixture
def redirecting_registry(tokens: TokenServer, cdn: LocalServer) -> Iterator[LocalServer]:
    """Asks for a bearer token from the real token server, then sends blobs to the CDN."""
    challenge = f'Bearer realm="{tokens.realm}",service="{tokens.service}"'

    def route(path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if path.startswith("/v2/") and "Authorization" not in headers:
            return 401, {"WWW-Authenticate": challenge}, b"{}"
        if path.startswith("/v2/library/loop/"):
            return 302, {"Location": "/loop/1"}, b""
        if path.startswith("/loop/"):
            return 302, {"Location": f"/loop/{int(path.rsplit('/', 1)[1]) + 1}"}, b""
        if path.startswith("/v2/"):
            return 307, {"Location": "/hop?from=registry"}, b""
        if path.startswith("/hop"):
            return 302, {"Location": f"{cdn.url}/blobs/data?sig=abc"}, b""
        return 404, {}, b""

    server = LocalServer(route).start()
    yield server
    server.stop()


async def test_redirects_are_followed_without_the_authorization_header(
    redirecting_registry: LocalServer,
    cdn: LocalServer,
    tokens: TokenServer,
    http: httpx.AsyncClient,
) -> None:
    client = UpstreamClient(redirecting_registry.url, http, MemoryCache())
    response = await client.send("GET", "library/alpine", "blobs/sha256:" + "a" * 64)
    await response.aread()

    assert response.status_code == 200
    assert response.content == b"blob bytes from the cdn"
    assert tokens.stats().tokens_issued == 1
    registry_auth = [s.authorization for s in redirecting_registry.seen if s.path.startswith("/v2")]
    assert registry_auth[0] is None  # first contact, before the challenge
    assert registry_auth[-1] is not None and registry_auth[-1].startswith("Bearer ")
    assert [s.path for s in redirecting_registry.seen if s.path.startswith("/hop")] == [
        "/hop?from=registry"
    ]
    assert cdn.seen == [Seen("/blobs/data?sig=abc", None)]


async def test_redirect_loop_ends_in_an_error(
    redirecting_registry: LocalServer, http: httpx.AsyncClient
) -> None:
    client = UpstreamClient(redirecting_registry.url, http, MemoryCache())
    with pytest.raises(UpstreamError) as caught:
        await client.send("GET", "library/loop", "blobs/sha256:" + "b" * 64)
    assert caught.value.kind == "status"
    hops = [s for s in redirecting_registry.seen if s.path.startswith("/loop/")]
    assert 1 <= len(hops) <= MAX_REDIRECTS


# ---- transport failures --------------------------------------------------------------------
async def test_closed_port_is_a_connect_error(http: httpx.AsyncClient) -> None:
    client = UpstreamClient(f"http://127.0.0.1:{free_port()}", http, MemoryCache())
    with pytest.raises(UpstreamError) as caught:
        await get_manifest(client, "library/alpine")
    assert caught.value.kind == "connect"


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    for conn in held:
        conn.close()
    listener.close()


async def test_silent_upstream_is_a_timeout(silent_server: int) -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(0.5)) as http:
        client = UpstreamClient(f"http://127.0.0.1:{silent_server}", http, MemoryCache())
        started = time.monotonic()
        with pytest.raises(UpstreamError) as caught:
            await get_manifest(client, "library/alpine")
    assert caught.value.kind == "timeout"
    assert time.monotonic() - started < 5
