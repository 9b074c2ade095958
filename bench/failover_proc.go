package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
)

// foProc is a VRRP router's process (xdplb run, or keepalived with its VRRP child) running in
// a node's network namespace (nsenter --net, which execs: the pid is the program's), in its own
// process group so that a Ctrl-C on the terminal reaches the benchmark only, and a SIGKILL to
// the group kills keepalived's children at the same instant.
type foProc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error
}

func startProc(ns *foNS, name, logPath string, prog string, args ...string) (*foProc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(logf, "=== %s: %s %s\n", time.Now().Format(time.RFC3339Nano), prog, strings.Join(args, " "))
	cmd := exec.Command("nsenter", append([]string{"--net=" + ns.path, "--", prog}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s in %s: %w", prog, ns.name, err)
	}
	p := &foProc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *foProc) running() bool {
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

// kill9 sends SIGKILL to the whole group at once and waits for the group to be gone.
func (p *foProc) kill9() {
	if p == nil {
		return
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-p.done
	waitGroupGone(pgid, 5*time.Second)
}

// stop sends SIGTERM to the group (a graceful stop: xdplb detaches with --detach-on-exit,
// keepalived removes its VIPs) and SIGKILL after timeout.
func (p *foProc) stop(timeout time.Duration) {
	if p == nil {
		return
	}
	pgid := p.cmd.Process.Pid
	if p.running() {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(timeout):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.done
		}
	}
	waitGroupGone(pgid, timeout)
}

// logTail is the end of the process's log, for error messages.
func (p *foProc) logTail(n int) string {
	b, _ := os.ReadFile(p.logPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitGroupGone waits until no live (non-zombie) process of group pgid is left; SIGKILL after
// timeout.
func waitGroupGone(pgid int, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for groupAlive(pgid) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if groupAlive(pgid) {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
}

func groupAlive(pgid int) bool {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
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

// foServer is the director's own TCP listener on 0.0.0.0:port in its namespace: it answers its
// name to every connection and closes it. It answers for the VIP whenever the VIP is on eth0.
type foServer struct {
	ln net.Listener
	wg sync.WaitGroup
}

func startServer(ns *foNS, port int, name string) (*foServer, error) {
	s := &foServer{}
	err := ns.do(func() error {
		var err error
		s.ln, err = net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", port))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listener in %s: %w", ns.name, err)
	}
	s.wg.Go(func() {
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = io.WriteString(c, name)
			_ = c.Close()
		}
	})
	return s, nil
}

func (s *foServer) close() {
	_ = s.ln.Close()
	s.wg.Wait()
}

// foProber runs TCP connect + read probes from the client's namespace on a pool of workers,
// each locked to an OS thread that is in the namespace (net.Dial creates its socket on the
// calling thread, so the socket is the client's).
type foProber struct {
	jobs    chan foJob
	wg      sync.WaitGroup
	addr    string
	timeout time.Duration
}

type foJob struct {
	sent time.Time
	out  chan<- foAnswer
}

type foAnswer struct {
	sent, at time.Time
	who      string // the director's name, "" on error
	err      error
}

func newProber(client *foNS, addr string, workers int, timeout time.Duration) (*foProber, error) {
	p := &foProber{jobs: make(chan foJob), addr: addr, timeout: timeout}
	ready := make(chan error, workers)
	for range workers {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			runtime.LockOSThread() // never unlocked: the thread leaves the host namespace
			if err := netns.Set(client.handle); err != nil {
				ready <- err
				return
			}
			ready <- nil
			for j := range p.jobs {
				j.out <- p.probe(j.sent)
			}
		}()
	}
	var errs []error
	for range workers {
		if err := <-ready; err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		p.close()
		return nil, fmt.Errorf("client probe workers: %w", err)
	}
	return p, nil
}

func (p *foProber) probe(sent time.Time) foAnswer {
	a := foAnswer{sent: sent}
	deadline := sent.Add(p.timeout)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp4", p.addr)
	if err != nil {
		a.err, a.at = err, time.Now()
		return a
	}
	defer c.Close()
	_ = c.SetReadDeadline(deadline)
	buf := make([]byte, 16)
	n, err := io.ReadAtLeast(c, buf, 1)
	a.at = time.Now()
	if n > 0 {
		a.who = string(buf[:n])
		return a
	}
	a.err = err
	return a
}

// once runs one probe synchronously.
func (p *foProber) once() foAnswer {
	out := make(chan foAnswer, 1)
	p.jobs <- foJob{sent: time.Now(), out: out}
	return <-out
}

func (p *foProber) close() {
	close(p.jobs)
	p.wg.Wait()
}
