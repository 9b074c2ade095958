package bench

// Baseline programs measured beside xdplb in the same run (bpf/baseline.c).
//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror -I../bpf/include -I/usr/include/x86_64-linux-gnu" baseline ../bpf/baseline.c
