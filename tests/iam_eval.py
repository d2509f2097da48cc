"""A small evaluator of the synthesized policies, as IAM and AWS IoT evaluate them.

AWS's authorization data (the Service Authorization Reference, as parliament carries it) says on which
resource types each action is evaluated. An action evaluated on none is evaluated on ``*`` alone: only a
statement whose resource matches ``*`` grants it, and then it reaches every resource of the account,
whatever other ARNs sit in the policy beside it. This evaluator therefore asks, per action, which
request resources it is evaluated on; an explicit Deny wins; a condition key the request does not
provide is taken as the caller's to choose (so it never narrows a grant by accident).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from parliament import iam_definition

REGION, ACCOUNT = "eu-west-1", "123456789012"
WRITE_LEVELS = ("Write", "Permissions management", "Tagging")
TARGET_TYPES = ("thing", "thinggroup")


def _privileges() -> dict[str, dict[str, Any]]:
    table = {}
    for service in iam_definition:
        for privilege in service["privileges"]:
            table[f"{service['prefix']}:{privilege['privilege']}".lower()] = privilege
    return table


PRIVILEGES = _privileges()


# Resource types that share another's ARN format (a dynamic thing group is a thinggroup/<name> ARN).
SAME_ARN = {"dynamicthinggroup": "thinggroup"}


def resource_types(action: str) -> tuple[str, ...]:
    """The resource types ``action`` is evaluated on (``*`` marks required ones); () means ``*`` only."""
    privilege = PRIVILEGES[action.lower()]
    types = (r["resource_type"] for r in privilege["resource_types"] if r["resource_type"])
    return tuple(SAME_ARN.get(t.rstrip("*"), t.rstrip("*")) + ("*" if t.endswith("*") else "") for t in types)


def access_level(action: str) -> str:
    return str(PRIVILEGES[action.lower()]["access_level"])


def iot_arn(resource: str, name: str, account: str = ACCOUNT) -> str:
    return f"arn:aws:iot:{REGION}:{account}:{resource}/{name}"


def account_of(arn: str) -> str:
    return arn.split(":")[4]


# A dynamic group's members are whatever its query selects, in the whole account: IAM evaluates the group's
# name only. Whoever may set a query on a group it may target reaches every thing of that account through it.
QUERY_ACTIONS = ("iot:createdynamicthinggroup", "iot:updatedynamicthinggroup")
# Actions that act on every member of a group given as a target.
TARGETING_ACTIONS = ("iot:createjob",)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _glob(pattern: str, value: str) -> bool:
    # IAM's wildcards: * any run, ? one character; everything else literal (fnmatch's [] are not IAM's).
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None


def _substitute(text: str, context: Mapping[str, str]) -> str:
    return re.sub(r"\$\{([^}]+)\}", lambda m: context.get(m.group(1), m.group(0)), text)


_OPERATORS = {
    "StringEquals": lambda p, v: p == v,
    "StringLike": _glob,
    "ArnEquals": lambda p, v: p == v,
    "ArnLike": _glob,
    "Bool": lambda p, v: p.lower() == v.lower(),
}


def _conditions_hold(conditions: Mapping[str, Mapping[str, Any]], context: Mapping[str, str]) -> bool:
    for operator, tests in conditions.items():
        for key, patterns in tests.items():
            if key not in context:
                continue  # the caller's to choose: assume the most favourable value
            check = _OPERATORS.get(operator)
            if check is None:
                raise NotImplementedError(f"condition operator {operator}")
            values = [_substitute(str(p), context) for p in _as_list(patterns)]
            if not any(check(p, context[key]) for p in values):
                return False
    return True


def _statement_matches(statement: Mapping[str, Any], action: str, resource: str, context: Mapping[str, str]) -> bool:
    if "Action" in statement:
        if not any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in _as_list(statement["Action"])):
            return False
    elif any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in _as_list(statement["NotAction"])):
        return False
    if "Resource" in statement:
        if not any(_glob(_substitute(r, context), resource) for r in _as_list(statement["Resource"])):
            return False
    elif any(_glob(_substitute(r, context), resource) for r in _as_list(statement["NotResource"])):
        return False
    return _conditions_hold(statement.get("Condition", {}), context)


@dataclass(frozen=True)
class Principal:
    """Everything one principal is granted: its policy documents (IAM or AWS IoT, all in one account)."""

    name: str
    documents: tuple[Mapping[str, Any], ...]

    def statements(self) -> Iterable[Mapping[str, Any]]:
        for document in self.documents:
            yield from _as_list(document["Statement"])

    def allows(self, action: str, resource: str, context: Mapping[str, str] | None = None) -> bool:
        """One request on one resource: an explicit Deny wins, else any matching Allow."""
        context = context or {}
        matching = [s for s in self.statements() if _statement_matches(s, action, resource, context)]
        return bool(matching) and all(s.get("Effect") != "Deny" for s in matching)

    def actions(self) -> set[str]:
        """Every action an Allow names (our policies name actions without wildcards)."""
        return {a for s in self.statements() if s.get("Effect") == "Allow" for a in _as_list(s.get("Action", []))}

    def unscoped_actions(self) -> set[str]:
        """Actions IAM evaluates on ``*`` only that this principal holds: they reach every stage."""
        return {a for a in self.actions() if a.lower() in PRIVILEGES and not resource_types(a) and self.allows(a, "*")}

    def reach(self, resource_type: str, arn: str, own_names: Mapping[str, list[str]]) -> set[str]:
        """The actions with which this principal can act on ``arn`` (of ``resource_type``).

        An action evaluated on several resources (CreateJob: the job and each target) is allowed when
        ``arn`` is, and for each other required type some name of the caller's own (``own_names``) is.
        """
        found = set()
        for action in self.actions():
            if action.lower() not in PRIVILEGES:
                continue
            types = resource_types(action)
            if not types:
                continue  # counted by unscoped_actions()
            if resource_type not in (t.rstrip("*") for t in types) or not self.allows(action, arn):
                continue
            others = [t.rstrip("*") for t in types if t.endswith("*") and t.rstrip("*") != resource_type]
            # A job's targets are things or groups (the data marks both required): one of either suffices,
            # and a request aimed at a target needs no other target of the caller's own.
            plain = [t for t in others if t not in TARGET_TYPES]
            targets = [own for t in others if t in TARGET_TYPES for own in own_names[t]]
            if all(any(self.allows(action, own) for own in own_names[t]) for t in plain) and (
                resource_type in TARGET_TYPES or not targets or any(self.allows(action, own) for own in targets)
            ):
                found.add(action)
        if resource_type == "thing":
            found |= self._reach_through_queries(arn, own_names)
        return found

    def chooses_group_members(self, groups: Iterable[str]) -> bool:
        """Whether this principal may set the query of one of ``groups`` (so choose its members)."""
        return any(self.allows(action, group) for action in QUERY_ACTIONS for group in groups)

    def _reach_through_queries(self, thing: str, own_names: Mapping[str, list[str]]) -> set[str]:
        groups = [group for group in own_names["thinggroup"] if account_of(group) == account_of(thing)]
        if not self.chooses_group_members(groups):
            return set()
        return {
            action
            for group in groups
            for action in self.reach("thinggroup", group, own_names)
            if action.lower() in TARGETING_ACTIONS
        }
