#!/usr/bin/env bash
# Captures what ipvsadm and the kernel exchange, for captured.rs. Run from the repository root:
#   VM_EXTRA_BINS=strace ../shared/vm/run --modules ip_vs,ip_vs_wrr,ip_vs_wlc -- \
#     bash dataplane/src/ipvs/tests/capture.sh > /tmp/ipvs-capture.txt
# Each `sendmsg`/`recvmsg` is followed by strace's hex dump of its bytes (`-e write=all -e
# read=all`); the IPVS family id (0x20 here) and the sequence numbers are the run's own.
set -u
t() {
	echo "=== $*"
	strace -qq -e trace=sendmsg,recvmsg -e write=all -e read=all "$@" 2>&1 >/dev/null
}
t ipvsadm -A -t 10.96.0.10:80 -s rr
t ipvsadm -A -u 10.96.0.10:53 -s wrr -p 10800
t ipvsadm -A -t [fd00::10]:443 -s rr
t ipvsadm -a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1
t ipvsadm -a -t [fd00::10]:443 -r [fd00:1::5]:8443 -m -w 1
t ipvsadm -e -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 0
t ipvsadm -E -t 10.96.0.10:80 -s wlc
t ipvsadm -Ln
t ipvsadm --set 900 120 300
t ipvsadm -L --timeout
t ipvsadm -L --daemon
t ipvsadm -d -t 10.96.0.10:80 -r 10.244.1.5:8080
t ipvsadm -D -t 10.96.0.10:80
