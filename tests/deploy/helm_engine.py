"""Run by the helm venv's Python (>= 3.12), never imported by the tests: one JSON request
on stdin, one JSON answer on stdout.

Request: {"parse_yaml": FILE} -> {"parsed": the file's YAML document as JSON} (Helm's YAML
parser, for the compose example); or
Request: {"chart": DIR, "values_file": FILE or null, "values": {...} or null,
          "release": NAME, "namespace": NS, "broken_copy": bool}
Answer:  {"sdkpy_lint": helm-sdkpy's lint of the chart with those values,
          "lint": helm-python-sdk's strict lint with those values,
          "render_error": null or the message a template's `fail` gave,
          "manifests": {template path: [parsed documents]}, "notes": NOTES.txt as rendered}

Values are composed as `helm -f FILE --set …` would: the file's values, then the overrides,
over the chart's values.yaml (Helm's own coalescing, Chart.merge_values). helm-sdkpy lints a
chart directory with its own values.yaml only, so it lints a copy of the chart whose
values.yaml holds the composed values (what `helm lint -f FILE` lints).
"""

import asyncio
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

import helm_python
import helm_sdkpy


def deep_merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_documents(text: str) -> list:
    documents = []
    for chunk in re.split(r"(?m)^---\s*$", text):
        if not chunk.strip():
            continue
        parsed = helm_python.values_from_yaml(chunk)
        if parsed:
            documents.append(parsed)
    return documents


def main() -> None:
    request = json.load(sys.stdin)
    if request.get("parse_yaml"):
        parsed = helm_python.values_from_yaml(Path(request["parse_yaml"]).read_text())
        json.dump({"parsed": parsed}, sys.stdout)
        return
    chart_dir = Path(request["chart"])
    values: dict = {}
    if request.get("values_file"):
        values = helm_python.values_from_yaml(Path(request["values_file"]).read_text())
    if request.get("values"):
        values = deep_merge(values, request["values"])
    chart = helm_python.Chart.load(chart_dir)
    answer: dict = {}

    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / chart_dir.name
        shutil.copytree(chart_dir, copy)
        (copy / "values.yaml").write_text(json.dumps(chart.merge_values(values), indent=1))
        if request.get("broken_copy"):
            # A template that is not YAML: proves the lint can fail.
            (copy / "templates" / "broken.yaml").write_text("kind: [unclosed\n  : :\n")
        config = helm_sdkpy.Configuration()
        answer["sdkpy_lint"] = asyncio.run(helm_sdkpy.Lint(config).run(str(copy)))
        answer["lint"] = helm_python.lint(str(copy), values, strict=True)

    answer["render_error"] = None
    answer["manifests"] = {}
    answer["notes"] = ""
    try:
        rendered = chart.render(
            values=values,
            name=request.get("release", "rel"),
            namespace=request.get("namespace", "ns"),
            is_install=True,
        )
    except helm_python.HelmError as error:
        answer["render_error"] = str(error)
    else:
        for path, text in sorted(rendered.items()):
            if path.endswith("NOTES.txt"):
                answer["notes"] = text
            else:
                answer["manifests"][path] = parse_documents(text)
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
