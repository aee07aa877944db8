"""Print, as JSON, the IAM grants a SAM template makes once transformed:
how many statements, those whose Resource is "*", and the managed policy
ARNs attached. Run by test_template.py with the SAM venv's python
(samtranslator, the transform `sam deploy` runs); no AWS call is made.

Usage: iam_grants.py TEMPLATE"""

import json
import sys

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse


class Policies:
    """The managed-policy loader SAM asks for names it knows; offline."""

    def load(self):
        return {}


def statements(node):
    """Every statement, both branches of every Fn::If."""
    if isinstance(node, dict):
        if "Effect" in node and "Action" in node:
            yield node
        for v in node.values():
            yield from statements(v)
    elif isinstance(node, list):
        for v in node:
            yield from statements(v)


template = yaml_parse(open(sys.argv[1]).read())
# As `sam package` would leave them: code and definition in S3.
for res in template["Resources"].values():
    props = res.get("Properties", {})
    for key in ("CodeUri", "DefinitionUri", "ContentUri"):
        if isinstance(props.get(key), str):
            props[key] = f"s3://packaged/{key}"
out = transform(template, {"AWS::Region": "us-east-1"}, Policies())
star, managed, seen = [], set(), 0
for name, res in out["Resources"].items():
    props = res.get("Properties", {})
    for arn in props.get("ManagedPolicyArns", []):
        managed.add(json.dumps(arn, sort_keys=True))
    for st in statements(props):
        seen += 1
        resources = st.get("Resource", [])
        resources = resources if isinstance(resources, list) else [resources]
        if "*" in resources:
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            star.append({"resource": name, "actions": sorted(actions)})
print(json.dumps({"statements": seen, "star": star, "managed": sorted(managed)}))
