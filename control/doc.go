// Package control turns what an operator or the daemon wants (services, real servers, peer
// directors) into the contents of the data path's BPF maps, and reads them back.
//
// Maps is the map editor: every change is applied in an order the data path can race with
// safely, and Maglev rings are written double-buffered (a new ring map in the idle slot, then
// the service's active slot flipped). ResolveMAC finds a real server's MAC in the kernel's
// neighbour table. Lock serializes writers across processes.
package control
