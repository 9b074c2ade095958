package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"time"

	vnetns "github.com/vishvananda/netns"

	"github.com/xdplb/xdplb/internal/testbed/netns"
)

// foServer is the director's own TCP listener on 0.0.0.0:port in its namespace: it answers its
// name to every connection and closes it. It answers for the VIP whenever the VIP is on eth0.
type foServer struct {
	ln net.Listener
	wg sync.WaitGroup
}

func startServer(ns *netns.NS, port int, name string) (*foServer, error) {
	s := &foServer{}
	err := ns.Do(func() error {
		var err error
		s.ln, err = net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", port))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listener in %s: %w", ns.Name, err)
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

func newProber(client *netns.NS, addr string, workers int, timeout time.Duration) (*foProber, error) {
	p := &foProber{jobs: make(chan foJob), addr: addr, timeout: timeout}
	ready := make(chan error, workers)
	for range workers {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			runtime.LockOSThread() // never unlocked: the thread leaves the host namespace
			if err := vnetns.Set(client.Handle()); err != nil {
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
