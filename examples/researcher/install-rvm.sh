#!/usr/bin/env bash
# RVM install runbook for the researcher tenant, in the form the
# @metaharness/host-rvm adapter emits, with the two commands that serve its
# tools: its MCP server and its command policy. `make run` does the same by
# hand and boots it beside the reference pair. The MCP server, rvm-mcp-demo,
# is built beside rvm-loader (cargo build -p rvm-loader) and found on PATH.
set -euo pipefail

if ! command -v rvm-loader >/dev/null 2>&1; then
  echo "rvm-loader is not on PATH: build it with cargo build -p rvm-loader"
  exit 1
fi

rvm-loader partition register --manifest ./rvm-partition.toml
rvm-loader caps install --table ./capability-table.json
rvm-loader tool add researcher mcp demo --timeout 10 -- rvm-mcp-demo
rvm-loader tool set researcher --timeout 10
rvm-loader guest boot --partition "researcher" --wasm-ref ./wasm-guest.json

echo "RVM partition 'researcher' ran. Witness logs at ~/.rvm/witness/ (RVM_HOME overrides)."
