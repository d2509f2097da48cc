"""Things as AWS IoT keeps them: a thing without a thing type holds at most three attributes.

moto stores any number of attributes on any thing. AWS refuses a fourth attribute on a thing without a
thing type (CreateThing, UpdateThing: InvalidRequestException; "you can add up to three attributes to a
thing without a thing type, and up to 50 to a thing with one"), which is why the stacks create a thing type
for the fleet inventory. This correction makes the local endpoint refuse as AWS does, so a registration path
that forgets the type fails in the tests as it would in an account.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from moto.iot import exceptions as iot_exceptions
from moto.iot import models as iot_models

UNTYPED_THING_ATTRIBUTES = 3


def _refuse_untyped(thing: Any) -> None:
    if thing.thing_type is None and len(thing.attributes) > UNTYPED_THING_ATTRIBUTES:
        raise iot_exceptions.InvalidRequestException(
            f"a thing without a thing type can have at most {UNTYPED_THING_ATTRIBUTES} attributes; "
            f"{thing.thing_name} would have {len(thing.attributes)}"
        )


def add_thing_corrections() -> None:
    """Wrap moto's CreateThing and UpdateThing (idempotent)."""
    backend = iot_models.IoTBackend
    if getattr(backend.create_thing, "_three_attributes", False):
        return
    create, update = backend.create_thing, backend.update_thing

    @functools.wraps(create)
    def create_thing(self: Any, *args: Any, **kwargs: Any) -> Any:
        thing = create(self, *args, **kwargs)
        try:
            _refuse_untyped(thing)
        except iot_exceptions.InvalidRequestException:
            del self.things[thing.arn]
            raise
        return thing

    @functools.wraps(update)
    def update_thing(self: Any, thing_name: str, *args: Any, **kwargs: Any) -> Any:
        thing = self.describe_thing(thing_name)
        before = (thing.thing_type, copy.deepcopy(thing.attributes))
        answer = update(self, thing_name, *args, **kwargs)
        try:
            _refuse_untyped(thing)
        except iot_exceptions.InvalidRequestException:
            thing.thing_type, thing.attributes = before
            raise
        return answer

    create_thing._three_attributes = True  # type: ignore[attr-defined]
    backend.create_thing = create_thing  # type: ignore[method-assign]
    backend.update_thing = update_thing  # type: ignore[method-assign]
