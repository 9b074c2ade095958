//go:build linux

package baseline

import (
	"fmt"
	"net"

	"github.com/cilium/ebpf/link"
)

// Objects are the loaded programs: PassAll, SwapMacTx, DropAll.
type Objects = baselineObjects

// Load loads the programs into the kernel; Close releases them.
func Load() (*Objects, error) {
	var o Objects
	if err := loadBaselineObjects(&o, nil); err != nil {
		return nil, fmt.Errorf("load baseline programs: %w", err)
	}
	return &o, nil
}

// AttachPass attaches an XDP_PASS program to the interface dev of the current network namespace
// in native (driver) mode. Native XDP_TX out of a veth needs an XDP program on its peer, or the
// frames vanish (TESTBED.md). Close releases the link and the program.
func AttachPass(dev string) (*Attached, error) {
	o, err := Load()
	if err != nil {
		return nil, err
	}
	ifc, err := net.InterfaceByName(dev)
	if err != nil {
		o.Close()
		return nil, err
	}
	l, err := link.AttachXDP(link.XDPOptions{Program: o.PassAll, Interface: ifc.Index, Flags: link.XDPDriverMode})
	if err != nil {
		o.Close()
		return nil, fmt.Errorf("attach XDP_PASS to %s (native mode): %w", dev, err)
	}
	return &Attached{Link: l, objs: o}, nil
}

// Attached is an XDP_PASS program attached by [AttachPass].
type Attached struct {
	link.Link
	objs *Objects
}

// Close detaches the program and releases it.
func (a *Attached) Close() error {
	err := a.Link.Close()
	if cerr := a.objs.Close(); err == nil {
		err = cerr
	}
	return err
}
