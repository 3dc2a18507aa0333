package integration

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestHealthz checks the plain HTTP health path load balancers probe
// (docs/deploy.md): GET /healthz answers 200 "ok" without a token on a
// server that requires tokens, over HTTP/1.1 and h2c, through nginx's
// two listeners too, and refuses other
// methods and a body.
func TestHealthz(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--data", t.TempDir(), "--token-file", writeTokenFile(t))
	lb := startNginx(t, []string{srv.addr})
	for _, c := range []struct {
		base   string
		client *http.Client
	}{{srv.url, httpClient("connect")}, {srv.url, httpClient("grpc")}, {lb.httpURL, httpClient("connect")}, {lb.h2cURL, httpClient("grpc")}} {
		base := c.base
		resp, err := c.client.Get(base + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != "ok\n" || resp.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("GET %s/healthz: %d %q (Cache-Control %q), want 200 \"ok\\n\", no-store", base, resp.StatusCode, body, resp.Header.Get("Cache-Control"))
		}
	}
	resp, err := http.Post(srv.url+"/healthz", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode < 400 || resp.StatusCode >= 500 {
		t.Errorf("POST /healthz: %d, want a 4xx", resp.StatusCode)
	}
}
