package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Results is what `xdplb bench` hands WriteResults: the run's settings and every section's
// results. WriteResults also accepts any other value, written as the sections.
type Results struct {
	Version  string // xdplb version
	Quick    bool
	Only     string // the one section run, or ""
	Sections any    // section name -> results
}

// Header describes the machine and the run.
type Header struct {
	Machine  string    `json:"machine"`
	Kernel   string    `json:"kernel"`
	CPUModel string    `json:"cpu_model"`
	CPUs     int       `json:"cpus"`
	Go       string    `json:"go"`
	Clang    string    `json:"clang"`
	Xdplb    string    `json:"xdplb"`
	Time     time.Time `json:"time"`
	Mode     string    `json:"mode"` // quick or full
	Only     string    `json:"only,omitempty"`
}

type resultsFile struct {
	Header  Header `json:"header"`
	Results any    `json:"results"`
}

// WriteResults writes dir/<YYYY-MM-DD>.json (then -2, -3, … if taken) with a header describing
// the machine, and returns its path.
func WriteResults(dir string, r any) (string, error) {
	now := time.Now()
	h := header(now)
	h.Xdplb, h.Mode = "unknown", "unknown"
	sections := r
	if res, ok := r.(Results); ok {
		h.Xdplb, h.Only, sections = res.Version, res.Only, res.Sections
		h.Mode = "full"
		if res.Quick {
			h.Mode = "quick"
		}
	}
	b, err := json.MarshalIndent(resultsFile{Header: h, Results: sections}, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encode results: %w", err)
	}
	b = append(b, '\n')
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	date := now.Format("2006-01-02")
	for n := 1; n < 1000; n++ {
		name := date + ".json"
		if n > 1 {
			name = fmt.Sprintf("%s-%d.json", date, n)
		}
		path := filepath.Join(dir, name)
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return "", err
		}
		if _, err := f.Write(b); err != nil {
			f.Close()
			return "", err
		}
		return path, f.Close()
	}
	return "", fmt.Errorf("%s: 999 result files for %s already", dir, date)
}

func header(now time.Time) Header {
	h := Header{CPUs: runtime.NumCPU(), Go: runtime.Version(), Time: now, Clang: "not installed"}
	h.Machine, _ = os.Hostname()
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		h.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if ok && strings.TrimSpace(k) == "model name" {
				h.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if out, err := exec.Command("clang", "--version").Output(); err == nil {
		line, _, _ := bytes.Cut(out, []byte("\n"))
		h.Clang = strings.TrimSpace(string(line))
	}
	return h
}

// nsPrefix starts the names of the benchmarks' network namespaces (the tests' start with
// netns.Prefix): xdplb-b-<id>-<role>.
const nsPrefix = "xdplb-b-"
