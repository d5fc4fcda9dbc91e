"""A small synchronous client of the control API (:mod:`.control`), for the CLI and tests."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx

from metallica.faultproxy.toxics import Toxic, describe_toxic, parse_toxic


class ProxyControlError(Exception):
    """The control API answered an error; ``problem`` is its problem+json document."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.code = str(problem.get("type", "")).rsplit("/", 1)[-1] or "http-error"
        super().__init__(f"{status} {self.code}: {problem.get('detail', '')}")


class ProxyControlClient:
    """Talks to a control API at ``base_url``.

    Pass ``client`` to use an httpx client of your own (a Starlette ``TestClient`` in tests); it
    is then yours to close. Errors raise :class:`ProxyControlError`.
    """

    def __init__(
        self, base_url: str, *, timeout: float = 5.0, client: httpx.Client | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._owned = client is None
        self._client = client or httpx.Client(timeout=timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._owned:
            self._client.close()

    def healthy(self) -> bool:
        """Whether ``/healthz`` answers ok (False when the server cannot be reached)."""
        try:
            response = self._client.get(self.base_url + "/healthz")
        except httpx.TransportError:
            return False
        return response.status_code == 200

    def proxies(self) -> list[dict[str, Any]]:
        proxies: list[dict[str, Any]] = self._request("GET", "/proxies")["proxies"]
        return proxies

    def proxy(self, name: str) -> dict[str, Any]:
        return self._request("GET", f"/proxies/{quote(name, safe='')}")

    def create_proxy(self, name: str, listen: str, upstream: str) -> dict[str, Any]:
        """Create a proxy; the answer's ``listen`` shows the port picked for port 0."""
        body = {"name": name, "listen": listen, "upstream": upstream}
        return self._request("POST", "/proxies", body)

    def delete_proxy(self, name: str) -> None:
        self._request("DELETE", f"/proxies/{quote(name, safe='')}")

    def toxics(self, proxy: str) -> list[Toxic]:
        answer = self._request("GET", f"/proxies/{quote(proxy, safe='')}/toxics")
        return [parse_toxic(toxic) for toxic in answer["toxics"]]

    def add_toxic(self, proxy: str, toxic: Toxic) -> None:
        self._request("POST", f"/proxies/{quote(proxy, safe='')}/toxics", describe_toxic(toxic))

    def remove_toxic(self, proxy: str, toxic: str) -> None:
        self._request("DELETE", f"/proxies/{quote(proxy, safe='')}/toxics/{quote(toxic, safe='')}")

    def clear(self, proxy: str) -> None:
        self._request("DELETE", f"/proxies/{quote(proxy, safe='')}/toxics")

    def _request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        response = self._client.request(method, self.base_url + path, json=body)
        if response.is_error:
            try:
                problem = response.json()
            except ValueError:
                problem = {"detail": response.text}
            if not isinstance(problem, dict):
                problem = {"detail": str(problem)}
            raise ProxyControlError(response.status_code, problem)
        if response.status_code == 204 or not response.content:
            return {}
        answer: dict[str, Any] = response.json()
        return answer
