package integration

import (
	"errors"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
)

// TestPprof: `ferry serve --pprof` serves Go's runtime profiles on
// --metrics-addr (how docs/benchmarks.md profiles the server), a server
// without it does not, and --pprof without --metrics-addr is a usage error
// (exit status 2).
func TestPprof(t *testing.T) {
	t.Parallel()
	get := func(addr, path string) (int, string) {
		t.Helper()
		res, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}

	with := freeLoopbackAddr(t)
	startServer(t, "--data", t.TempDir(), "--metrics-addr", with, "--pprof")
	if code, body := get(with, "/debug/pprof/heap?debug=1"); code != http.StatusOK || !strings.Contains(body, "heap profile") {
		t.Errorf("--pprof: GET /debug/pprof/heap?debug=1 = %d %.80q, want 200 and a heap profile", code, body)
	}
	if code, _ := get(with, "/metrics"); code != http.StatusOK {
		t.Errorf("--pprof: GET /metrics = %d, want 200", code)
	}

	without := freeLoopbackAddr(t)
	startServer(t, "--data", t.TempDir(), "--metrics-addr", without)
	if code, _ := get(without, "/debug/pprof/heap?debug=1"); code != http.StatusNotFound {
		t.Errorf("without --pprof: GET /debug/pprof/heap = %d, want 404", code)
	}

	cmd := exec.Command(ferryBin, "serve", "--data", t.TempDir(), "--pprof")
	cmd.Env = cliEnv()
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), "--metrics-addr") {
		t.Errorf("serve --pprof without --metrics-addr: %v, output %q; want exit status 2 naming --metrics-addr", err, out)
	}
}
