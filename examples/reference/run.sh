#!/bin/sh
# `make run`: deploy the two reference tenants in this folder and the
# researcher tenant (../researcher, whose agent calls tools) with rvm-loader
# into a fresh RVM_HOME, boot them together in one hypervisor under QEMU
# (console and witness records shown as they happen), then verify every
# witness log the run filed.
#
# usage: run.sh LOADER HOME      (RVM_IMAGE_DIR names the built images)
#   LOADER  the rvm-loader binary
#   HOME    a scratch RVM_HOME; it is deleted and made afresh (its last
#           component must be rvm-demo-home, as a guard)
set -eu

loader=${1:?usage: run.sh LOADER HOME}
home=${2:?usage: run.sh LOADER HOME}
images=${RVM_IMAGE_DIR:?set RVM_IMAGE_DIR to the folder of rvm.bin (make images)}
here=$(cd "$(dirname "$0")" && pwd)

case "$home" in
*/rvm-demo-home | rvm-demo-home) ;;
*)
	echo "run.sh: refusing to reset $home (its name must end in rvm-demo-home)" >&2
	exit 2
	;;
esac
rm -rf "$home"
mkdir -p "$home"
RVM_HOME=$(cd "$home" && pwd)
export RVM_HOME RVM_IMAGE_DIR

step() {
	printf '\n$ rvm-loader %s\n' "$*"
	"$loader" "$@"
}

ms() { date +%s%3N; }

echo "RVM_HOME=$RVM_HOME (fresh)  RVM_IMAGE_DIR=$images"
# The reference agent is the guest module of the examples' package.
step guest add @rvm/reference-agent@0.1.0 "$images/agents/reference.wasm"
step deploy "$here/agent-a" --no-boot
step deploy "$here/agent-b" --no-boot
# The researcher: an ordinary WASI program whose claims let it ask the demo
# MCP server (built beside the loader) and run `uname`.
step guest add @rvm/researcher@0.1.0 "$images/agents/researcher.wasm"
step deploy "$here/../researcher" --no-boot
step tool add researcher mcp demo --timeout 10 -- "$(dirname "$loader")/rvm-mcp-demo"
step tool set researcher --timeout 10
t0=$(ms)
step up agent-a agent-b researcher --link agent-a:agent-b --show-witness --timeout 60
t1=$(ms)
step witness verify
t2=$(ms)
step witness show hypervisor
printf '\nboot to verified: %s ms (boot and run %s ms, verify %s ms)\n' \
	$((t2 - t0)) $((t1 - t0)) $((t2 - t1))
echo "witness logs: $RVM_HOME/witness/ (try: RVM_HOME=$RVM_HOME $loader witness show agent-a)"
