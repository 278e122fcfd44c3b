"""A local stand-in for Supabase's gateway, auth and REST API, for the tam-run-job Edge Function.

No Supabase stack can run here, so this speaks the part of its HTTP protocol supabase-js uses
in deployments/edge-function/tam-run-job.ts, over the same SQLite database the webhook uses:

- the gateway: every request carries `apikey` = the anon or the service-role key, else 401;
- auth (GoTrue): `GET /auth/v1/user` with `Authorization: Bearer <JWT>` answers the user for a
  valid, unexpired HS256 token whose `sub` is a known user; anything else (the anon key, the
  service-role key, a forged or expired token) is an error, as GoTrue's `bad_jwt`;
- REST (PostgREST): `GET` and `PATCH /rest/v1/<table>` with `eq` / `neq` / `in` / `is`
  filters, `select=`, `Prefer: return=representation` and the single-object Accept header.
  The JWT's role decides what a request sees, as RLS does on Supabase (docs/contracts.md,
  "Tenancy and security"):
  `service_role` everything, `authenticated` only rows of projects whose `user_id` is the
  token's `sub`, `anon` nothing; only the service role writes.

`ServedApp` serves an ASGI app (this one, or the webhook) from a thread on a loopback port.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from uuid import UUID

import sqlalchemy as sa
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tam.schema import UtcDateTime, metadata, projects


# --- JWTs ---------------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_jwt(claims: dict[str, Any], secret: str) -> str:
    """An HS256 JWT, as Supabase signs its keys and users' access tokens."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    signature = hmac.new(secret.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(signature)}"


def verify_jwt(token: str, secret: str) -> dict[str, Any] | None:
    """The claims of a token signed with `secret` and not expired; None otherwise."""
    try:
        header, body, signature = token.split(".")
        expected = hmac.new(secret.encode(), f"{header}.{body}".encode(), hashlib.sha256)
        if not hmac.compare_digest(_unb64(signature), expected.digest()):
            return None
        claims: dict[str, Any] = json.loads(_unb64(body))
    except ValueError:
        return None
    if "exp" in claims and float(claims["exp"]) < time.time():
        return None
    return claims


class StubError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("message") or body.get("msg"))
        self.status, self.body = status, body


def _pg_error(status: int, code: str, message: str) -> StubError:
    return StubError(status, {"code": code, "message": message, "details": None, "hint": None})


# --- the stand-in -------------------------------------------------------------------------
class SupabaseStub:
    """Supabase's gateway, auth and REST API over a SQLite database (see the module doc)."""

    def __init__(self, database: Path, *, jwt_secret: str = "stub-jwt-secret-0123456789") -> None:
        self.jwt_secret = jwt_secret
        self.anon_key = sign_jwt({"iss": "supabase", "role": "anon"}, jwt_secret)
        self.service_key = sign_jwt({"iss": "supabase", "role": "service_role"}, jwt_secret)
        self.users: dict[UUID, str] = {}
        self.engine = sa.create_engine(f"sqlite:///{database}", connect_args={"timeout": 30})
        self.tables = {table.name: table for table in metadata.sorted_tables}
        self.app = Starlette(
            routes=[
                Route("/auth/v1/user", self.get_user, methods=["GET"]),
                Route("/rest/v1/{table}", self.rest, methods=["GET", "PATCH"]),
            ]
        )

    # --- users ----------------------------------------------------------------------------
    def add_user(self, user_id: UUID, email: str) -> None:
        self.users[user_id] = email

    def user_token(self, user_id: UUID, *, expires_in_s: float = 3600) -> str:
        now = int(time.time())
        claims = {
            "sub": str(user_id),
            "role": "authenticated",
            "aud": "authenticated",
            "iat": now,
            "exp": now + int(expires_in_s),
        }
        return sign_jwt(claims, self.jwt_secret)

    # --- the gateway and auth ---------------------------------------------------------------
    def _gateway(self, request: Request) -> None:
        if request.headers.get("apikey") not in (self.anon_key, self.service_key):
            raise StubError(401, {"message": "Invalid API key"})

    def _claims(self, request: Request) -> dict[str, Any] | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        return verify_jwt(token.strip(), self.jwt_secret)

    async def get_user(self, request: Request) -> Response:
        try:
            self._gateway(request)
        except StubError as exc:
            return JSONResponse(exc.body, exc.status)
        claims = self._claims(request)
        bad = {"code": 403, "error_code": "bad_jwt"}
        if claims is None:
            return JSONResponse({**bad, "msg": "invalid JWT: unable to parse or verify"}, 403)
        if "sub" not in claims:
            return JSONResponse({**bad, "msg": "invalid claim: missing sub claim"}, 403)
        user_id = UUID(str(claims["sub"]))
        if user_id not in self.users:
            body = {"code": 403, "error_code": "user_not_found", "msg": "User does not exist"}
            return JSONResponse(body, 403)
        return JSONResponse(
            {
                "id": str(user_id),
                "aud": "authenticated",
                "role": "authenticated",
                "email": self.users[user_id],
            }
        )

    # --- REST -------------------------------------------------------------------------------
    async def rest(self, request: Request) -> Response:
        try:
            self._gateway(request)
            claims = self._claims(request)
            if claims is None:
                raise _pg_error(401, "PGRST301", "JWSError JWSInvalidSignature")
            table = self.tables.get(request.path_params["table"])
            if table is None:
                name = request.path_params["table"]
                raise _pg_error(404, "PGRST205", f"Could not find the table 'public.{name}'")
            role = str(claims.get("role"))
            if request.method == "GET":
                return self._read(request, table, role, claims.get("sub"))
            if role != "service_role":
                raise _pg_error(403, "42501", f"permission denied for table {table.name}")
            return self._update(request, table, await request.json())
        except StubError as exc:
            return JSONResponse(exc.body, exc.status)

    def _visible(self, table: sa.Table, role: str, sub: Any) -> list[sa.ColumnElement[bool]]:
        """The RLS policies: what a role may read in `table`."""
        if role == "service_role":
            return []
        if role != "authenticated" or sub is None:
            return [sa.false()]
        owner = UUID(str(sub))
        if table is projects:
            return [projects.c.user_id == owner]
        if "project_id" not in table.c:
            return [sa.false()]
        owned = sa.select(projects.c.id).where(projects.c.user_id == owner)
        return [table.c.project_id.in_(owned)]

    def _read(self, request: Request, table: sa.Table, role: str, sub: Any) -> Response:
        query = sa.select(table).where(
            *self._filters(request, table), *self._visible(table, role, sub)
        )
        with self.engine.connect() as conn:
            rows = [dict(row._mapping) for row in conn.execute(query)]
        return self._answer(request, table, rows, status=200)

    def _update(self, request: Request, table: sa.Table, body: Any) -> Response:
        if not isinstance(body, dict) or not body:
            raise _pg_error(400, "PGRST102", "Empty or invalid json")
        values = {name: self._to_db(self._column(table, name), v) for name, v in body.items()}
        statement = sa.update(table).where(*self._filters(request, table)).values(values)
        with self.engine.begin() as conn:
            rows = [dict(row._mapping) for row in conn.execute(statement.returning(table))]
        if "return=representation" not in request.headers.get("prefer", ""):
            return Response(status_code=204)
        return self._answer(request, table, rows, status=200)

    def _answer(
        self, request: Request, table: sa.Table, rows: list[dict[str, Any]], *, status: int
    ) -> Response:
        select = request.query_params.get("select", "*")
        names = (
            [c.name for c in table.c]
            if select.strip() == "*"
            else [self._column(table, n.strip()).name for n in select.split(",")]
        )
        out = [{name: _to_json(row[name]) for name in names} for row in rows]
        if "application/vnd.pgrst.object+json" in request.headers.get("accept", ""):
            if len(out) != 1:
                message = "JSON object requested, multiple (or no) rows returned"
                raise _pg_error(406, "PGRST116", message)
            return JSONResponse(out[0], status)
        return JSONResponse(out, status)

    # --- filters and values -------------------------------------------------------------------
    @staticmethod
    def _column(table: sa.Table, name: str) -> sa.Column[Any]:
        if name not in table.c:
            raise _pg_error(400, "42703", f"column {table.name}.{name} does not exist")
        return table.c[name]

    def _filters(self, request: Request, table: sa.Table) -> list[sa.ColumnElement[bool]]:
        clauses = []
        for name, expr in request.query_params.multi_items():
            if name == "select":
                continue
            column = self._column(table, name)
            op, _, raw = expr.partition(".")
            if op == "eq":
                clauses.append(column == self._to_db(column, raw))
            elif op == "neq":
                clauses.append(column != self._to_db(column, raw))
            elif op == "in" and raw.startswith("(") and raw.endswith(")"):
                items = [item.strip().strip('"') for item in raw[1:-1].split(",")]
                clauses.append(column.in_([self._to_db(column, item) for item in items]))
            elif op == "is" and raw == "null":
                clauses.append(column.is_(None))
            else:
                raise _pg_error(400, "PGRST100", f"the stand-in does not parse ({expr})")
        return clauses

    @staticmethod
    def _to_db(column: sa.Column[Any], value: Any) -> Any:
        if value is None:
            return None
        try:
            if isinstance(column.type, sa.Uuid):
                return UUID(str(value))
            if isinstance(column.type, UtcDateTime):
                return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            if isinstance(column.type, sa.Integer):
                return int(value)
        except ValueError:
            raise _pg_error(
                400, "22P02", f'invalid input syntax for {column.name}: "{value}"'
            ) from None
        return value


def _to_json(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value


# --- serving ------------------------------------------------------------------------------
class ServedApp:
    """An ASGI app served by uvicorn from a daemon thread on a loopback port."""

    def __init__(self, app: Any, *, name: str, startup_timeout_s: float = 30.0) -> None:
        self.app, self.name, self.startup_timeout_s = app, name, startup_timeout_s
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name=name, daemon=True
        )

    def __enter__(self) -> ServedApp:
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start on {self.url}")
            time.sleep(0.01)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()
