// Package integration tests ferry end to end: the real ferry binary, built
// once by TestMain, serving over real sockets in front of a real MinIO server
// (or the embedded disk store), driven by the real ferry CLI, by stock
// clients (grpc-go, grpcurl) that share no code with ferry's own, and by a
// real browser (Chromium through playwright-core) on the embedded page.
//
// Environment (see scripts/test.sh, which sets all of it):
//
//	FERRY_TEST_S3_ENDPOINT    host:port of an S3 server spoken to over plain HTTP
//	FERRY_TEST_S3_ACCESS_KEY  its access key
//	FERRY_TEST_S3_SECRET_KEY  its secret key
//	FERRY_TEST_MINIO_BIN      the MinIO binary the fault, disk-full and cluster
//	                          tests start themselves (default: the tools dir)
//	FERRY_TEST_VERSITYGW_ENDPOINT, FERRY_TEST_VERSITYGW_ACCESS_KEY,
//	FERRY_TEST_VERSITYGW_SECRET_KEY
//	                          the same for versitygw, the second S3 implementation
//	FERRY_TEST_NGINX          path of nginx (default /usr/sbin/nginx), for the
//	                          cluster, health and tracing tests
//	FERRY_REQUIRE_S3=1        fail, not skip, the S3 tests when the above are unset
//	FERRY_TEST_GRPCURL        path of grpcurl (default: the tools dir, then PATH)
//	FERRY_REQUIRE_BROWSER=1   fail, not skip, the browser tests when node, Chromium
//	                          or playwright-core (web/node_modules) are missing
//	FERRY_TEST_CHROMIUM       path of Chromium (default /usr/bin/chromium)
//	FERRY_TEST_FAULT_SEED     replay the random kill points of the fault tests
//
// Each test that needs S3 creates its own bucket, so tests run in parallel
// and leave nothing behind in a shared server.
package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var (
	// ferryBin is the path of the ferry binary built by TestMain.
	ferryBin string
	// sharedDir holds files shared by all tests of one run (the generated
	// inputs); TestMain removes it.
	sharedDir string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "ferry-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	sharedDir = dir

	root, err := repoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	ferryBin = filepath.Join(dir, "ferry")
	build := exec.Command("go", "build", "-o", ferryBin, "./cmd/ferry")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "integration: go build ./cmd/ferry: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// repoRoot returns the directory of ferry's go.mod, where ./cmd/ferry lives.
func repoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		// Not inside the module (unusual): the package is one level down.
		return filepath.Abs("..")
	}
	return filepath.Dir(gomod), nil
}

// toolsDir returns the directory scripts/tools.sh installs tools into.
func toolsDir() string {
	if d := os.Getenv("FERRY_TOOLS_DIR"); d != "" {
		return d
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	return filepath.Join(cache, "ferry", "tools")
}

// goEnv returns the value of one go env variable.
func goEnv(t testing.TB, name string) string {
	t.Helper()
	out, err := exec.Command("go", "env", name).Output()
	if err != nil {
		t.Fatalf("go env %s: %v", name, err)
	}
	return string(bytes.TrimSpace(out))
}
