package integration

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// grpcurlPath finds grpcurl: FERRY_TEST_GRPCURL, the tools dir that
// scripts/tools.sh fills, or PATH. Without it the test is skipped, or fails
// when FERRY_REQUIRE_S3=1 says this is the full run of scripts/test.sh.
func grpcurlPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("FERRY_TEST_GRPCURL"); p != "" {
		return p
	}
	if p := filepath.Join(toolsDir(), "bin", "grpcurl"); fileExists(p) {
		return p
	}
	if p, err := exec.LookPath("grpcurl"); err == nil {
		return p
	}
	const msg = "grpcurl not found (FERRY_TEST_GRPCURL, the tools dir, PATH): run bash scripts/tools.sh"
	if os.Getenv("FERRY_REQUIRE_S3") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// TestGRPCurl lists the server's services with grpcurl through gRPC server
// reflection, then calls StatObject with it: a generic tool that knows
// nothing of ferry but what the server reflects.
func TestGRPCurl(t *testing.T) {
	t.Parallel()
	grpcurl := grpcurlPath(t)
	srv := startServer(t, "--data", t.TempDir())
	mustFerry(t, "upload", "--server", srv.url, generated(t, 1000, 6), "grpcurl/object")

	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, grpcurl, append([]string{"-plaintext"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("grpcurl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	services := strings.Fields(run(srv.addr, "list"))
	for _, want := range []string{"ferry.v1.UploadService", "ferry.v1.DownloadService", "ferry.v1.ObjectService"} {
		found := false
		for _, s := range services {
			found = found || s == want
		}
		if !found {
			t.Errorf("grpcurl list: %s missing from %v", want, services)
		}
	}

	out := run("-d", `{"key": "grpcurl/object"}`, srv.addr, "ferry.v1.ObjectService/StatObject")
	var resp struct {
		Object struct {
			Key  string `json:"key"`
			Size string `json:"size"` // protojson writes int64 as a string
		} `json:"object"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("grpcurl StatObject printed no JSON: %v\n%s", err, out)
	}
	if resp.Object.Key != "grpcurl/object" || resp.Object.Size != "1000" {
		t.Errorf("grpcurl StatObject = key %q size %q, want %q and 1000", resp.Object.Key, resp.Object.Size, "grpcurl/object")
	}
}
