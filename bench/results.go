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

// WriteResults writes dir/<prefix><YYYY-MM-DD>.json (then -2, -3, … if taken), creating dir,
// with a header describing the machine, and returns its path.
func WriteResults(dir, prefix string, r any) (string, error) {
	now := time.Now()
	b, err := encodeResults(now, r)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	date := prefix + now.Format("2006-01-02")
	for n := 1; n < 1000; n++ {
		name := date + ".json"
		if n > 1 {
			name = fmt.Sprintf("%s-%d.json", date, n)
		}
		path := filepath.Join(dir, name)
		err := writeNew(path, b)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return path, err
	}
	return "", fmt.Errorf("%s: 999 result files for %s already", dir, date)
}

// WriteResultsFile writes the results to path, which must not exist: results are never
// overwritten.
func WriteResultsFile(path string, r any) error {
	b, err := encodeResults(time.Now(), r)
	if err != nil {
		return err
	}
	if err := writeNew(path, b); errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists: results are never overwritten (choose another file, or a directory)", path)
	} else if err != nil {
		return err
	}
	return nil
}

func encodeResults(now time.Time, r any) ([]byte, error) {
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
		return nil, fmt.Errorf("encode results: %w", err)
	}
	return append(b, '\n'), nil
}

// writeNew creates path (fs.ErrExist if it exists) and writes b to it.
func writeNew(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
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
