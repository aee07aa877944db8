"""The deployment artefacts stay consistent with the code: the SAM template
passes cfn-lint, the state machine is valid JSON once substituted, and every
`Ferry.*` error its Retry and Catch match is a name the code produces (in
functions/engine/src/error.rs, the one place that names errors)."""

import json
import re
import subprocess
import sys
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
