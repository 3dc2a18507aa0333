package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferryhq/ferry/store"
)

// TestPlainProgress checks the progress lines printed when stderr is not a
// terminal, and that --quiet prints none.
func TestPlainProgress(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	p := newProgress(&buf, "uploaded", false)
	if p == nil || !p.plain {
		t.Fatalf("newProgress for a buffer: %+v; want a plain printer", p)
	}
	p.report(1<<20, 100<<20) // within the interval: no line
	if buf.Len() != 0 {
		t.Errorf("a line within the interval: %q", buf.String())
	}
	p.interval = 0
	p.start = time.Now().Add(-time.Second)
	p.report(12<<20, 100<<20)
	p.println("retrying in 1s: broken")
	p.end()
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "12 MiB / 100 MiB (12%)  ") || !strings.HasSuffix(lines[0], "/s") || lines[1] != "retrying in 1s: broken" {
		t.Errorf("plain progress output %q", buf.String())
	}
	if strings.ContainsAny(buf.String(), "\r\033") {
		t.Errorf("plain progress output has terminal controls: %q", buf.String())
	}
	if p := newProgress(&buf, "uploaded", true); p != nil {
		t.Errorf("newProgress with quiet: %+v; want nil", p)
	}
}

// TestUploadJSON checks that `ferry upload --json` prints one JSON object
// that parses, with the object's key, size and CRC32C.
func TestUploadJSON(t *testing.T) {
	t.Parallel()
	url := startServer(t)
	data := []byte("json data")
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	r := ferry(t, nil, env("FERRY_SERVER", url, "FERRY_CACHE_DIR", t.TempDir()), "upload", "--json", file, "j")
	if r.code != 0 {
		t.Fatalf("upload --json: status %d, stderr %q", r.code, r.stderr)
	}
	var got jsonResult
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	if err := dec.Decode(&got); err != nil || dec.More() {
		t.Fatalf("stdout %q: not one JSON object (%v)", r.stdout, err)
	}
	want := fmt.Sprintf("%08x", store.CRC32C(data))
	if got.Key != "j" || got.Size != int64(len(data)) || got.CRC32C != want || got.Resumed || got.Seconds <= 0 {
		t.Errorf("upload --json printed %+v; want key j, size %d, crc32c %s, not resumed", got, len(data), want)
	}
}
