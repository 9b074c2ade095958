//go:build linux

// Package baseline is the bpf2go output of bpf/baseline.c: the least an XDP program can do
// (XDP_PASS, swap MACs + XDP_TX, XDP_DROP). The benchmarks time xdplb beside them, and the test
// bed attaches the XDP_PASS one to a veth peer so that native XDP_TX frames are received.
package baseline

//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror -I../../../bpf/include -I/usr/include/x86_64-linux-gnu" baseline ../../../bpf/baseline.c
