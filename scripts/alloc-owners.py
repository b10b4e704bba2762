#!/usr/bin/env python3
"""alloc-owners.py: whose allocations a Go heap profile holds.

    scripts/alloc-owners.py TEST_BINARY MEMPROFILE OPS [alloc_objects|alloc_space] [TOP]

Reads `go tool pprof -traces` of MEMPROFILE (written with -memprofilerate 1)
and gives each sample to the innermost frame outside the standard library:
this repository ("ours"), the benchmark itself, the MCP SDK (with the JSON
packages it calls), OpenTelemetry, or another module. Allocations the
standard library makes for our code (json.Marshal called by adcp, say) are
ours. Figures are per operation: the totals divided by OPS, the benchmark's
iterations (setup is included, and is negligible over a few thousand).
With TOP, also lists our functions with the most allocations.
Used for docs/BENCHMARKS.md, "MCP path allocations".
"""
import collections
import re
import subprocess
import sys

binary, profile, ops = sys.argv[1], sys.argv[2], int(sys.argv[3])
index = sys.argv[4] if len(sys.argv) > 4 else "alloc_objects"
top = int(sys.argv[5]) if len(sys.argv) > 5 else 0

UNITS = {"": 1, "B": 1, "kB": 1024, "MB": 1024**2, "GB": 1024**3}
MCP = ("github.com/modelcontextprotocol/", "github.com/segmentio/", "github.com/google/jsonschema-go", "github.com/yosida95/")


def owner(fn):
    if "/" not in fn or "." not in fn.split("/")[0]:
        return None  # the standard library
    if fn.startswith("github.com/adcp-go/idempotency/cmd/adcp-seller/seller_test."):
        return "the benchmark (request, recorder)"
    if fn.startswith("github.com/adcp-go/"):
        return "ours"
    if fn.startswith(MCP):
        return "MCP SDK (and its JSON)"
    if fn.startswith(("go.opentelemetry.io/", "github.com/prometheus/")):
        return "OpenTelemetry"
    return "other: " + "/".join(fn.split("/")[:3])


out = subprocess.run(["go", "tool", "pprof", "-traces", "-sample_index=" + index, binary, profile],
                     capture_output=True, text=True, check=True).stdout
owners, ours = collections.Counter(), collections.Counter()
for block in out.split("-----------+-------------------------------------------------------")[1:]:
    value, frames = None, []
    for line in block.strip("\n").split("\n"):
        m = re.match(r"^\s+([\d.]+)([a-zA-Z]*)\s+(\S.*)$", line)
        if value is None and m:
            value = float(m.group(1)) * UNITS.get(m.group(2), 1)
            frames.append(m.group(3))
        elif value is not None and line.strip():
            frames.append(line.strip())
    if value is None:
        continue
    who, where = "standard library only", None
    for f in frames:
        f = re.sub(r"\s*\(inline\)$", "", f)
        if owner(f):
            who, where = owner(f), f
            break
    owners[who] += value
    if who == "ours":
        ours[where] += value

total = sum(owners.values())
for who, v in owners.most_common():
    print(f"{v / ops:12.1f} {100 * v / total:5.1f}%  {who}")
print(f"{total / ops:12.1f}         total per operation ({index})")
for fn, v in ours.most_common(top):
    print(f"{v / ops:12.1f}  {fn}")
