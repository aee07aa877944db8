"""The stack `sam deploy` would create, resolved offline: template.yaml
transformed by SAM's own translator (samtranslator, as `sam deploy` runs it),
then every `Ref`, `Fn::GetAtt`, `Fn::Sub`, `Fn::If`, `Fn::Join`,
`Fn::Select`, `Fn::Split` and `Fn::ImportValue` resolved as CloudFormation would for the given
parameters, stack name, account and region. Prints, as JSON, what the
IAM rehearsal needs: each role's policy statements (inline policies and the
template's own managed policies), each function's role, environment,
timeout and memory, the state machine's role, the tables, and the Outputs
with what the stack exports. Parameters are refused as CloudFormation
refuses them (AllowedPattern, AllowedValues, size).

Run with the SAM venv's python (samtranslator); reads its request as JSON
on stdin: {"template", "stack", "region", "account", "parameters",
"function_names": {logical id: physical name}, "exports": {name: value}
(what other stacks export, for Fn::ImportValue)}. No AWS call is made.
"""

import json
import math
import re
import sys
from pathlib import Path

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

NO_VALUE = object()


class Policies:
    """The managed-policy loader SAM asks for names it knows; offline."""

    def load(self):
        return {}


class Unresolvable(Exception):
    pass


class Refused(Exception):
    """What CloudFormation or Lambda would refuse at deployment."""


# CloudFormation: "Maximum size of a parameter value: 4,096 bytes".
PARAMETER_BYTES = 4096
# CloudWatch Logs keeps a log group's events for one of these periods, in
# days (PutRetentionPolicy); any other is refused as the group is created.
LOG_RETENTION_DAYS = {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288,
                      3653}
# Lambda: the environment variables' keys and values, 4 KB in all.
ENVIRONMENT_BYTES = 4096


class Stack:
    def __init__(self, template: dict, req: dict):
        self.t = template
        self.res = template["Resources"]
        self.stack, self.region, self.account = req["stack"], req["region"], req["account"]
        self.function_names = req.get("function_names", {})
        # What the region's other stacks export (Outputs' Export), by name.
        self.exports: dict[str, str] = req.get("exports", {})
        self.params = {}
        for name, spec in template.get("Parameters", {}).items():
            value = req["parameters"].get(name, spec.get("Default"))
            if value is None:
                raise Unresolvable(f"parameter {name} has no value and no default")
            value = str(value)
            if len(value.encode()) > PARAMETER_BYTES:
                raise Refused(f"CloudFormation refuses parameter {name}: its value is {len(value.encode())} bytes, "
                              f"over the {PARAMETER_BYTES}-byte limit of a parameter value")
            # CloudFormation checks AllowedPattern (the whole value) and
            # AllowedValues before anything else, with the template's words.
            allowed = spec.get("AllowedValues")
            pattern = spec.get("AllowedPattern")
            if (allowed is not None and value not in [str(a) for a in allowed]) or \
                    (pattern is not None and not re.fullmatch(pattern, value)):
                why = spec.get("ConstraintDescription") or (
                    f"must match pattern {pattern}" if pattern is not None else f"must be one of {allowed}")
                raise Refused(f"CloudFormation refuses parameter {name}: {value!r} failed to satisfy constraint: {why}")
            # A Number: a number (an integer or a float) within MinValue and
            # MaxValue.
            if spec["Type"] == "Number":
                # A plain decimal (Python's float() would also take "1_000",
                # "inf" and "nan").
                number = float(value) if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", value) else math.nan
                if not math.isfinite(number):
                    raise Refused(f"CloudFormation refuses parameter {name}: {value!r} must be a number")
                if "MinValue" in spec and number < float(spec["MinValue"]):
                    raise Refused(f"CloudFormation refuses parameter {name}: {value!r} must be a number not less than "
                                  f"{spec['MinValue']}")
                if "MaxValue" in spec and number > float(spec["MaxValue"]):
                    raise Refused(f"CloudFormation refuses parameter {name}: {value!r} must be a number not greater "
                                  f"than {spec['MaxValue']}")
            unchecked = {"MinLength", "MaxLength"} & spec.keys()
            if unchecked:
                raise Unresolvable(f"parameter {name}'s {sorted(unchecked)}: the rehearsal does not check them")
            # CloudFormation hands list parameters to the template as lists.
            if spec["Type"] == "CommaDelimitedList" or spec["Type"].startswith("List<"):
                value = value.split(",")
            self.params[name] = value
        self.conditions: dict[str, bool] = {}

    # Conditions -----------------------------------------------------------
    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            self.conditions[name] = self.cond_expr(self.t["Conditions"][name])
        return self.conditions[name]

    def cond_expr(self, node) -> bool:
        ((fn, arg),) = node.items()
        if fn == "Condition":
            return self.condition(arg)
        if fn == "Fn::Not":
            return not self.cond_expr(arg[0])
        if fn == "Fn::And":
            return all(self.cond_expr(a) for a in arg)
        if fn == "Fn::Or":
            return any(self.cond_expr(a) for a in arg)
        if fn == "Fn::Equals":
            return self.resolve(arg[0]) == self.resolve(arg[1])
        if fn == "Fn::Contains":  # Rules only
            return self.resolve(arg[1]) in self.resolve(arg[0])
        raise Unresolvable(f"condition function {fn}")

    def check_rules(self) -> None:
        """The template's Rules, as CloudFormation checks them before it
        creates anything: an assertion that fails refuses the stack."""
        for name, rule in self.t.get("Rules", {}).items():
            if "RuleCondition" in rule and not self.cond_expr(rule["RuleCondition"]):
                continue
            for a in rule.get("Assertions", []):
                if not self.cond_expr(a["Assert"]):
                    raise Refused(f"CloudFormation refuses the parameters: rule {name}: "
                                  f"{a.get('AssertDescription', 'an assertion failed')}")

    # Physical names and attributes -----------------------------------------
    def ref(self, name: str):
        pseudo = {"AWS::Region": self.region, "AWS::AccountId": self.account, "AWS::StackName": self.stack,
                  "AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com"}
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in pseudo:
            return pseudo[name]
        if name in self.params:
            return self.params[name]
        r = self.res.get(name)
        if r is None:
            raise Unresolvable(f"Ref {name}")
        kind, props = r["Type"], r.get("Properties", {})
        if kind == "AWS::DynamoDB::Table":
            return self.resolve(props["TableName"])
        if kind == "AWS::Logs::LogGroup":
            return self.resolve(props["LogGroupName"])
        if kind == "AWS::Lambda::Function":
            return self.function_names.get(name, f"{self.stack}-{name}")
        if kind == "AWS::IAM::Role":
            return self.role_name(name)
        if kind == "AWS::IAM::ManagedPolicy":
            return f"arn:aws:iam::{self.account}:policy/{self.stack}-{name}"
        if kind == "AWS::StepFunctions::StateMachine":
            return f"arn:aws:states:{self.region}:{self.account}:stateMachine:{self.stack}"
        return name

    def role_name(self, logical: str) -> str:
        return f"{self.stack}-{logical}"

    def getatt(self, name: str, attr: str):
        kind = self.res[name]["Type"]
        physical = self.ref(name)
        if attr == "Arn":
            arns = {
                "AWS::DynamoDB::Table": f"arn:aws:dynamodb:{self.region}:{self.account}:table/{physical}",
                # CloudFormation's LogGroup Arn ends with ":*".
                "AWS::Logs::LogGroup": f"arn:aws:logs:{self.region}:{self.account}:log-group:{physical}:*",
                "AWS::Lambda::Function": f"arn:aws:lambda:{self.region}:{self.account}:function:{physical}",
                "AWS::IAM::Role": f"arn:aws:iam::{self.account}:role/{physical}",
            }
            if kind in arns:
                return arns[kind]
        raise Unresolvable(f"Fn::GetAtt {name}.{attr} ({kind})")

    # Intrinsic functions ---------------------------------------------------
    def sub(self, arg):
        text, names = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])

        def one(m: re.Match) -> str:
            key = m.group(1)
            if key.startswith("!"):
                return "${" + key[1:] + "}"
            if key in names:
                v = self.resolve(names[key])
            elif "." in key and not key.startswith("AWS::"):
                v = self.getatt(*key.split(".", 1))
            else:
                v = self.ref(key)
            if not isinstance(v, str):
                raise Unresolvable(f"Fn::Sub ${{{key}}} is not a string")
            return v

        return re.sub(r"\$\{([^}]+)\}", one, text)

    def resolve(self, node):
        if isinstance(node, list):
            return [v for v in (self.resolve(x) for x in node) if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((k, v),) = node.items()
            if k == "Ref":
                return self.ref(v)
            if k == "Fn::GetAtt":
                name, attr = v.split(".", 1) if isinstance(v, str) else v
                return self.getatt(name, attr)
            if k == "Fn::Sub":
                return self.sub(v)
            if k == "Fn::If":
                # Only the branch taken is resolved, as CloudFormation does.
                return self.resolve(v[1] if self.condition(v[0]) else v[2])
            if k == "Fn::Join":
                return v[0].join(self.resolve(v[1]))
            if k == "Fn::Select":
                return self.resolve(v[1])[int(self.resolve(v[0]))]
            if k == "Fn::Split":
                return self.resolve(v[1]).split(v[0])
            if k == "Fn::ImportValue":
                # Another stack's export, as CloudFormation looks it up when
                # it creates or updates this stack: one that no stack
                # exports refuses the stack.
                name = self.resolve(v)
                if name not in self.exports:
                    raise Refused(f"CloudFormation refuses stack {self.stack}: No export named {name} found")
                return self.exports[name]
            if k.startswith("Fn::"):
                raise Unresolvable(k)
        out = {}
        for k, v in node.items():
            r = self.resolve(v)
            if r is not NO_VALUE:
                out[k] = r
        return out

    def created(self, name: str) -> bool:
        c = self.res[name].get("Condition")
        return c is None or self.condition(c)


def statements_of(doc: dict) -> list[dict]:
    st = doc.get("Statement", [])
    return st if isinstance(st, list) else [st]


def main() -> None:
    req = json.load(sys.stdin)
    template = yaml_parse(open(req["template"]).read())
    # As `sam package` would leave them: code, state machine definition and
    # layer content in S3. A layer's local folder is kept: the rehearsal
    # mounts it where Lambda would (/opt).
    base = Path(req["template"]).resolve().parent
    layer_dirs = {}
    for logical, res in template["Resources"].items():
        props = res.get("Properties", {})
        for key in ("CodeUri", "DefinitionUri", "ContentUri"):
            if isinstance(props.get(key), str):
                if key == "ContentUri":
                    layer_dirs[logical] = str(base / props[key])
                props[key] = f"s3://packaged/{logical}/{key}"
    params = {"AWS::Region": req["region"], **req["parameters"]}
    out = transform(template, params, Policies())
    stack = Stack(out, req)
    # CloudFormation checks the Rules before it creates anything.
    stack.t = dict(out, Rules=template.get("Rules", {}))
    stack.check_rules()
    managed, policies = {}, {}
    for name, r in out["Resources"].items():
        if r["Type"] == "AWS::IAM::ManagedPolicy" and stack.created(name):
            managed[stack.ref(name)] = policies[name] = statements_of(stack.resolve(r["Properties"]["PolicyDocument"]))
    roles = {}
    for name, r in out["Resources"].items():
        if r["Type"] != "AWS::IAM::Role" or not stack.created(name):
            continue
        props = stack.resolve(r.get("Properties", {}))
        sts = []
        for p in props.get("Policies", []):
            sts += statements_of(p["PolicyDocument"])
        for arn in props.get("ManagedPolicyArns", []):
            if arn not in managed:
                # An AWS-managed policy: its text is not in the template, so
                # the rehearsal cannot know what it grants. Refuse.
                raise Unresolvable(f"{name} attaches {arn}, which is not defined in the template")
            sts += managed[arn]
        roles[name] = {"name": stack.role_name(name), "arn": stack.getatt(name, "Arn"), "statements": sts}
    functions, state_machine, tables, network = {}, None, [], {}
    for name, r in out["Resources"].items():
        if not stack.created(name):
            continue
        if r["Type"] == "AWS::Lambda::Function":
            p = r["Properties"]
            role = p["Role"]["Fn::GetAtt"]
            role = role.split(".")[0] if isinstance(role, str) else role[0]
            environment = stack.resolve(p.get("Environment", {}).get("Variables", {}))
            # Lambda measures the variables as JSON text ({"K":"V",...}).
            size = len(json.dumps(environment, separators=(",", ":"), ensure_ascii=False).encode())
            if size > ENVIRONMENT_BYTES:
                raise Refused(f"Lambda refuses {name}: its environment variables total {size} bytes, over Lambda's "
                              f"{ENVIRONMENT_BYTES}-byte limit")
            layers = []
            for ref in p.get("Layers", []):
                # SAM renames a LayerVersion to its logical id plus a hash of its content.
                layer = ref["Ref"] if isinstance(ref, dict) and "Ref" in ref else None
                owner = next((k for k in layer_dirs if layer and layer.startswith(k)), None)
                if owner is None:
                    raise Unresolvable(f"{name}'s layer {ref}")
                layers.append(layer_dirs[owner])
            timeout = int(stack.resolve(p.get("Timeout", 3)))
            memory = int(stack.resolve(p.get("MemorySize", 128)))
            if not 1 <= timeout <= 900:
                raise Refused(f"Lambda refuses {name}: Timeout {timeout} is outside 1 to 900 seconds")
            if not 128 <= memory <= 10240:
                raise Refused(f"Lambda refuses {name}: MemorySize {memory} is outside 128 to 10240 MB")
            functions[stack.ref(name)] = {
                "logical": name,
                "role": role,
                "environment": environment,
                "layers": layers,
                "timeout": timeout,
                "memory": memory,
            }
        elif r["Type"] == "AWS::StepFunctions::StateMachine":
            role = r["Properties"]["RoleArn"]["Fn::GetAtt"]
            state_machine = {"logical": name, "role": role.split(".")[0] if isinstance(role, str) else role[0],
                             "max_concurrency": stack.resolve(r["Properties"].get("DefinitionSubstitutions", {}).get("MaxConcurrency"))}
        elif r["Type"] == "AWS::DynamoDB::Table":
            tables.append(stack.resolve(r["Properties"]))
        elif r["Type"] == "AWS::Logs::LogGroup" and "RetentionInDays" in r.get("Properties", {}):
            days = stack.resolve(r["Properties"]["RetentionInDays"])
            if str(days) not in {str(d) for d in LOG_RETENTION_DAYS}:
                raise Refused(f"CloudWatch Logs refuses {name}: RetentionInDays {days} is not one of the periods it "
                              f"keeps ({', '.join(map(str, sorted(LOG_RETENTION_DAYS)))})")
        elif r["Type"].startswith("AWS::EC2::"):
            network[name] = {"Type": r["Type"], "Properties": stack.resolve(r["Properties"])}
    # What this stack exports, for a stack that imports it (Fn::ImportValue).
    exports, outputs = {}, {}
    for name, o in out.get("Outputs", {}).items():
        if "Condition" in o and not stack.condition(o["Condition"]):
            continue
        outputs[name] = stack.resolve(o["Value"])
        if "Export" in o:
            exports[stack.resolve(o["Export"]["Name"])] = outputs[name]
    print(json.dumps({"roles": roles, "functions": functions, "state_machine": state_machine, "tables": tables,
                      "network": network, "exports": exports, "outputs": outputs,
                      "managed_policies": policies}))


if __name__ == "__main__":
    try:
        main()
    except Unresolvable as e:
        print(f"sam_stack.py: cannot resolve {e}", file=sys.stderr)
        sys.exit(2)
    except Refused as e:
        print(f"sam_stack.py: {e}", file=sys.stderr)
        sys.exit(3)
