package loader

import (
	"errors"
	"fmt"
	"os"
)

// Sentinel errors callers can test with errors.Is.
var (
	ErrNotRoot        = errors.New("root privileges needed (CAP_BPF and CAP_NET_ADMIN): run xdplb with sudo")
	ErrNotAttached    = errors.New("not attached")
	ErrForeignProgram = errors.New("another XDP program is attached")
	ErrIncompatible   = errors.New("pinned maps differ from the requested layout")
	ErrNoInterface    = errors.New("no such interface")
	ErrNoBPFFS        = errors.New("bpffs is not mounted")
	// ErrOtherNamespace: the pins belong to an interface in another network namespace (another
	// director on the same host).
	ErrOtherNamespace = errors.New("the pins belong to another network namespace")
)

// permissionHint wraps EPERM/EACCES with the fix.
func permissionHint(err error) error {
	if errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("%w (%v)", ErrNotRoot, err)
	}
	return err
}
