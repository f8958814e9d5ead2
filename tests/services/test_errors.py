"""services/errors.py: one tree, drawn in its docstring, and one answer per error."""

from __future__ import annotations

import inspect

import pytest

import events.errors
from services import errors
from services.errors import (
    INTERNAL,
    Answer,
    EarpieceError,
    ServiceError,
    TokenExpired,
    answer_for,
)

ALL_ERRORS = [
    cls
    for module in (events.errors, errors)
    for _, cls in inspect.getmembers(module, inspect.isclass)
    if issubclass(cls, EarpieceError) and cls.__module__ == module.__name__
]

TREE = [line for line in (errors.__doc__ or "").splitlines() if line.startswith("    ")]
"""The tree drawn in the docstring, from its root ``EarpieceError`` line."""

NEVER_ANSWERED = {
    "EarpieceError",
    "StoreError",
    "InconsistentEntry",
    "WrongExpectedVersion",
    "ServiceError",
    "RequestError",
    "AuthError",
    "RouterError",
    "ForbiddenRoute",
    "NoFreeSlot",
    "UnknownEndpoint",
    "SettingsError",
    "RedisServerError",
}
"""Bases, and errors that are handled inside the shell (logged, retried, or the CLI's)."""


def test_every_error_the_services_raise_descends_from_service_error() -> None:
    assert {cls for cls in ALL_ERRORS if cls.__module__ == "services.errors"} == {
        cls for cls in ALL_ERRORS if issubclass(cls, ServiceError)
    }


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda cls: cls.__name__)
def test_the_docstring_draws_every_error(cls: type) -> None:
    drawn = {line.split("── ")[-1].split()[0] for line in TREE if "── " in line}
    root = TREE[0].split()[0]

    assert cls.__name__ in drawn | {root}


@pytest.mark.parametrize(
    "cls", [c for c in ALL_ERRORS if c.__name__ not in NEVER_ANSWERED], ids=lambda c: c.__name__
)
def test_every_error_a_client_can_see_has_its_own_answer_drawn_beside_it(cls: type) -> None:
    error = cls.__new__(cls)
    answer = answer_for(error)
    line = next(
        line for line in (errors.__doc__ or "").splitlines() if f"── {cls.__name__} " in line
    )

    assert answer is not INTERNAL
    assert f"{answer.status} {answer.error}" in line
    assert (str(answer.close_code) in line) == (answer.close_code is not None)


def test_a_subclass_takes_its_nearest_bases_answer() -> None:
    assert answer_for(TokenExpired()) == Answer(401, "unauthorized", 4401)


def test_an_error_of_no_known_kind_is_internal() -> None:
    assert answer_for(RuntimeError("a bug")) is INTERNAL
    assert answer_for(errors.NoFreeSlot("room 'r': full")) is INTERNAL
