package integration

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// benchReport is the part of integration/bench's JSON output this test
// reads.
type benchReport struct {
	Short   bool `json:"short"`
	Results []struct {
		Op        string  `json:"op"`
		Size      int64   `json:"size_bytes"`
		Count     int     `json:"count"`
		Client    string  `json:"client"`
		MiBps     float64 `json:"mib_per_s"`
		Ratio     float64 `json:"ratio"`
		PeakRSS   int64   `json:"server_peak_rss_bytes"`
		CPUPerGiB float64 `json:"server_cpu_s_per_gib"`
		ClientCPU float64 `json:"client_cpu_s_per_gib"`
	} `json:"results"`
	Memory *struct {
		Uploads int   `json:"uploads"`
		PeakRSS int64 `json:"server_peak_rss_bytes"`
		Limit   int64 `json:"limit_bytes"`
		Pass    bool  `json:"pass"`
	} `json:"memory"`
}

// TestBenchShort runs the benchmark (go run ./integration/bench) in its
// short mode against the test MinIO server and the ferry binary under
// test, and checks its JSON: every case was measured with every client
// (direct minio-go, and ferry over Connect, gRPC and gRPC-Web), with a
// throughput and a ratio to direct, and, on Linux, the ferry server's
// peak RSS, and the client's CPU time; the memory test ran and stayed under its limit. It proves the
// benchmark works, not how fast ferry is.
func TestBenchShort(t *testing.T) {
	env := requireS3(t)
	t.Parallel()
	out := filepath.Join(t.TempDir(), "bench.json")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, "go", "run", "./integration/bench", "-short", "-json", out,
		"-ferry", ferryBin, "-endpoint", env.endpoint, "-access-key", env.accessKey, "-secret-key", env.secretKey)
	cmd.Dir = root
	cmd.Env = cliEnv()
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go run ./integration/bench -short: %v\n%s", err, b)
	}
	t.Logf("bench output:\n%s", b)
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep benchReport
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatalf("bench JSON: %v\n%s", err, data)
	}
	if !rep.Short {
		t.Error("the report does not say it was a short run")
	}
	seen := map[string]map[string]bool{} // op -> clients
	for _, r := range rep.Results {
		if seen[r.Op] == nil {
			seen[r.Op] = map[string]bool{}
		}
		seen[r.Op][r.Client] = true
		if r.MiBps <= 0 || r.Ratio <= 0 || r.Size <= 0 || r.Count <= 0 {
			t.Errorf("%s %d bytes with %s: MiB/s %v, ratio %v, count %d; want all positive", r.Op, r.Size, r.Client, r.MiBps, r.Ratio, r.Count)
		}
		if r.Client == "direct" && r.Ratio != 1 {
			t.Errorf("%s %d bytes direct: ratio %v, want 1", r.Op, r.Size, r.Ratio)
		}
		if r.Client != "direct" && runtime.GOOS == "linux" && r.PeakRSS <= 0 {
			t.Errorf("%s %d bytes with %s: no server peak RSS", r.Op, r.Size, r.Client)
		}
		if r.ClientCPU <= 0 {
			t.Errorf("%s %d bytes with %s: client CPU %v s/GiB, want it measured", r.Op, r.Size, r.Client, r.ClientCPU)
		}
	}
	for _, op := range []string{"upload", "download", "small-upload"} {
		for _, c := range []string{"direct", "connect", "grpc", "grpcweb"} {
			if !seen[op][c] {
				t.Errorf("no %s result for client %s", op, c)
			}
		}
	}
	switch m := rep.Memory; {
	case m == nil:
		t.Error("the memory test did not run")
	case !m.Pass || m.Uploads == 0 || (runtime.GOOS == "linux" && (m.PeakRSS <= 0 || m.PeakRSS >= m.Limit)):
		t.Errorf("memory test: %+v, want a pass with the peak RSS under the limit", *m)
	}
}
