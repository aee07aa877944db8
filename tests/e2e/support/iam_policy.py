"""IAM's evaluation of identity-based policies, for the local rehearsal of
the deployed stack (iam_rehearsal.py): is (action, resource, context)
allowed by a role's statements?

What it follows, from IAM's documented evaluation logic: an explicit Deny
wins; otherwise some Allow must match, or the request is implicitly denied.
A statement matches when its Action (or NotAction) matches the action
(case-insensitive, `*` and `?` wildcards), its Resource (or NotResource)
matches the resource ARN (case-sensitive, `*` and `?` wildcards), and every
condition holds. Conditions: the String*, Arn*, Bool and Null operators,
with `...IfExists`; a key missing from the request context fails a positive
operator and satisfies a negated one, as IAM documents. An operator this
module does not know fails its statement, so it never allows by mistake.

What it does not model: resource-based policies, permission boundaries,
session policies and organisations' SCPs (the template uses none),
ForAnyValue/ForAllValues set operators and numeric or date operators.
"""

import re
from dataclasses import dataclass


@dataclass
class Decision:
    allowed: bool
    # The Sid (or index) of the statement that decided, or why none did.
    reason: str


def _glob(pattern: str, value: str, ignore_case: bool) -> bool:
    # IAM's wildcards are only `*` (any run of characters, `/` and `:`
    # included) and `?` (one character); everything else is literal.
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, value, re.IGNORECASE if ignore_case else 0) is not None


def _as_list(v) -> list:
    return v if isinstance(v, list) else [v]


def _positive(op: str, expected: list[str], actual: list[str]) -> bool | None:
    """Whether any actual value matches any expected one under `op`, or
    None for an operator this module does not model."""
    if op in ("StringEquals", "ArnEquals"):
        return any(a == e for a in actual for e in expected)
    if op == "StringEqualsIgnoreCase":
        return any(a.lower() == e.lower() for a in actual for e in expected)
    if op in ("StringLike", "ArnLike"):
        return any(_glob(e, a, False) for a in actual for e in expected)
    if op == "Bool":
        return any(a.lower() == e.lower() for a in actual for e in expected)
    return None


NEGATED = {"StringNotEquals": "StringEquals", "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
           "StringNotLike": "StringLike", "ArnNotEquals": "ArnEquals", "ArnNotLike": "ArnLike"}


def _condition_holds(op: str, key: str, expected, context: dict) -> bool:
    if_exists = op.endswith("IfExists")
    base = op[: -len("IfExists")] if if_exists else op
    actual = None
    for k, v in context.items():
        if k.lower() == key.lower():  # condition keys are case-insensitive
            actual = [str(x).lower() if isinstance(x, bool) else str(x) for x in _as_list(v)]
    expected = [str(e).lower() if isinstance(e, bool) else str(e) for e in _as_list(expected)]
    if base == "Null":
        return (actual is None) == (expected[0].lower() == "true")
    if actual is None:
        # Missing key: IfExists holds; a negated operator holds; a positive one fails.
        return if_exists or base in NEGATED
    if base in NEGATED:
        r = _positive(NEGATED[base], expected, actual)
        return r is not None and not r
    r = _positive(base, expected, actual)
    return bool(r)


def _matches(st: dict, action: str, resource: str, context: dict) -> bool:
    if "Action" in st:
        if not any(_glob(p, action, True) for p in _as_list(st["Action"])):
            return False
    elif "NotAction" in st:
        if any(_glob(p, action, True) for p in _as_list(st["NotAction"])):
            return False
    else:
        return False
    if "Resource" in st:
        if not any(_glob(p, resource, False) for p in _as_list(st["Resource"])):
            return False
    elif "NotResource" in st:
        if any(_glob(p, resource, False) for p in _as_list(st["NotResource"])):
            return False
    else:
        return False
    for op, keys in (st.get("Condition") or {}).items():
        for key, expected in keys.items():
            if not _condition_holds(op, key, expected, context):
                return False
    return True


def evaluate(statements: list[dict], action: str, resource: str, context: dict | None = None) -> Decision:
    """IAM's decision for one request under these identity-policy statements."""
    context = context or {}
    allow = None
    for i, st in enumerate(statements):
        if not _matches(st, action, resource, context):
            continue
        sid = st.get("Sid", f"statement {i}")
        if st.get("Effect") == "Deny":
            return Decision(False, f"explicitly denied by {sid}")
        if st.get("Effect") == "Allow" and allow is None:
            allow = sid
    if allow is not None:
        return Decision(True, f"allowed by {allow}")
    return Decision(False, f"no identity-based policy allows the {action} action")

