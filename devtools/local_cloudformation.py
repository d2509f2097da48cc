"""Where moto's CloudFormation answers differently from AWS for the stacks' outputs, corrected as AWS documents it.

The CDK CLI deploys with change sets (CreateChangeSet, then ExecuteChangeSet). moto computes a stack's
outputs only when it creates the stack, from the empty template of the review, and never again: after
ExecuteChangeSet every stack had no outputs, so every command that reads them (bucket, OTA role, device
policy, the stage's target-name prefix) fell back on guesses or skipped its check. AWS evaluates the
outputs of the template the change set applied; so does this correction.

``Ref`` of an ``AWS::IoT::Policy`` is the policy's name (AWS documents it so); moto's IoT policy had no
physical id, so the reference resolved to a Python object's text.
"""

from __future__ import annotations

from typing import Any

from moto.cloudformation import models as cloudformation_models
from moto.cloudformation.parsing import OutputMap
from moto.iot import models as iot_models

_moto_apply = cloudformation_models.ChangeSet.apply


def _apply_with_outputs(self: Any) -> None:
    _moto_apply(self)
    stack = self.stack
    stack.template_dict = self.template_dict
    stack.output_map = OutputMap(stack.resource_map, self.template_dict, stack.stack_id)


def add_cloudformation_corrections() -> None:
    """Stacks deployed by a change set carry the outputs of the template it applied (idempotent)."""
    cloudformation_models.ChangeSet.apply = _apply_with_outputs  # type: ignore[method-assign]
    iot_models.FakePolicy.physical_resource_id = property(lambda self: self.name)  # type: ignore[attr-defined]
