"""Parameter models of the message methods (SPEC §9.6) other than ``message.send``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from thrum_core.names import validate_scope_type, validate_scope_value
from thrum_core.rpc.spec import Params

__all__ = [
    "DeleteParams",
    "EditParams",
    "GetParams",
    "ListParams",
    "MarkReadParams",
    "OutboxParams",
    "TypeValue",
    "WaitParams",
]


class TypeValue(BaseModel):
    """A Scope or Ref: ``{type, value}`` (SPEC §4 rules)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    type: str
    value: str

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        return validate_scope_type(value)

    @field_validator("value")
    @classmethod
    def _value(cls, value: str) -> str:
        return validate_scope_value(value)

    def pair(self) -> tuple[str, str]:
        """``(type, value)``."""
        return (self.type, self.value)


class GetParams(Params):
    """``message.get``."""

    message_id: str = Field(min_length=1)
    mark_read: bool = False


class ListParams(Params):
    """``message.list``."""

    for_agent: str | None = None
    scope: TypeValue | None = None
    ref: TypeValue | None = None
    thread_id: str | None = None
    author_id: str | None = None
    mentions: bool = False
    unread: bool = False
    exclude_self: bool = False
    include_deleted: bool = False
    created_after: str | None = None
    created_before: str | None = None
    page_size: int = Field(10, ge=1, le=100)
    page: int = Field(1, ge=1)
    sort_by: Literal["created_at", "updated_at"] = "created_at"
    sort_order: Literal["desc", "asc"] = "desc"
    mark_read: bool = False


class OutboxParams(Params):
    """``message.outbox``."""

    to: str | None = None
    unread: bool = False
    include_deleted: bool = False
    page_size: int = Field(10, ge=1, le=100)
    page: int = Field(1, ge=1)


class EditParams(Params):
    """``message.edit``."""

    message_id: str = Field(min_length=1)
    content: str | None = None
    structured: dict[str, Any] | None = None


class DeleteParams(Params):
    """``message.delete``."""

    message_id: str = Field(min_length=1)
    reason: str | None = Field(None, max_length=500)


class MarkReadParams(Params):
    """``message.markRead``."""

    message_ids: list[str] | None = Field(None, min_length=1, max_length=1000)
    all: bool = False
    before: str | None = None


class WaitParams(Params):
    """``message.wait``."""

    scope: TypeValue | None = None
    mention: str | None = None
    all: bool = False
    after: str | None = None
    timeout_ms: int = Field(30000, ge=1, le=3_600_000)
    limit: int = Field(10, ge=1, le=100)
