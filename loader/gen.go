package loader

// The generated files (xdplb_bpfel.go/.o, xdplb_bpfeb.go/.o) are committed so `go build` needs
// no clang; `make generate` rebuilds them and CI fails if they are stale.
//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror -I../bpf/include -I/usr/include/x86_64-linux-gnu -fdebug-prefix-map=${PWD}/..=." -type svc_key -type service -type backend -type flow_key -type flow -type persist_key -type persist_entry -type peer_key -type peer -type vip -type counters -type traffic -type layout xdplb ../bpf/xdplb.c
