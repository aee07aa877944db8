"""The deployment artefacts stay consistent with the code: the SAM template
passes cfn-lint, the state machine is valid JSON once substituted, and every
`Ferry.*` error its Retry and Catch match is a name the code produces (in
functions/engine/src/error.rs, the one place that names errors)."""

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from conftest import ROOT


def test_template_passes_cfn_lint():
    lint = Path(sys.executable).parent / "cfn-lint"
    res = subprocess.run([str(lint), str(ROOT / "template.yaml")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr


def test_state_machine_matches_the_error_types_the_code_produces():
    text = (ROOT / "infra" / "statemachine" / "replicator.asl.json").read_text()
    definition = json.loads(text.replace("${MaxConcurrency}", "10"))
    produced = set(re.findall(r'"(Ferry\.[A-Za-z]+)"', (ROOT / "functions" / "engine" / "src" / "error.rs").read_text()))
    assert {"Ferry.Retryable", "Ferry.Fatal", "Ferry.ConfigError", "Ferry.InputError"} <= produced

    matched = set()

    def walk(states):
        for state in states.values():
            for rule in state.get("Retry", []) + state.get("Catch", []):
                matched.update(e for e in rule["ErrorEquals"] if e.startswith("Ferry."))
            if "ItemProcessor" in state:
                walk(state["ItemProcessor"]["States"])

    walk(definition["States"])
    assert matched, "the state machine must match Ferry's error types"
    assert matched <= produced, f"matched but never produced: {matched - produced}"
    assert "Ferry.Retryable" in matched


def test_state_machine_passes_asl_validator():
    """The definition, substituted as the template does, passes the
    asl-validator package (schema and JSONPath checks)."""
    validator = Path(os.environ.get("FERRY_TOOLS_NODE", ROOT / ".cache" / "node")) / "node_modules" / ".bin" / "asl-validator"
    assert validator.exists(), f"{validator} is missing: infra/local/up installs it"
    text = (ROOT / "infra" / "statemachine" / "replicator.asl.json").read_text()
    for key in ("PlanFunctionArn", "ReplicateFunctionArn", "SyncGroupsFunctionArn"):
        text = text.replace("${" + key + "}", f"arn:aws:lambda:us-east-1:123456789012:function:{key}")
    text = text.replace("${MaxConcurrency}", "10")
    assert "${" not in text, "a substitution the template does not make"
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        f.write(text)
    res = subprocess.run([str(validator), "--json-path", f.name], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_template_passes_sam_validate_lint():
    sam = Path(os.environ.get("FERRY_SAM_VENV", ROOT / ".cache" / "sam-venv")) / "bin" / "sam"
    assert sam.exists(), f"{sam} is missing: infra/local/up installs it"
    env = dict(os.environ, SAM_CLI_TELEMETRY="0")
    res = subprocess.run([str(sam), "validate", "--lint", "--template-file", str(ROOT / "template.yaml"), "--region", "us-east-1"],
                         capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr


def test_template_wires_every_substitution_and_function():
    """Each ${...} in the definition is a DefinitionSubstitution, and each
    Lambda binary in the workspace is a function in the template."""
    template = (ROOT / "template.yaml").read_text()
    definition = (ROOT / "infra" / "statemachine" / "replicator.asl.json").read_text()
    for key in set(re.findall(r"\$\{([A-Za-z]+)\}", definition)):
        assert re.search(rf"^\s+{key}: ", template, re.M), f"${{{key}}} is not substituted by template.yaml"
    binaries = {p.parent.parent.name for p in (ROOT / "functions").glob("*/src/main.rs")} - {"cli"}
    for b in binaries:
        assert f"Binary: ferry-{b}" in template, f"functions/{b} is not deployed by template.yaml"
