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

	"github.com/vbauerster/mpb/v8"

	"github.com/ferryhq/ferry/store"
)

// TestPlainProgress checks the progress lines printed when stderr is not a
// terminal, and that --quiet prints none.
func TestPlainProgress(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	p := newProgress(&buf, false, false)
	if p == nil || p.style != progressPlain {
		t.Fatalf("newProgress for a buffer: %+v; want plain lines", p)
	}
	tr := p.start("big.bin", 100<<20)
	tr.Update(1<<20, 100<<20) // within the interval: no line
	if buf.Len() != 0 {
		t.Errorf("a line within the interval: %q", buf.String())
	}
	p.interval = 0
	tr.started = time.Now().Add(-time.Second)
	tr.Update(12<<20, 100<<20)
	p.say(&buf)("retrying in 1s: broken\n")
	tr.End(nil)
	tr.Update(13<<20, 100<<20) // after End: ignored
	p.wait()
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "big.bin: 12 MiB / 100 MiB (12%)  ") || !strings.HasSuffix(lines[0], "/s") || lines[1] != "retrying in 1s: broken" {
		t.Errorf("plain progress output %q", buf.String())
	}
	if strings.ContainsAny(buf.String(), "\r\033") {
		t.Errorf("plain progress output has terminal controls: %q", buf.String())
	}
	if p := newProgress(&buf, true, false); p != nil {
		t.Errorf("newProgress with quiet: %+v; want nil", p)
	}
	var nilProgress *progress // --quiet: every method is safe and silent
	nilProgress.start("x", 1).Update(1, 1)
	nilProgress.start("x", 1).End(nil)
	nilProgress.wait()
}

// TestJSONProgress checks that --json progress lines are JSON objects
// that carry the transfer's name, bytes and total.
func TestJSONProgress(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	p := newProgress(&buf, false, true)
	if p == nil || p.style != progressJSON {
		t.Fatalf("newProgress with --json: %+v; want JSON lines", p)
	}
	p.interval = 0
	tr := p.start("k", -1)
	tr.Update(5, -1)
	tr.Update(7, 9)
	tr.End(nil)
	dec := json.NewDecoder(&buf)
	var got []jsonProgress
	for dec.More() {
		var rec jsonProgress
		if err := dec.Decode(&rec); err != nil {
			t.Fatalf("progress output is not JSON lines: %v", err)
		}
		got = append(got, rec)
	}
	if len(got) != 2 || got[0].Event != "progress" || got[0].Name != "k" || got[0].Bytes != 5 || got[0].Total != -1 || got[1].Bytes != 7 || got[1].Total != 9 {
		t.Errorf("JSON progress %+v", got)
	}
}

// TestBarProgress checks that the terminal display draws a bar with the
// transfer's name that ends complete, and one for a size learned late.
func TestBarProgress(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	p := newBars(&buf, mpb.WithAutoRefresh()) // mpb draws on terminals only, unless asked
	a := p.start("first.bin", 2048)
	b := p.start("stdin.bin", -1)
	a.Update(1024, 2048)
	b.Update(4096, -1)
	a.Update(2048, 2048)
	a.End(nil)
	b.End(nil)
	p.say(&buf)("a message")
	p.wait() // returns only once both bars are complete
	out := buf.String()
	for _, want := range []string{"first.bin", "stdin.bin", "2.0 KiB / 2.0 KiB", "4.0 KiB / 4.0 KiB", "100 %", "a message"} {
		if !strings.Contains(out, want) {
			t.Errorf("bar output lacks %q:\n%s", want, out)
		}
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
