package control

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestLock(t *testing.T) {
	dir := t.TempDir()
	unlock, err := Lock(context.Background(), dir)
	must(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := Lock(ctx, dir); err == nil || !strings.Contains(err.Error(), "locked by another xdplb") {
		t.Fatalf("second lock: %v, want it refused", err)
	}

	// Released while the second one waits: it gets the lock.
	time.AfterFunc(50*time.Millisecond, func() { unlock() })
	ctx, cancel = context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	unlock2, err := Lock(ctx, dir)
	must(t, err)
	must(t, unlock2())

	if _, err := Lock(context.Background(), dir+"/missing"); err == nil {
		t.Fatal("lock of a missing directory succeeded")
	}
}
