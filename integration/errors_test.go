package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/wire"
)

// TestInternalCauseLogged: an internal error (here the manifest of an
// upload, corrupted on disk) reaches the client as "internal error" with
// nothing of its cause, and the server's log line for the RPC carries the
// cause.
func TestInternalCauseLogged(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	srv := startServer(t, "--data", data, "--token-file", writeTokenFile(t))
	cl := newSecClients(secHTTPClient(t, "grpc"), srv.url, "grpc", aliceToken)
	id, err := secOpenUpload(t.Context(), cl.upload, "team-a/corrupt", []byte("data"))
	if err != nil {
		t.Fatal(err)
	}
	// The disk store keeps an object in objects/<hh>/<sha256 of its key>,
	// its bytes first (the manifest's JSON): make that JSON invalid.
	sum := sha256.Sum256([]byte(".ferry/uploads/" + id))
	path := filepath.Join(data, "objects", hex.EncodeToString(sum[:1]), hex.EncodeToString(sum[:]))
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("{{{{"), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// A fresh server, so that no cached manifest hides the corruption.
	srv.Stop(t)
	srv = startServer(t, "--data", data, "--token-file", writeTokenFile(t))
	cl = newSecClients(secHTTPClient(t, "grpc"), srv.url, "grpc", aliceToken)
	_, err = cl.upload.GetUpload(t.Context(), connect.NewRequest(&ferryv1.GetUploadRequest{UploadId: id}))
	if connect.CodeOf(err) != connect.CodeInternal {
		t.Fatalf("GetUpload of a corrupt manifest: %v, want internal", err)
	}
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Message() != "internal error" {
		t.Errorf("the client was told %q, want only \"internal error\"", err)
	}
	// The server logs the call after it answered: wait for the whole line.
	rpcLine := regexp.MustCompile(`msg=rpc procedure=ferry.v1.UploadService/GetUpload .*code=internal.*\n`)
	var line string
	waitUntil(t, time.Minute, "the log line of the internal error", func() bool {
		line = rpcLine.FindString(srv.logs.String())
		return line != ""
	})
	if !strings.Contains(line, "cause=") || !strings.Contains(line, "corrupt") {
		t.Errorf("the log line of the internal error has no cause: %q", line)
	}
}

// TestInventedPaths: 4,000 requests without a token to invented paths of
// 16 KB under /ferry. are refused, and the metrics name their procedure
// "unknown": clients cannot add metric series, and the server's memory does
// not grow with the paths it was sent.
func TestInventedPaths(t *testing.T) {
	t.Parallel()
	metrics := freeLoopbackAddr(t)
	srv := startServer(t, "--data", t.TempDir(), "--token-file", writeTokenFile(t), "--metrics-addr", metrics)
	hc := secHTTPClient(t, "connect")
	before := currentRSS(t, srv.cmd.Process.Pid)
	long := strings.Repeat("p", 16<<10)
	for i := range 4000 {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, fmt.Sprintf("%s/ferry.%d/%s", srv.url, i, long), strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		if got := httpStatus(hc, req); got != "401" {
			t.Fatalf("request %d to an invented path without a token: %s, want 401", i, got)
		}
	}
	m := scrapeMetrics(t, metrics)
	known := map[string]bool{"unknown": true}
	for _, p := range wire.Procedures {
		known[p.Name] = true
	}
	for series := range m {
		if p := regexp.MustCompile(`procedure="([^"]*)"`).FindStringSubmatch(series); p != nil && !known[p[1]] {
			t.Fatalf("a metric series names the procedure %.80q, which the client chose", p[1])
		}
	}
	if got := m.sum("ferry_rpc_errors_total", `procedure="unknown"`, `code="unauthenticated"`); got != 4000 {
		t.Errorf("ferry_rpc_errors_total{procedure=unknown,code=unauthenticated} = %v, want 4000", got)
	}
	if after := currentRSS(t, srv.cmd.Process.Pid); after > before+32*MiB {
		t.Errorf("the server's RSS grew from %d to %d MiB over 4,000 refused requests", before/MiB, after/MiB)
	}
}

// currentRSS returns the resident set size of process pid (VmRSS), in
// bytes.
func currentRSS(t testing.TB, pid int) int64 { return procStatusBytes(t, pid, "VmRSS") }
