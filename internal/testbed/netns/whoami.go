//go:build linux

package netns

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// WhoAmI is a TCP server in a namespace that answers every connection with its name and a
// newline, then closes it.
type WhoAmI struct {
	Name   string
	Addr   string // listening address, host:port
	ln     net.Listener
	served atomic.Int64
	wg     sync.WaitGroup
}

// ServeWhoAmI listens on addr (host:port, e.g. the VIP on a real server's lo) in ns and answers
// with name, until tb.Cleanup.
func (ns *NS) ServeWhoAmI(tb TB, addr, name string) *WhoAmI {
	tb.Helper()
	w := &WhoAmI{Name: name, Addr: addr}
	err := ns.Do(func() error {
		var err error
		w.ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		tb.Fatalf("who-am-I server %q in %s: listen on %s: %v", name, ns.Name, addr, err)
	}
	w.wg.Add(1)
	go w.serve()
	tb.Cleanup(w.Close)
	return w
}

func (w *WhoAmI) serve() {
	defer w.wg.Done()
	for {
		c, err := w.ln.Accept()
		if err != nil {
			return // closed
		}
		w.served.Add(1)
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = io.WriteString(c, w.Name+"\n")
		}()
	}
}

// Served is the number of connections accepted so far.
func (w *WhoAmI) Served() int64 { return w.served.Load() }

// Close stops the server and waits for its connections to finish. Safe to call twice.
func (w *WhoAmI) Close() {
	_ = w.ln.Close()
	w.wg.Wait()
}

// Answer is what one who-am-I connection returned.
type Answer struct {
	Name  string
	Local net.TCPAddr // client side of the connection
}

// AskWhoAmI opens a TCP connection from ns to addr and returns the name the server sent.
func (ns *NS) AskWhoAmI(ctx context.Context, addr string) (Answer, error) {
	var a Answer
	var conn net.Conn
	err := ns.Do(func() error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	if err != nil {
		return a, fmt.Errorf("from %s: dial %s: %w", ns.Name, addr, err)
	}
	defer conn.Close()
	a.Local = *conn.LocalAddr().(*net.TCPAddr)
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	b, err := io.ReadAll(io.LimitReader(conn, 256))
	if err != nil && !errors.Is(err, io.EOF) {
		return a, fmt.Errorf("from %s (port %d): read from %s: %w (got %q)", ns.Name, a.Local.Port, addr, err, b)
	}
	a.Name = strings.TrimSpace(string(b))
	return a, nil
}
