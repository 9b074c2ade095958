package daemon

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/xdplb/xdplb/control"
	"github.com/xdplb/xdplb/control/health"
	"github.com/xdplb/xdplb/control/reconcile"
)

// metricsContentType is the Prometheus text exposition format.
const metricsContentType = "text/plain; version=0.0.4; charset=utf-8"

func (d *Daemon) metricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", metricsContentType)
		bw := bufio.NewWriter(w)
		d.writeMetrics(bw)
		bw.Flush()
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, "xdplb: metrics are at /metrics\n")
	})
	return mux
}

// family is one metric with its samples.
type family struct {
	name, typ, help string
	samples         []sample
}

type sample struct {
	labels []string // name, value, name, value...
	value  string
}

func (f *family) add(v string, labels ...string) {
	f.samples = append(f.samples, sample{labels, v})
}

func u64(v uint64) string { return strconv.FormatUint(v, 10) }

func boolValue(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// writeMetrics writes every metric in the text exposition format 0.0.4.
func (d *Daemon) writeMetrics(w io.Writer) {
	cfg := d.cfgNow()
	names := map[control.ServiceKey]string{}
	for _, s := range cfg.Services {
		names[s.Key] = reconcile.ServiceName(s)
	}
	name := func(k control.ServiceKey) string {
		if n, ok := names[k]; ok {
			return n
		}
		return k.String()
	}

	var (
		pkts     = family{name: "xdplb_packets_total", typ: "counter", help: "Packets by verdict counter of the XDP program (every counter of bpf/structs.h)."}
		svcPkts  = family{name: "xdplb_service_packets_total", typ: "counter", help: "Packets balanced for a service."}
		svcBytes = family{name: "xdplb_service_bytes_total", typ: "counter", help: "Bytes balanced for a service."}
		svcFlows = family{name: "xdplb_service_new_flows_total", typ: "counter", help: "New flows scheduled for a service."}
		bePkts   = family{name: "xdplb_backend_packets_total", typ: "counter", help: "Packets forwarded to a real server."}
		beBytes  = family{name: "xdplb_backend_bytes_total", typ: "counter", help: "Bytes forwarded to a real server."}
		beFlows  = family{name: "xdplb_backend_new_flows_total", typ: "counter", help: "New flows scheduled to a real server."}
		up       = family{name: "xdplb_backend_up", typ: "gauge", help: "1 when the real server's health check says up."}
		ring     = family{name: "xdplb_backend_in_ring", typ: "gauge", help: "1 when the real server takes new flows (in the Maglev ring) on the interface."}
		latency  = family{name: "xdplb_check_latency_seconds", typ: "gauge", help: "Duration of the last health check."}
		checks   = family{name: "xdplb_checks_total", typ: "counter", help: "Health checks run."}
		failures = family{name: "xdplb_check_failures_total", typ: "counter", help: "Health checks failed."}
		quorum   = family{name: "xdplb_service_quorum_up", typ: "gauge", help: "1 when the service's healthy weight meets its quorum (else the sorry server serves)."}
		writable = family{name: "xdplb_writable_servers", typ: "gauge", help: "Real servers whose check says writable, per single-writer service (mysql check with writable: true); above 1 is an alarm: only one takes writes."}
		reloads  = family{name: "xdplb_config_reloads_total", typ: "counter", help: "Configuration reloads by result (ok, error)."}
		scrapeOK = family{name: "xdplb_maps_read_errors", typ: "gauge", help: "Interfaces whose maps could not be read for this scrape."}
		vState   = family{name: "xdplb_vrrp_state", typ: "gauge", help: "1 for the VRRP instance's current state (init, backup, master, fault), 0 for the others."}
		vTrans   = family{name: "xdplb_vrrp_transitions_total", typ: "counter", help: "VRRP state changes of the instance."}
		vSplit   = family{name: "xdplb_vrrp_split_brain_total", typ: "counter", help: "Adverts from another Master with a lower priority while Master (re-asserted)."}
		vReject  = family{name: "xdplb_vrrp_rejected_total", typ: "counter", help: "VRRP packets rejected, by reason."}
		vPeers   = family{name: "xdplb_vrrp_peers", typ: "gauge", help: "Other routers currently heard on the instance's VRID."}
	)

	readErrs := 0
	for i, m := range d.maps {
		iface := cfg.Interfaces[i]
		st, err := m.Snapshot()
		if err != nil {
			readErrs++
			d.log.Debug("metrics: read maps", "iface", iface, "error", err)
			continue
		}
		for _, c := range st.Counters.List() {
			pkts.add(u64(c.Value), "iface", iface, "verdict", c.Name)
		}
		for _, s := range st.Services {
			n := name(s.Key)
			svcPkts.add(u64(s.Traffic.Packets), "iface", iface, "service", n)
			svcBytes.add(u64(s.Traffic.Bytes), "iface", iface, "service", n)
			svcFlows.add(u64(s.Traffic.NewFlows), "iface", iface, "service", n)
			for _, b := range s.Backends {
				a := b.Addr.String()
				bePkts.add(u64(b.Traffic.Packets), "iface", iface, "service", n, "backend", a)
				beBytes.add(u64(b.Traffic.Bytes), "iface", iface, "service", n, "backend", a)
				beFlows.add(u64(b.Traffic.NewFlows), "iface", iface, "service", n, "backend", a)
				ring.add(boolValue(inRing(b)), "iface", iface, "service", n, "backend", a)
			}
		}
	}
	scrapeOK.add(strconv.Itoa(readErrs))

	status := map[health.Target]health.Status{}
	for _, s := range d.mon.Status() {
		status[s.Target] = s
	}
	d.mu.Lock()
	q := d.quorum
	writers := d.writers
	okReloads, badReloads := d.reloads["ok"], d.reloads["error"]
	d.mu.Unlock()
	for _, svc := range cfg.Services {
		n := reconcile.ServiceName(svc)
		quorum.add(boolValue(q[n]), "service", n)
		if w, ok := writers[n]; ok {
			writable.add(strconv.Itoa(len(w.writable)), "service", n)
		}
		for _, rs := range svc.RealServers {
			st, ok := status[reconcile.TargetFor(svc, rs)]
			if !ok {
				continue
			}
			a := rs.Addr.String()
			up.add(boolValue(st.Up), "service", n, "backend", a)
			latency.add(strconv.FormatFloat(st.LastLatency.Seconds(), 'g', -1, 64), "service", n, "backend", a)
			checks.add(u64(st.Checks), "service", n, "backend", a)
			failures.add(u64(st.Failures), "service", n, "backend", a)
		}
	}
	for _, r := range d.runnersNow() {
		st := r.in.Status()
		n := r.cfg.Name
		for _, s := range vrrpStates {
			vState.add(boolValue(st.State == s), "instance", n, "state", s.String())
		}
		vTrans.add(u64(st.Transitions), "instance", n)
		vSplit.add(u64(st.SplitBrains), "instance", n)
		for reason, c := range st.Rejected {
			vReject.add(u64(c), "instance", n, "reason", reason)
		}
		vPeers.add(strconv.Itoa(len(st.Peers)), "instance", n)
	}
	reloads.add(u64(okReloads), "result", "ok")
	reloads.add(u64(badReloads), "result", "error")

	for _, f := range []*family{&pkts, &svcPkts, &svcBytes, &svcFlows, &bePkts, &beBytes, &beFlows,
		&up, &ring, &latency, &checks, &failures, &quorum, &writable, &reloads, &scrapeOK,
		&vState, &vTrans, &vSplit, &vReject, &vPeers} {
		f.write(w)
	}
}

func (f *family) write(w io.Writer) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", f.name, escapeHelp(f.help), f.name, f.typ)
	sort.SliceStable(f.samples, func(i, j int) bool {
		return strings.Join(f.samples[i].labels, "\x00") < strings.Join(f.samples[j].labels, "\x00")
	})
	for _, s := range f.samples {
		var b strings.Builder
		b.WriteString(f.name)
		if len(s.labels) > 0 {
			b.WriteByte('{')
			for i := 0; i+1 < len(s.labels); i += 2 {
				if i > 0 {
					b.WriteByte(',')
				}
				b.WriteString(s.labels[i])
				b.WriteString(`="`)
				b.WriteString(escapeLabel(s.labels[i+1]))
				b.WriteByte('"')
			}
			b.WriteByte('}')
		}
		b.WriteByte(' ')
		b.WriteString(s.value)
		b.WriteByte('\n')
		io.WriteString(w, b.String())
	}
}

var (
	labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
)

// escapeLabel escapes a label value: backslash, double quote and line feed.
func escapeLabel(s string) string { return labelEscaper.Replace(s) }

// escapeHelp escapes HELP text: backslash and line feed.
func escapeHelp(s string) string { return helpEscaper.Replace(s) }
