package web

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestAssets checks that the committed build is embedded: every file the
// page loads is there and index.html refers to the bundle.
func TestAssets(t *testing.T) {
	for _, name := range []string{"index.html", "app.js", "crc-worker.js", "style.css"} {
		b, err := fs.ReadFile(Assets(), name)
		if err != nil {
			t.Fatalf("embedded %s: %v (run bash scripts/web.sh)", name, err)
		}
		if len(b) == 0 {
			t.Errorf("embedded %s is empty", name)
		}
	}
}

func TestHandler(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()
	for _, tc := range []struct {
		method, path string
		status       int
		contentType  string
		body         string
	}{
		{"GET", "/", http.StatusOK, "text/html", `src="app.js"`},
		{"HEAD", "/", http.StatusOK, "text/html", ""},
		{"GET", "/app.js", http.StatusOK, "text/javascript", ""},
		{"GET", "/crc-worker.js", http.StatusOK, "text/javascript", ""},
		{"GET", "/style.css", http.StatusOK, "text/css", ""},
		{"GET", "/missing.js", http.StatusNotFound, "", ""},
		{"POST", "/", http.StatusMethodNotAllowed, "", ""},
	} {
		req, err := http.NewRequest(tc.method, srv.URL+tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.method, tc.path, err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != tc.status {
			t.Errorf("%s %s: status %d, want %d", tc.method, tc.path, res.StatusCode, tc.status)
			continue
		}
		if ct := res.Header.Get("Content-Type"); tc.contentType != "" && !strings.HasPrefix(ct, tc.contentType) {
			t.Errorf("%s %s: Content-Type %q, want %s", tc.method, tc.path, ct, tc.contentType)
		}
		if !strings.Contains(string(body), tc.body) {
			t.Errorf("%s %s: body lacks %q", tc.method, tc.path, tc.body)
		}
		if tc.status == http.StatusOK && res.Header.Get("Content-Security-Policy") == "" {
			t.Errorf("%s %s: no Content-Security-Policy", tc.method, tc.path)
		}
	}
}
