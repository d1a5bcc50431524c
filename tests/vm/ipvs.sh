#!/usr/bin/env bash
# The ipvs mode's kernel tests, run inside the VM (../shared/vm/run) because the host kernel has
# no IPVS: the test binaries given after --tests (each run single-threaded), then the command
# after `--` (the conformance runner in ipvs mode). Exit status: 1 if anything failed.
# usage: tests/vm/ipvs.sh --tests BIN... [-- COMMAND...]
set -uo pipefail
[ "${1:-}" = --tests ] && shift
tests=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do
	tests+=("$1")
	shift
done
[ "${1:-}" = -- ] && shift
status=0
for t in "${tests[@]}"; do
	echo "== $(basename "$t")"
	"$t" --test-threads=1 || status=1
done
if [ $# -gt 0 ]; then
	"$@" || status=1
fi
exit $status
