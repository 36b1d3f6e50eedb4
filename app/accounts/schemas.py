from datetime import datetime

from ninja import Schema
from pydantic import Field

from app.api.schemas import Input


class TokenObtainIn(Input):
    username: str = Field(min_length=1, max_length=150)
    password: str = Field(min_length=1, max_length=4096)


class TokenRefreshIn(Input):
    refresh: str = Field(min_length=1, max_length=4096)


class TokenPairOut(Schema):
    access: str
    refresh: str


class ApiKeyCreateIn(Input):
    name: str = Field(default="", max_length=100)


class ApiKeyOut(Schema):
    prefix: str
    name: str
    created_at: datetime
    last_used_at: datetime | None


class ApiKeyCreatedOut(ApiKeyOut):
    key: str = Field(description="The full key. Shown once: store it now.")


class TicketOut(Schema):
    ticket: str
    expires_in: int = Field(description="Seconds the ticket stays valid")


class MeOut(Schema):
    username: str
    email: str
    role: str
    api_keys: list[str] = Field(description="Prefixes of the caller's active API keys")
