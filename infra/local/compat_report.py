"""Summarise a compatibility run (infra/local/compat) into compat/results.md
and compat/results.json (with --side target, compat/target-results.*: the
target's release varies): per Kafka release of that side and per test file,
how many tests passed, failed, errored or were skipped, and which failed
with what message. Reads pytest's JUnit XML reports (one per release) and
the runs.tsv the script writes (release, `up` seconds and status, pytest
status and seconds, the test files run: Tansu skips the security tests). Standard library only.
"""

import argparse
import datetime
import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path


def file_of(case: ET.Element) -> str:
    """tests/e2e/test_x.py from a testcase's classname (tests.e2e.test_x[.Class])."""
    parts = case.get("classname", "").split(".")
    for i, part in enumerate(parts):
        if part.startswith("test_"):
            return "/".join(parts[: i + 1]) + ".py"
    return ".".join(parts)


def first_line(text: str | None, limit: int = 300) -> str:
    line = next((l.strip() for l in (text or "").splitlines() if l.strip()), "")
    return line[:limit]


def read_junit(path: Path, files: list[str]) -> dict[str, dict]:
    per = {f: {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "failures": []} for f in files}
    if not path.exists():
        return per
    for case in ET.parse(path).getroot().iter("testcase"):
        row = per.setdefault(file_of(case), {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "failures": []})
        name = case.get("name", "")
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
            kind = "errors"
        else:
            kind = "failed"
        if bad is not None:
            row[kind] += 1
            row["failures"].append({"test": name, "kind": kind, "message": first_line(bad.get("message") or bad.text)})
        elif case.find("skipped") is not None:
            row["skipped"] += 1
        else:
            row["passed"] += 1
    return per


def cell(row: dict | None) -> str:
    if row is None:
        return "not run"
    total = row["passed"] + row["failed"] + row["errors"]
    text = f"{row['passed']}/{total} passed"
    if row["failed"] or row["errors"]:
        text += f", {row['failed'] + row['errors']} failed: " + ", ".join(f"`{f['test']}`" for f in row["failures"])
    if row["skipped"]:
        text += f", {row['skipped']} skipped"
    return text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=Path, required=True)
    ap.add_argument("--junit-dir", type=Path, required=True)
    ap.add_argument("--ferry", required=True)
    ap.add_argument("--side", choices=["source", "target"], default="source",
                    help="the side whose release each run varies")
    ap.add_argument("--other-version", required=True, help="the other side's release")
    ap.add_argument("--md", type=Path, required=True)
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("tests", nargs="+")
    a = ap.parse_args()

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    runs = []
    for line in a.runs.read_text().splitlines():
        version, up_s, up_rc, test_rc, test_s, *ran = line.split("\t")
        ran_files = ran[0].split() if ran else a.tests
        tests = read_junit(a.junit_dir / f"{a.side}-{version}.xml", ran_files) if int(up_rc) == 0 else None
        other = "target" if a.side == "source" else "source"
        runs.append({f"{a.side}_version": version, f"{other}_version": a.other_version, "up_seconds": int(up_s),
                     "up_exit": int(up_rc), "pytest_exit": int(test_rc), "pytest_seconds": int(test_s),
                     "files": tests, "files_run": ran_files})
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "commit": commit, "ferry": a.ferry, "tests": a.tests, "runs": runs}
    a.json.write_text(json.dumps(result, indent=2) + "\n")

    if a.side == "source":
        md = ["# Compatibility: the source on other Kafka releases and on Tansu", "",
              f"Written by `infra/local/compat` on {result['date']} at commit {commit}; "
              f"the target runs Kafka {a.other_version}. Each cell: tests passed / run in that file. "
              "Messages of failures are in results.json. `not run`: that file's tests are about a "
              "Kafka source's SASL_SSL listener, which Tansu does not have.", ""]
    else:
        md = ["# Compatibility: the target on other Kafka releases", "",
              f"Written by `infra/local/compat target:...` on {result['date']} at commit {commit}; "
              f"the source runs Kafka {a.other_version}. Each cell: tests passed / run in that file. "
              f"Messages of failures are in {a.json.name}.", ""]
    md.append(f"| {a.side} | up (s) | tests (s) | " + " | ".join(Path(t).name for t in a.tests) + " |")
    md.append("|---" * (3 + len(a.tests)) + "|")
    for run in runs:
        if run["files"] is None:
            cells = [f"stack failed (up exit {run['up_exit']})"] * len(a.tests)
        else:
            cells = [cell(run["files"].get(t)) for t in a.tests]
        md.append(f"| {run[a.side + '_version']} | {run['up_seconds']} | {run['pytest_seconds']} | " + " | ".join(cells) + " |")
    failures = [(run[a.side + "_version"], t, f) for run in runs for t, row in (run["files"] or {}).items()
                for f in row["failures"]]
    if failures:
        md += ["", "## Failures", ""]
        md += [f"- {v} `{Path(t).name}::{f['test']}` ({f['kind']}): {f['message']}" for v, t, f in failures]
    a.md.write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
