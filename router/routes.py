"""The route table: request types (what a service asks for) and how each is answered.

Routes live in the catalogue (:mod:`adapters.route_store`), one versioned JSON document
per request type, as :meth:`Route.document` writes it; a YAML file of the same shape
(``routes: {name: route}``) seeds an empty catalogue and is what ``routes export``
writes. A new table is validated completely first, then swapped in with a single
reference assignment, so requests in flight keep the table they started with.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from adapters.errors import InvalidRequestError

ROUTE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
REF_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}(@[a-z0-9][a-z0-9._-]{0,63})?$")


class Route(BaseModel):
    """One request type: its adapter (or split), prompt, defaults and answer schema."""

    model_config = ConfigDict(extra="forbid")

    adapter: str | None = Field(
        default=None,
        description="Adapter reference ('name', 'name@3', 'name@prod') or 'base'.",
    )
    split: dict[str, int] | None = Field(
        default=None,
        description="Traffic split between adapter references, weights summing to 100. "
        "Sticky per the request's `user` field when present.",
    )
    description: str = Field(default="", description="What the request type is for.")
    system_prompt: str | None = Field(
        default=None, description="Prepended as the system message when the caller sends none."
    )
    defaults: dict[str, Any] = Field(
        default_factory=dict,
        description="Generation parameters used unless the caller sets them (temperature...).",
    )
    json_schema: dict[str, Any] | None = Field(
        default=None,
        alias="schema",
        description="JSON Schema of the answer, enforced with vLLM structured output.",
    )
    on_schema_invalid: Literal["error", "pass"] = Field(
        default="error",
        description="An answer failing the schema: 'error' answers 502, 'pass' returns it.",
    )
    working_fields: list[str] = Field(
        default_factory=list,
        description="Top-level schema properties the model writes first as its working "
        "(e.g. the facts a choice rests on). The answer is checked against the whole schema, "
        "then these fields are removed before the caller sees it. Each must be a required "
        "property of an object schema, and at least one other property must remain.",
    )

    @field_validator("adapter")
    @classmethod
    def _ref(cls, v: str | None) -> str | None:
        if v is not None and not REF_RE.match(v):
            raise ValueError(f"{v!r} is not an adapter reference (name, name@N or name@alias)")
        return v

    @field_validator("split")
    @classmethod
    def _split(cls, v: dict[str, int] | None) -> dict[str, int] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("split must name at least one adapter reference")
        for ref, w in v.items():
            if not REF_RE.match(ref):
                raise ValueError(f"split: {ref!r} is not an adapter reference")
            if w < 0:
                raise ValueError(f"split: weight of {ref!r} is negative")
        if sum(v.values()) != 100:
            raise ValueError(f"split weights must sum to 100, not {sum(v.values())}")
        return v

    @field_validator("json_schema")
    @classmethod
    def _schema(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            try:
                Draft202012Validator.check_schema(v)
            except SchemaError as exc:
                raise ValueError(f"schema is not a valid JSON Schema: {exc.message}") from exc
        return v

    @field_validator("working_fields")
    @classmethod
    def _working(cls, v: list[str], info: ValidationInfo) -> list[str]:
        if not v:
            return v
        if "json_schema" not in info.data:
            return v  # the schema itself was refused; that error is the one to report
        schema = info.data["json_schema"]
        if schema is None or schema.get("type") != "object":
            raise ValueError("working fields need a schema whose top-level type is 'object'")
        dupes = sorted({f for f in v if v.count(f) > 1})
        if dupes:
            raise ValueError(f"working fields are listed twice: {', '.join(dupes)}")
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        required = schema.get("required") or []
        for f in v:
            if f not in props:
                raise ValueError(f"working field {f!r} is not a property of the schema")
            if f not in required:
                raise ValueError(f"working field {f!r} is not in the schema's 'required'")
        if not set(props) - set(v):
            raise ValueError("working fields leave no answer field: keep one property out")
        return v

    @model_validator(mode="after")
    def _one_target(self) -> Route:
        if (self.adapter is None) == (self.split is None):
            raise ValueError("give exactly one of 'adapter' or 'split'")
        return self

    def references(self) -> list[str]:
        return list(self.split) if self.split else [self.adapter or "base"]

    def document(self) -> dict[str, Any]:
        """The JSON document stored in the catalogue: the fields set, by their wire names."""
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=True)

    @classmethod
    def from_document(cls, data: Any, *, where: str = "") -> Route:
        """Validate a route document; 400 ``invalid_route`` naming the field and the reason."""
        if not isinstance(data, dict):
            raise InvalidRequestError(
                f"{where or 'the route'}: must be a JSON object",
                code="invalid_route",
                param=where or None,
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            # The one error without a field (adapter and split both or neither) names adapter.
            loc = first["loc"] or ("adapter",)
            param = ".".join(str(p) for p in (where, *loc) if p != "")
            msg = first["msg"].removeprefix("Value error, ")
            raise InvalidRequestError(f"{param}: {msg}", code="invalid_route", param=param) from exc


class RouteTable(BaseModel):
    """All request types, by name."""

    model_config = ConfigDict(extra="forbid")

    routes: dict[str, Route] = Field(default_factory=dict)

    @field_validator("routes")
    @classmethod
    def _names(cls, v: dict[str, Route]) -> dict[str, Route]:
        for name in v:
            if not ROUTE_NAME_RE.match(name):
                raise ValueError(f"route name {name!r} must match {ROUTE_NAME_RE.pattern}")
        return v

    @classmethod
    def from_yaml_text(cls, text: str, *, source: str = "<routes>") -> RouteTable:
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise InvalidRequestError(
                f"{source}: not valid YAML: {exc}", code="invalid_routes"
            ) from exc
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InvalidRequestError(
                f"{source}: {where}: {first['msg']}", code="invalid_routes", param=where
            ) from exc

    @classmethod
    def load(cls, path: Path) -> RouteTable:
        """The route table in the YAML file ``path``; 400 ``invalid_routes`` if it cannot
        be read or is not valid."""
        try:
            text = path.read_text()
        except OSError as exc:
            raise InvalidRequestError(
                f"cannot read route table {path}: {exc.strerror}", code="invalid_routes"
            ) from exc
        return cls.from_yaml_text(text, source=str(path))

    @classmethod
    def from_documents(cls, documents: dict[str, Any], *, source: str) -> RouteTable:
        """The table of stored route documents; 400 ``invalid_routes`` if one is not valid."""
        routes = {}
        for name, document in documents.items():
            try:
                routes[name] = Route.from_document(document, where=f"routes.{name}")
            except InvalidRequestError as exc:
                raise InvalidRequestError(
                    f"{source}: {exc.message}", code="invalid_routes", param=exc.param
                ) from exc
        return cls(routes=routes)

    def documents(self) -> dict[str, dict[str, Any]]:
        """Each route's catalogue document, by request type."""
        return {name: route.document() for name, route in self.routes.items()}

    def referenced_versions(self) -> set[str]:
        """Every explicit ``name@N`` reference (those versions cannot be deleted)."""
        return {
            ref
            for r in self.routes.values()
            for ref in r.references()
            if "@" in ref and ref.rsplit("@", 1)[1].isdigit()
        }
