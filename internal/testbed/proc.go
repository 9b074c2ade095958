//go:build linux

package testbed

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Proc is a long-running program (xdplb run, keepalived with its VRRP child, ...) started in a
// network namespace with nsenter --net (which execs: the pid is the program's), in its own
// process group, so that a Ctrl-C on the terminal reaches the caller only and a SIGKILL to the
// group reaches every child at the same instant. Its stdout and stderr are appended to a log file.
type Proc struct {
	Name    string // for messages ("keepalived@a")
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
}

// StartProc starts prog with args in the network namespace bind-mounted at nsPath
// (/run/netns/NAME), appending its output to logPath after a line naming the command.
func StartProc(nsPath, name, logPath, prog string, args ...string) (*Proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(logf, "=== %s: %s %s\n", time.Now().Format(time.RFC3339Nano), prog, strings.Join(args, " "))
	cmd := exec.Command("nsenter", append([]string{"--net=" + nsPath, "--", prog}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s in %s: %w", prog, nsPath, err)
	}
	p := &Proc{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid is the program's pid, also the id of its process group.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the program has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// WaitErr is what waiting for the program returned; valid after Done.
func (p *Proc) WaitErr() error { return p.waitErr }

// Running reports whether the program is still running; false for a nil Proc.
func (p *Proc) Running() bool {
	if p == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL to the whole group at once (keepalived's VRRP child would resign on its
// parent's death otherwise), waits for the program and for the group to be gone.
func (p *Proc) Kill() {
	if p == nil {
		return
	}
	_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
	<-p.done
	WaitGroupGone(p.Pid(), 5*time.Second)
}

// Stop is a graceful stop: SIGTERM to the group (xdplb detaches with --detach-on-exit,
// keepalived resigns with a priority-0 advert), SIGKILL after timeout; then it waits for the
// group to be gone.
func (p *Proc) Stop(timeout time.Duration) { _ = p.Terminate(timeout) }

// Terminate is Stop that says how the program ended: its exit error (nil for status 0), or that
// it had to be killed. A program that had already exited gives nil.
func (p *Proc) Terminate(timeout time.Duration) error {
	if p == nil {
		return nil
	}
	pgid := p.Pid()
	var err error
	if p.Running() {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
			err = p.waitErr
		case <-time.After(timeout):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.done
			err = fmt.Errorf("%s did not exit within %v of SIGTERM (killed)", p.Name, timeout)
		}
	}
	WaitGroupGone(pgid, timeout)
	return err
}

// Log is what the program wrote so far.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// LogTail is the last n lines of the log, for error messages.
func (p *Proc) LogTail(n int) string {
	lines := strings.Split(strings.TrimRight(p.Log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// WaitGroupGone waits until no live process of the group pgid is left (a reparented child may
// stay a zombie for a while: zombies do not count); SIGKILL to the group after timeout. Then it
// gives init a moment to reap the killed children, so that nothing of the group is listed when
// the caller ends.
func WaitGroupGone(pgid int, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for GroupAlive(pgid) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if GroupAlive(pgid) {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
	for syscall.Kill(-pgid, 0) == nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}

// GroupAlive reports whether a process of the group pgid is alive (not a zombie).
func GroupAlive(pgid int) bool {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(b[i+1:]))
		if len(fields) >= 3 && fields[0] != "Z" && fields[2] == fmt.Sprint(pgid) {
			return true
		}
	}
	return false
}
