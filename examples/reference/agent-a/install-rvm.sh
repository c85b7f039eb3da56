#!/usr/bin/env bash
# RVM install runbook for agent-a, in the form the @metaharness/host-rvm
# adapter emits. Run on its own it boots agent-a alone, where the reference
# agent has no peer to play with; `make run` deploys both folders and boots
# them together with `rvm-loader up agent-a agent-b`.
set -euo pipefail

if ! command -v rvm-loader >/dev/null 2>&1; then
  echo "rvm-loader is not on PATH: build it with cargo build -p rvm-loader"
  exit 1
fi

rvm-loader partition register --manifest ./rvm-partition.toml
rvm-loader caps install --table ./capability-table.json
rvm-loader guest boot --partition "agent-a" --wasm-ref ./wasm-guest.json

echo "RVM partition 'agent-a' ran. Witness logs at ~/.rvm/witness/ (RVM_HOME overrides)."
