package daemon

import (
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/xdplb/xdplb/control/config"
)

// TestSeedsExample checks that examples/seeds.yaml parses and says what its comments say.
func TestSeedsExample(t *testing.T) {
	const path = "../../examples/seeds.yaml"
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, warns, err := config.Parse(data, path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(warns) > 0 {
		t.Errorf("warnings: %v", warns)
	}
	if len(cfg.Services) != 2 || len(cfg.Peers) != 0 || cfg.HashSeed != 1234 {
		t.Fatalf("expected 2 services, no static peer (learned from VRRP), seed 1234; seen %+v", cfg)
	}
	w, r := cfg.Services[0], cfg.Services[1]
	if w.Name != "writer" || w.Key.VIP.String() != "10.0.0.100" || w.Key.Port != 3306 || len(w.RealServers) != 3 ||
		w.Check.Type != config.CheckMySQL || !w.Check.MySQL.Writable || w.Check.MySQL.PasswordEnv != "XDPLB_MYSQL_PASSWORD" {
		t.Errorf("writer: %+v", w)
	}
	if r.Name != "reader" || r.Key.Port != 3307 || r.Check.MySQL.MaxReplicationLag != 10*time.Second ||
		len(r.RealServers) != 2 || !r.RealServers[0].Local || r.RealServers[0].Addr.String() != "10.0.0.12" {
		t.Errorf("reader: %+v", r)
	}
	// The README's figures are measured with these (internal/testbed/cluster runs this file's timings).
	for _, svc := range cfg.Services {
		if c := svc.Check; c.Interval != 300*time.Millisecond || c.Timeout != 250*time.Millisecond || c.Rise != 2 || c.Fall != 2 {
			t.Errorf("%s: check timings %v / %v / %d / %d, the acceptance tests' are 300ms / 250ms / 2 / 2", svc.Name, c.Interval, c.Timeout, c.Rise, c.Fall)
		}
	}
	if len(cfg.VRRP) != 1 {
		t.Fatalf("vrrp: %d instances, want 1", len(cfg.VRRP))
	}
	if v := cfg.VRRP[0]; v.Name != "VI_1" || v.Interface != "eth0" || v.VRID != 51 || v.Priority != 150 || v.Preempt ||
		v.AdvertInterval != 100*time.Millisecond || len(v.VIPs) != 1 || v.VIPs[0].String() != "10.0.0.100" {
		t.Errorf("vrrp: %+v", v)
	}
}

func TestPinnedWriters(t *testing.T) {
	data, err := os.ReadFile("../../examples/seeds.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, _, err := config.Parse(data, "seeds.yaml")
	if err != nil {
		t.Fatal(err)
	}
	w, r := cfg.Services[0], cfg.Services[1]
	in := map[ringKey]bool{
		{w.Key, netip.MustParseAddr("10.0.0.13")}: true, // the writer ring holds db3 (and, from an older version, db2)
		{w.Key, netip.MustParseAddr("10.0.0.12")}: true,
		{r.Key, netip.MustParseAddr("10.0.0.12")}: true, // the reader is no single-writer service
	}
	got := pinnedWriters(cfg, in)
	if len(got) != 1 || got["writer"] != netip.MustParseAddr("10.0.0.12") {
		t.Fatalf("expected writer → 10.0.0.12 (first of the pinned ring in config order), seen %v", got)
	}
	if got := pinnedWriters(cfg, map[ringKey]bool{}); len(got) != 0 {
		t.Fatalf("no pinned ring: expected no writer, seen %v", got)
	}
}
