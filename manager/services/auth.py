"""UI accounts and API tokens. Passwords are stored as scrypt hashes, tokens as SHA-256 digests."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from manager.core.actor import Actor
from manager.core.errors import InvalidInput, NameInUse, NotFound
from manager.db import ApiToken, LoginFailure, User
from manager.services.audit import record_event

ROLES = ("viewer", "operator", "admin")
TOKEN_PREFIX = "mpt_"  # noqa: S105 - a public prefix
MIN_PASSWORD_LENGTH = 8
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def check_role(role: object) -> str:
    if role not in ROLES:
        raise InvalidInput(f"Role '{role}' is not one of {', '.join(ROLES)}.", field="role")
    return str(role)


def role_allows(role: str, required: str) -> bool:
    """Whether ``role`` includes the rights of ``required`` (viewer < operator < admin)."""
    return ROLES.index(role) >= ROLES.index(required)


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    candidate = hashlib.scrypt(
        password.encode(), salt=bytes.fromhex(salt), dklen=32, n=int(n), r=int(r), p=int(p)
    )
    return hmac.compare_digest(candidate.hex(), digest)


def _check_username(username: object) -> str:
    if not isinstance(username, str) or not username.strip() or len(username) > 150:
        raise InvalidInput("A username must be 1 to 150 characters.", field="username")
    if not username.isprintable() or " " in username:
        raise InvalidInput(
            f"Username {username!r} may not contain spaces or control characters.", field="username"
        )
    return username


def _check_password(password: object) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(
            f"A password needs at least {MIN_PASSWORD_LENGTH} characters.", field="password"
        )
    return password


def create_user(session: Session, actor: Actor, *, username: str, role: str, password: str) -> User:
    """Create a UI account."""
    username = _check_username(username)
    role = check_role(role)
    password = _check_password(password)
    if session.scalars(select(User).where(User.username == username)).first() is not None:
        raise NameInUse(f"User '{username}' already exists.", field="username")
    user = User(username=username, role=role, password_hash=hash_password(password))
    session.add(user)
    session.flush()
    record_event(
        session,
        actor,
        action="user.create",
        target_type="user",
        target_id=user.id,
        target=username,
        details={"role": role},
    )
    return user


def set_password(session: Session, actor: Actor, *, username: str, password: str) -> User:
    user = get_user(session, username)
    user.password_hash = hash_password(_check_password(password))
    record_event(
        session,
        actor,
        action="user.password",
        target_type="user",
        target_id=user.id,
        target=username,
    )
    return user


def get_user(session: Session, username: str) -> User:
    user = session.scalars(select(User).where(User.username == username)).first()
    if user is None:
        raise NotFound(f"User '{username}' does not exist.")
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def authenticate_user(session: Session, username: str, password: str) -> User | None:
    """The enabled user with these credentials, or None (same cost whether the user exists)."""
    user = session.scalars(select(User).where(User.username == username)).first()
    if user is None:
        verify_password(password, _DUMMY_HASH)
        return None
    if user.disabled or not verify_password(password, user.password_hash):
        return None
    return user


@dataclass(frozen=True)
class LoginThrottle:
    """Refuses logins after repeated failures for one username or one client address.

    Failures are rows in the database, so every worker process and every replica counts the
    same ones: an attacker gets ``max_failures`` tries per window, not that many per process.
    A throttled thing is stored only as an HMAC digest under ``secret`` (usernames that were
    typed wrongly are often passwords). Each failure deletes the rows that left the window,
    so the table holds at most one window's failures.
    """

    secret: bytes
    max_failures: int = 5
    window: timedelta = timedelta(minutes=5)

    def keys(self, username: str, address: str | None) -> list[str]:
        """The digests a login attempt is counted under: its username and its address."""
        return [self._digest(f"user:{username.lower()}"), self._digest(f"addr:{address or '-'}")]

    def _digest(self, text: str) -> str:
        return hmac.new(self.secret, text.encode(), hashlib.sha256).hexdigest()

    def recent_failures(
        self, session: Session, keys: list[str], *, now: datetime | None = None
    ) -> int:
        """The most failures any of ``keys`` had within the window."""
        since = (now or datetime.now(UTC)) - self.window
        counts = session.execute(
            select(func.count())
            .where(LoginFailure.key.in_(keys), LoginFailure.failed_at > since)
            .group_by(LoginFailure.key)
        ).scalars()
        return max(counts, default=0)

    def blocked(self, session: Session, keys: list[str], *, now: datetime | None = None) -> bool:
        return self.recent_failures(session, keys, now=now) >= self.max_failures

    def failed(self, session: Session, keys: list[str], *, now: datetime | None = None) -> None:
        """Count one failed attempt under each key (and forget failures past the window)."""
        now = now or datetime.now(UTC)
        session.execute(delete(LoginFailure).where(LoginFailure.failed_at <= now - self.window))
        session.add_all(LoginFailure(key=key, failed_at=now) for key in keys)

    def succeeded(self, session: Session, keys: list[str]) -> None:
        """A successful login forgets the failures counted under its keys."""
        session.execute(delete(LoginFailure).where(LoginFailure.key.in_(keys)))


def ensure_admin_user(session: Session, actor: Actor) -> str | None:
    """Create the ``admin`` account on first start; returns its generated password once."""
    if session.scalars(select(User).limit(1)).first() is not None:
        return None
    password = secrets.token_urlsafe(15)
    create_user(session, actor, username="admin", role="admin", password=password)
    return password


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, actor: Actor, *, name: str, role: str) -> tuple[ApiToken, str]:
    """Create an API token; the plaintext is returned once and never stored."""
    name = _check_username(name)
    role = check_role(role)
    if session.scalars(select(ApiToken).where(ApiToken.name == name)).first() is not None:
        raise NameInUse(f"A token named '{name}' already exists.", field="name")
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        name=name,
        role=role,
        token_hash=_digest(plaintext),
        prefix=plaintext[:8],
        created_by=str(actor),
    )
    session.add(token)
    session.flush()
    record_event(
        session,
        actor,
        action="token.create",
        target_type="token",
        target_id=token.id,
        target=name,
        details={"role": role},
    )
    return token, plaintext


def verify_token(session: Session, plaintext: str) -> ApiToken | None:
    """The active token with this plaintext, or None."""
    if not isinstance(plaintext, str) or not plaintext.startswith(TOKEN_PREFIX):
        return None
    token = session.scalars(
        select(ApiToken).where(ApiToken.token_hash == _digest(plaintext))
    ).first()
    if token is None or token.revoked_at is not None:
        return None
    return token


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.name)))


def revoke_token(session: Session, actor: Actor, name: str) -> ApiToken:
    token = session.scalars(select(ApiToken).where(ApiToken.name == name)).first()
    if token is None:
        raise NotFound(f"There is no token named '{name}'.")
    if token.revoked_at is None:
        token.revoked_at = datetime.now(UTC)
        record_event(
            session,
            actor,
            action="token.revoke",
            target_type="token",
            target_id=token.id,
            target=name,
        )
    return token


_DUMMY_HASH = hash_password(secrets.token_hex(8))

__all__ = [
    "ROLES",
    "LoginThrottle",
    "authenticate_user",
    "check_role",
    "create_token",
    "create_user",
    "ensure_admin_user",
    "get_user",
    "hash_password",
    "list_tokens",
    "list_users",
    "revoke_token",
    "role_allows",
    "set_password",
    "verify_password",
    "verify_token",
]
