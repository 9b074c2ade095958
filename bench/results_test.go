package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestWriteResults(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "dir")
	date := time.Now().Format("2006-01-02")
	for i, want := range []string{"r-" + date + ".json", "r-" + date + "-2.json"} {
		path, err := WriteResults(dir, "r-", map[string]int{"x": i})
		if err != nil || path != filepath.Join(dir, want) {
			t.Fatalf("write %d: expected %s, seen %q (%v)", i, want, path, err)
		}
	}
	file := filepath.Join(dir, "mine.json")
	if err := WriteResultsFile(file, map[string]int{"x": 1}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(file)
	if err != nil || !strings.Contains(string(b), `"header"`) || !strings.Contains(string(b), `"x": 1`) {
		t.Fatalf("%s: %q %v", file, b, err)
	}
	err = WriteResultsFile(file, map[string]int{"x": 2})
	if err == nil || !strings.Contains(err.Error(), "mine.json exists: results are never overwritten") {
		t.Fatalf("second write to %s: expected a refusal, seen %v", file, err)
	}
	if b2, _ := os.ReadFile(file); string(b2) != string(b) {
		t.Fatal("the file was overwritten")
	}
}
