"""Turn the reliability suite's figures (``results/reliability.json``, written by ``make reliability``) into
``results/reliability.md``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from common import ROOT, machine


def _rows(section: dict[str, Any]) -> list[str]:
    return [f"| {name} | {json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value} |"
            for name, value in sorted(section.items())]


def report(figures: dict[str, Any]) -> str:
    m = machine()
    lines = ["# Reliability and security suite", "",
             f"`make reliability` on {m['cpu']}, {m['cores']} cores. Every figure below is produced by a test in "
             "`tests/reliability/` that fails when its promise is broken.", ""]
    crash = figures.get("crash", {})
    if crash:
        lines += ["## Crash safety (kill -9 at random moments)", "", "| process | figures |", "| --- | --- |",
                  *_rows(crash), "",
                  "After every trial: `PRAGMA integrity_check` = ok, no document without all its vectors (the active "
                  "set of a re-embedding stays complete), and the final re-run reaches exactly the counts of one "
                  "clean run. Server: every document acknowledged with a 200 was there after the kill.", ""]
    for key, title, head in (("faults", "Injected faults", "| fault | outcome |"),
                             ("hostile_http", "Hostile input: HTTP", "| input | status |"),
                             ("hostile_cli", "Hostile input: CLI", "| input | outcome |"),
                             ("hostile_library", "Hostile input: library", "| input | typed error |"),
                             ("security", "Security defaults", "| check | outcome |")):
        if figures.get(key):
            lines += [f"## {title}", "", head, "| --- | --- |", *_rows(figures[key]), ""]
    fuzz = figures.get("fuzz", {}).get("schemathesis")
    if fuzz:
        lines += ["## API fuzzing (schemathesis, the server's OpenAPI schema)", "",
                  f"{fuzz['requests']} generated requests over {fuzz['operations']} operations in {fuzz['seconds']} s: "
                  f"{fuzz['5xx']} server errors, {fuzz['nonconforming']} responses not conforming to the schema "
                  "(status codes, content types, bodies, headers; schema-invalid requests must get a 4xx).", ""]
    hostile = figures.get("fuzz", {}).get("hostile")
    if hostile:
        lines += ["## Hostile fuzzing (every operation, schemathesis cases mutated)", "",
                  f"{hostile['requests']} requests over {hostile['operations']} operations in {hostile['seconds']} s "
                  f"({hostile['examples_per_operation']} cases per operation, `M3SEARCH_FUZZ_EXAMPLES`): strings "
                  "replaced by any code point, lone surrogates and NUL, values by JSON nested up to 600 levels, "
                  "1,200-key objects and non-finite numbers, unknown keys added, path ids a URL must escape. "
                  f"Statuses: {hostile.get('2xx', 0)} 2xx, {hostile.get('4xx', 0)} 4xx, {hostile.get('5xx', 0)} 5xx; "
                  f"connections the server dropped: {hostile['connections_dropped']}; stored documents listed and "
                  f"read back afterwards: {hostile['documents_read_back']}.", ""]
    burst = figures.get("hostile_burst", {}).get("rss")
    if burst:
        lines += ["## Hostile burst against a real `m3search serve` (hash model)", "",
                  f"{burst['requests']} requests from 4 clients, {burst['huge_15mb_embeddings']} of them 15 MB "
                  f"`/v1/embeddings` inputs, the rest hostile bodies (statuses {burst['statuses']}): RSS "
                  f"{burst['baseline_mb']} MB before, {burst['peak_mb']} MB at the peak, {burst['after_mb']} MB "
                  f"after (bound: baseline + 10 %).", ""]
    slow = figures.get("slow_clients", {}).get("read timeouts")
    if slow:
        lines += ["## Slow clients (read timeouts)", "",
                  f"{slow['slow_header_connections']} connections sending headers that never end and "
                  f"{slow['slow_body_connections']} sending a body that never arrives, against a server with "
                  f"`M3SEARCH_HEADER_TIMEOUT={slow['header_timeout_s']:g}` and "
                  f"`M3SEARCH_BODY_TIMEOUT={slow['body_timeout_s']:g}`: {slow['answered_408']} answered 408, "
                  f"{slow['closed']} closed by the server, all within {slow['all_closed_after_s']} s; other clients "
                  "were served meanwhile.", ""]
    load = figures.get("load", {})
    if load:
        lines += ["## Load and soak (a real `m3search serve`, hash model, 127.0.0.1)", "",
                  "| run | requests | statuses | p50 ms | p99 ms | peak RSS MB | RSS trend MB/min |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for name, row in sorted(load.items()):
            lines.append(f"| {name}, {row['seconds']:.0f} s | {row['requests']} | {json.dumps(row['statuses'])} | "
                         f"{row['p50_ms']} | {row['p99_ms']} | {row['peak_rss_mb']} | "
                         f"{row.get('rss_trend_mb_per_min', '-')} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "results" / "reliability.json"
    text = report(json.loads(source.read_text()))
    (source.parent / "reliability.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
