package health

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Environment variables that carry the real server and the service to an exec check, so that
// config values never go through a shell or into argv.
const (
	EnvRSAddr = "XDPLB_RS_ADDR"
	EnvRSPort = "XDPLB_RS_PORT"
	EnvVIP    = "XDPLB_VIP"
	EnvVPort  = "XDPLB_VPORT"
)

// maxStderr is how much of an exec check's standard error is kept for the error text.
const maxStderr = 4 << 10

// execWaitDelay bounds how long Probe waits for the output pipe after the process is killed (a
// grandchild that left the process group could hold it open).
const execWaitDelay = 200 * time.Millisecond

// NewExec returns a prober that runs argv directly (never through a shell), with env added to
// the daemon's environment, as keepalived's MISC_CHECK: exit status 0 is healthy. With dynamic,
// exit status 2..255 is healthy too with weight status-2 (misc_dynamic); 1 is unhealthy. The
// process runs in its own process group, which is killed when ctx ends. Standard output is
// discarded; the first 4 KiB of standard error go into the error text.
func NewExec(argv []string, env []string, dynamic bool) Prober {
	return &execProber{
		argv:    append([]string(nil), argv...),
		env:     append([]string(nil), env...),
		dynamic: dynamic,
	}
}

type execProber struct {
	argv    []string
	env     []string
	dynamic bool
}

func (p *execProber) Probe(ctx context.Context) Result {
	start := time.Now()
	if len(p.argv) == 0 {
		return Result{Err: errors.New("exec check: no command")}
	}
	cmd := exec.CommandContext(ctx, p.argv[0], p.argv[1:]...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// The leader is not reaped yet, so its pid is still the group's id.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = execWaitDelay
	var stderr limitedBuffer
	stderr.max = maxStderr
	cmd.Stderr = &stderr
	err := cmd.Run()
	lat := time.Since(start)
	name := p.argv[0]
	if ctx.Err() != nil && (err != nil || cmd.ProcessState == nil || !cmd.ProcessState.Success()) {
		return Result{Err: fmt.Errorf("exec check %s: killed after %v: %w%s", name, lat.Round(time.Millisecond),
			context.Cause(ctx), stderr.suffix()), Latency: lat}
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return Result{Healthy: true, Latency: lat}
	case errors.As(err, &ee) && ee.Exited():
		code := ee.ExitCode()
		if p.dynamic && code >= 2 && code <= 255 {
			w := uint32(code - 2)
			return Result{Healthy: true, Weight: &w, Latency: lat}
		}
		return Result{Err: fmt.Errorf("exec check %s: exit status %d%s", name, code, stderr.suffix()), Latency: lat}
	default:
		return Result{Err: fmt.Errorf("exec check %s: %w%s", name, err, stderr.suffix()), Latency: lat}
	}
}

func (*execProber) Close() error { return nil }

// limitedBuffer keeps the first max bytes written to it and discards the rest.
type limitedBuffer struct {
	mu        sync.Mutex
	buf       []byte
	max       int
	truncated bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	room := b.max - len(b.buf)
	if len(p) > room {
		b.truncated = true
		b.buf = append(b.buf, p[:max(room, 0)]...)
	} else {
		b.buf = append(b.buf, p...)
	}
	return len(p), nil
}

// suffix is ": <stderr>" for an error text, or "" when stderr was empty.
func (b *limitedBuffer) suffix() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := strings.TrimSpace(strings.ToValidUTF8(string(b.buf), "?"))
	if s == "" {
		return ""
	}
	if b.truncated {
		s += " [truncated]"
	}
	return ": " + s
}
