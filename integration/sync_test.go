package integration

import (
	"encoding/json"
	"path/filepath"
	"testing"
)

// syncSummary is the JSON summary ferry sync --json prints.
type syncSummary struct {
	Files       int64   `json:"files"`
	Transferred int64   `json:"transferred"`
	Skipped     int64   `json:"skipped"`
	Deleted     int64   `json:"deleted"`
	Failed      int64   `json:"failed"`
	Bytes       int64   `json:"bytes"`
	Seconds     float64 `json:"seconds"`
	// Deprecated names of Transferred and Bytes, still printed.
	Uploaded  int64 `json:"uploaded"`
	BytesSent int64 `json:"bytes_sent"`
}

// ferrySync runs ferry sync --json with args and decodes its summary.
func ferrySync(t *testing.T, args ...string) syncSummary {
	t.Helper()
	r := mustFerry(t, append([]string{"sync", "--json"}, args...)...)
	var s syncSummary
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("ferry sync summary %q: %v", r.stdout, err)
	}
	t.Logf("ferry sync %v: %+v", args, s)
	if s.Uploaded != s.Transferred || s.BytesSent != s.Bytes {
		t.Errorf("ferry sync summary %q: the deprecated uploaded and bytes_sent differ from transferred and bytes", r.stdout)
	}
	return s
}

// TestSyncTree syncs the toolchain's net/http sources (hundreds of files)
// up twice, then down twice: each second run must transfer nothing, as
// every file's size and CRC32C already match.
func TestSyncTree(t *testing.T) {
	t.Parallel()
	for _, backend := range backends {
		t.Run(backend.name, func(t *testing.T) {
			t.Parallel()
			srv := backend.start(t)
			tree := filepath.Join(goEnv(t, "GOROOT"), "src", "net", "http")
			first := ferrySync(t, "--server", srv.url, "--concurrency", "8", tree, "nethttp/")
			if first.Files < 100 || first.Transferred+first.Skipped != first.Files || first.Failed != 0 || first.Bytes == 0 {
				t.Fatalf("first sync: %+v", first)
			}
			second := ferrySync(t, "--server", srv.url, "--concurrency", "8", tree, "nethttp/")
			if second.Transferred != 0 || second.Bytes != 0 || second.Files != first.Files {
				t.Fatalf("second sync transferred files: %+v", second)
			}
			dir := t.TempDir()
			down := ferrySync(t, "--server", srv.url, "--concurrency", "8", "nethttp/", dir)
			if down.Transferred != first.Transferred || down.Bytes != first.Bytes || down.Failed != 0 {
				t.Fatalf("download sync: %+v, upload was %+v", down, first)
			}
			requireSameFile(t, filepath.Join(tree, "server.go"), filepath.Join(dir, "server.go"))
			again := ferrySync(t, "--server", srv.url, "nethttp/", dir)
			if again.Transferred != 0 || again.Bytes != 0 {
				t.Fatalf("second download sync transferred files: %+v", again)
			}
		})
	}
}
