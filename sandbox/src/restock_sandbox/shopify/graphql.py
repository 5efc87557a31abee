"""A GraphQL query document, parsed into operations, fields and arguments with the variables applied. Pure.

Not a GraphQL engine: no schema, no type checking. It reads the language (October 2021 spec) far enough
for the Admin API stand-in to recognise operations by their root fields and to size connections:
operations (``query`` / ``mutation``, shorthand ``{ ... }``, variable definitions with defaults), fields
with aliases, arguments and sub-selections, inline fragments (``... on BulkOperation``), named fragments
(expanded in place), directives (read and ignored), every literal (strings and block strings included).

Rules:
- Variables are substituted while parsing, so a ``Field``'s ``args`` hold plain values. A variable the
  operation does not declare, or a declared non-null one (``ID!``) with no value and no default, is an
  error, as a GraphQL server reports it.
- A document with several operations needs ``operation_name``; an unknown one is an error.
- Every problem raises ``GraphQLError`` with a message a client developer can act on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

OperationKind = Literal["query", "mutation", "subscription"]


class GraphQLError(ValueError):
    """A document that cannot be read, or variables that do not fit it."""


@dataclass(frozen=True)
class Field:
    """One selected field: its name, alias, arguments (variables applied) and sub-selection."""

    name: str
    alias: str | None = None
    args: Mapping[str, Any] = field(default_factory=dict)
    selections: tuple[Selection, ...] = ()

    @property
    def key(self) -> str:
        """The name the result uses: the alias if there is one."""
        return self.alias or self.name


@dataclass(frozen=True)
class InlineFragment:
    """``... on Type { ... }`` (``type_condition`` None: ``... { ... }``)."""

    type_condition: str | None
    selections: tuple[Selection, ...]


Selection = Field | InlineFragment


@dataclass(frozen=True)
class Operation:
    kind: OperationKind
    name: str | None
    selections: tuple[Selection, ...]


TOKEN = re.compile(
    r"""
    (?P<ignored>[\s,\ufeff]+|\#[^\n\r]*)
  | (?P<block>\"\"\"(?:\\\"\"\"|[^\"]|\"(?!\"\"))*\"\"\")
  | (?P<string>"(?:\\.|[^"\\\n\r])*")
  | (?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
  | (?P<name>[_A-Za-z][_0-9A-Za-z]*)
  | (?P<punct>\.\.\.|[!$&()\:=@\[\]{|}])
    """,
    re.VERBOSE,
)


def tokenize(source: str) -> list[tuple[str, str]]:
    """(kind, text) tokens, ignoring whitespace, commas and comments."""
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(source):
        match = TOKEN.match(source, position)
        if match is None:
            raise GraphQLError(f"Parse error: unexpected character {source[position]!r} at offset {position}")
        kind = match.lastgroup or ""
        if kind != "ignored":
            tokens.append((kind, match.group()))
        position = match.end()
    return tokens


def _block_string(raw: str) -> str:
    lines = raw[3:-3].replace('\\"""', '"""').splitlines()
    indents = [len(line) - len(line.lstrip()) for line in lines[1:] if line.strip()]
    common = min(indents, default=0)
    body = [lines[0], *(line[common:] for line in lines[1:])] if lines else []
    while body and not body[0].strip():
        body.pop(0)
    while body and not body[-1].strip():
        body.pop()
    return "\n".join(body)


class _Parser:
    def __init__(self, source: str, variables: Mapping[str, Any]) -> None:
        self.tokens = tokenize(source)
        self.position = 0
        self.variables = variables
        self.declared: dict[str, Any] = {}
        self.fragments: dict[str, tuple[int, int]] = {}  # name -> token span of its selection set
        self.skipping = False
        self._name: str | None = None

    # -- tokens
    def peek(self, offset: int = 0) -> tuple[str, str]:
        index = self.position + offset
        return self.tokens[index] if index < len(self.tokens) else ("eof", "")

    def take(self, text: str | None = None, kind: str | None = None) -> str:
        token_kind, token_text = self.peek()
        if (text is not None and token_text != text) or (kind is not None and token_kind != kind):
            wanted = text or kind
            raise GraphQLError(f"Parse error: expected {wanted!r}, found {token_text or 'end of document'!r}")
        self.position += 1
        return token_text

    def at(self, text: str) -> bool:
        return self.peek()[1] == text and self.peek()[0] in ("punct", "name")

    # -- document
    def document(self, operation_name: str | None) -> Operation:
        operations: list[tuple[int, str | None]] = []
        while self.peek()[0] != "eof":
            if self.at("fragment"):
                self.fragment_definition()
                continue
            operations.append((self.position, self.skip_operation()))
        if not operations:
            raise GraphQLError("No operations in the document")
        if operation_name is None and len(operations) > 1:
            raise GraphQLError("An operation name is required when the document has several operations")
        chosen = [p for p, n in operations if operation_name is None or n == operation_name]
        if not chosen:
            raise GraphQLError(f"No operation named {operation_name!r}")
        self.position = chosen[0]
        return self.operation()

    def skip_operation(self) -> str | None:
        self.skipping = True  # another operation's variables are not this one's business
        try:
            self.operation_header()
        finally:
            self.skipping = False
        self.skip_braces()
        return self._name

    def skip_braces(self) -> None:
        depth = 0
        while True:
            _, text = self.peek()
            if text == "":
                raise GraphQLError("Parse error: unbalanced braces")
            self.position += 1
            depth += {"{": 1, "}": -1}.get(text, 0) if self.tokens[self.position - 1][0] == "punct" else 0
            if depth == 0:
                return

    def fragment_definition(self) -> None:
        self.take("fragment")
        name = self.take(kind="name")
        self.take("on")
        self.take(kind="name")
        while self.at("@"):
            self.directive()
        start = self.position
        self.skip_braces()
        self.fragments[name] = (start, self.position)

    def operation_header(self) -> OperationKind:
        self._name = None
        self.declared = {}
        if self.at("{"):
            return "query"
        kind = self.take(kind="name")
        if kind not in ("query", "mutation", "subscription"):
            raise GraphQLError(f"Parse error: unknown operation type {kind!r}")
        if self.peek()[0] == "name":
            self._name = self.take(kind="name")
        if self.at("("):
            self.variable_definitions()
        while self.at("@"):
            self.directive()
        return kind  # type: ignore[return-value]  # checked just above

    def operation(self) -> Operation:
        kind = self.operation_header()
        return Operation(kind, self._name, self.selection_set())

    def variable_definitions(self) -> None:
        self.take("(")
        while not self.at(")"):
            self.take("$")
            name = self.take(kind="name")
            self.take(":")
            non_null = self.type_reference()
            default = self.value(const=True) if self.at("=") and self.take("=") else None
            if name in self.variables:
                self.declared[name] = self.variables[name]
            elif default is not None or not non_null or self.skipping:
                self.declared[name] = default
            else:
                raise GraphQLError(f"Variable ${name} of a non-null type was not provided")
            while self.at("@"):
                self.directive()
        self.take(")")

    def type_reference(self) -> bool:
        """Read a type; True when it is non-null."""
        if self.at("["):
            self.take("[")
            self.type_reference()
            self.take("]")
        else:
            self.take(kind="name")
        if self.at("!"):
            self.take("!")
            return True
        return False

    def directive(self) -> None:
        self.take("@")
        self.take(kind="name")
        if self.at("("):
            self.arguments()

    # -- selections
    def selection_set(self) -> tuple[Selection, ...]:
        self.take("{")
        selections: list[Selection] = []
        while not self.at("}"):
            if self.at("..."):
                selections.append(self.fragment())
            else:
                selections.append(self.field())
        self.take("}")
        return tuple(selections)

    def fragment(self) -> InlineFragment:
        self.take("...")
        if self.at("on") and self.peek(1)[0] == "name":
            self.take("on")
            condition: str | None = self.take(kind="name")
        elif self.peek()[0] == "name":
            return self.spread(self.take(kind="name"))
        else:
            condition = None
        while self.at("@"):
            self.directive()
        return InlineFragment(condition, self.selection_set())

    def spread(self, name: str) -> InlineFragment:
        if name not in self.fragments:
            raise GraphQLError(f"Fragment {name} was used, but not defined")
        while self.at("@"):
            self.directive()
        resume, (start, _) = self.position, self.fragments[name]
        self.position = start
        selections = self.selection_set()
        self.position = resume
        return InlineFragment(None, selections)

    def field(self) -> Field:
        name, alias = self.take(kind="name"), None
        if self.at(":"):
            self.take(":")
            alias, name = name, self.take(kind="name")
        args = self.arguments() if self.at("(") else {}
        while self.at("@"):
            self.directive()
        selections = self.selection_set() if self.at("{") else ()
        return Field(name, alias, args, selections)

    def arguments(self) -> dict[str, Any]:
        self.take("(")
        args: dict[str, Any] = {}
        while not self.at(")"):
            name = self.take(kind="name")
            self.take(":")
            args[name] = self.value(const=False)
        self.take(")")
        return args

    def value(self, *, const: bool) -> Any:
        kind, text = self.peek()
        if text == "$" and kind == "punct":
            if const:
                raise GraphQLError("Parse error: a variable is not allowed in a default value")
            self.take("$")
            name = self.take(kind="name")
            if name not in self.declared:
                raise GraphQLError(f"Variable ${name} is used but not declared")
            return self.declared[name]
        if text == "[":
            self.take("[")
            items = []
            while not self.at("]"):
                items.append(self.value(const=const))
            self.take("]")
            return items
        if text == "{":
            self.take("{")
            entries: dict[str, Any] = {}
            while not self.at("}"):
                key = self.take(kind="name")
                self.take(":")
                entries[key] = self.value(const=const)
            self.take("}")
            return entries
        self.position += 1
        if kind == "string":
            return json.loads(text)
        if kind == "block":
            return _block_string(text)
        if kind == "number":
            return float(text) if any(c in text for c in ".eE") else int(text)
        if kind == "name":
            return {"true": True, "false": False, "null": None}.get(text, text)  # else an enum value
        raise GraphQLError(f"Parse error: expected a value, found {text or 'end of document'!r}")


def parse(
    source: str, variables: Mapping[str, Any] | None = None, operation_name: str | None = None
) -> Operation:
    """The operation of ``source`` (the one named ``operation_name`` if several), variables applied."""
    return _Parser(source, variables or {}).document(operation_name)
