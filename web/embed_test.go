package web

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestAssets checks that the committed build is embedded: every file the
// page loads is there, index.html refers to the bundle and has the tag
// Handler fills with the page servers.
func TestAssets(t *testing.T) {
	for _, name := range []string{"index.html", "app.js", "crc-worker.js", "style.css"} {
		b, err := fs.ReadFile(Assets(), name)
		if err != nil {
			t.Fatalf("embedded %s: %v (run bash scripts/web.sh)", name, err)
		}
		if len(b) == 0 {
			t.Errorf("embedded %s is empty", name)
		}
		if name == "index.html" && !strings.Contains(string(b), serversMeta) {
			t.Errorf("embedded index.html lacks %s (run bash scripts/web.sh)", serversMeta)
		}
	}
}

// TestHandler checks what each request gets, malformed ones included:
// every bad path is a 4xx with a plain message, never a 500 or a file.
func TestHandler(t *testing.T) {
	srv := httptest.NewServer(Handler(Options{}))
	defer srv.Close()
	long := "/" + strings.Repeat("a", 60<<10)
	for _, tc := range []struct {
		method, path string
		status       int
		contentType  string
		body         string
	}{
		{"GET", "/", http.StatusOK, "text/html", `src="app.js"`},
		{"GET", "/?server=http://127.0.0.1:1", http.StatusOK, "text/html", `src="app.js"`},
		{"HEAD", "/", http.StatusOK, "text/html", ""},
		{"GET", "/index.html", http.StatusOK, "text/html", `src="app.js"`},
		{"GET", "/app.js", http.StatusOK, "text/javascript", ""},
		{"GET", "/crc-worker.js", http.StatusOK, "text/javascript", ""},
		{"GET", "/style.css", http.StatusOK, "text/css", ""},
		{"GET", "/missing.js", http.StatusNotFound, "text/plain", "not found"},
		{"GET", "/dist/app.js", http.StatusNotFound, "text/plain", "not found"},
		{"GET", "/app.js/", http.StatusBadRequest, "text/plain", "element"},
		{"GET", "/APP.JS", http.StatusNotFound, "text/plain", "not found"},
		{"GET", long, http.StatusNotFound, "text/plain", "not found"},
		{"GET", "/%ff", http.StatusBadRequest, "text/plain", "UTF-8"},
		{"GET", "/app.js%ff", http.StatusBadRequest, "text/plain", "UTF-8"},
		{"GET", "/%00", http.StatusBadRequest, "text/plain", "control character"},
		{"GET", "/app.js%00", http.StatusBadRequest, "text/plain", "control character"},
		{"GET", "/%0d%0aSet-Cookie:%20x=1", http.StatusBadRequest, "text/plain", "control character"},
		{"GET", "/..%2f", http.StatusBadRequest, "text/plain", "element"},
		{"GET", "/..%2fembed.go", http.StatusBadRequest, "text/plain", "element"},
		{"GET", "/%2e%2e/", http.StatusBadRequest, "text/plain", "element"},
		{"GET", "/.", http.StatusBadRequest, "text/plain", "element"},
		{"GET", "//", http.StatusBadRequest, "text/plain", "element"},
		{"GET", "//app.js", http.StatusBadRequest, "text/plain", "element"},
		{"GET", "/a/../app.js", http.StatusBadRequest, "text/plain", "element"},
		{"GET", "/..%5capp.js", http.StatusBadRequest, "text/plain", "backslash"},
		{"POST", "/", http.StatusMethodNotAllowed, "text/plain", "method not allowed"},
		{"OPTIONS", "/", http.StatusMethodNotAllowed, "text/plain", "method not allowed"},
		{"DELETE", "/%ff", http.StatusMethodNotAllowed, "text/plain", "method not allowed"},
	} {
		name := tc.path
		if len(name) > 40 {
			name = name[:40] + "…"
		}
		status, header, body := rawRequest(t, srv, tc.method, tc.path, nil)
		if status != tc.status {
			t.Errorf("%s %s: status %d, want %d (%s)", tc.method, name, status, tc.status, body)
			continue
		}
		if ct := header.Get("Content-Type"); !strings.HasPrefix(ct, tc.contentType) {
			t.Errorf("%s %s: Content-Type %q, want %s", tc.method, name, ct, tc.contentType)
		}
		if !strings.Contains(body, tc.body) {
			t.Errorf("%s %s: body %q lacks %q", tc.method, name, body, tc.body)
		}
		if header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s %s: no X-Content-Type-Options: nosniff", tc.method, name)
		}
		if tc.status == http.StatusOK {
			if header.Get("Content-Security-Policy") == "" {
				t.Errorf("%s %s: no Content-Security-Policy", tc.method, name)
			}
			if header.Get("Cache-Control") != "no-cache" || header.Get("ETag") == "" {
				t.Errorf("%s %s: Cache-Control %q, ETag %q; want no-cache and an ETag", tc.method, name, header.Get("Cache-Control"), header.Get("ETag"))
			}
		}
	}
}

// rawRequest sends one HTTP/1.1 request with target written as it is (Go's
// client would clean or refuse some of the malformed paths under test) and
// returns the response's status, header and body.
func rawRequest(t *testing.T, srv *httptest.Server, method, target string, header http.Header) (int, http.Header, string) {
	t.Helper()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var req strings.Builder
	fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", method, target, srv.Listener.Addr())
	for k, vs := range header {
		for _, v := range vs {
			fmt.Fprintf(&req, "%s: %s\r\n", k, v)
		}
	}
	req.WriteString("\r\n")
	if _, err := io.WriteString(conn, req.String()); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %.40s: %v", method, target, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, res.Header, string(b)
}

// TestHandlerRevalidates checks that a browser's revalidation with the
// ETag it got is answered 304 Not Modified, and a stale one with the file.
func TestHandlerRevalidates(t *testing.T) {
	srv := httptest.NewServer(Handler(Options{}))
	defer srv.Close()
	status, header, _ := rawRequest(t, srv, "GET", "/app.js", nil)
	etag := header.Get("ETag")
	if status != http.StatusOK || etag == "" {
		t.Fatalf("GET /app.js: status %d, ETag %q", status, etag)
	}
	if status, _, body := rawRequest(t, srv, "GET", "/app.js", http.Header{"If-None-Match": {etag}}); status != http.StatusNotModified || body != "" {
		t.Errorf("GET /app.js with If-None-Match %s: status %d with %d bytes, want 304 and none", etag, status, len(body))
	}
	if status, _, body := rawRequest(t, srv, "GET", "/app.js", http.Header{"If-None-Match": {`"stale"`}}); status != http.StatusOK || body == "" {
		t.Errorf("GET /app.js with a stale ETag: status %d with %d bytes, want 200 and the file", status, len(body))
	}
	// The pages of two configurations differ, and so do their ETags.
	other := httptest.NewServer(Handler(Options{PageServers: []string{"https://ferry.example.com"}}))
	defer other.Close()
	_, h1, _ := rawRequest(t, srv, "GET", "/", nil)
	_, h2, _ := rawRequest(t, other, "GET", "/", nil)
	if h1.Get("ETag") == h2.Get("ETag") {
		t.Errorf("index.html has ETag %s with and without page servers", h1.Get("ETag"))
	}
}

// TestHandlerPageServers checks that the Content-Security-Policy lets the
// page connect to its own origin and the configured servers only, and that
// index.html names those servers to the page.
func TestHandlerPageServers(t *testing.T) {
	for _, tc := range []struct {
		servers []string
		connect string
		meta    string
	}{
		{nil, "connect-src 'self';", `<meta name="ferry-page-servers" content="">`},
		{
			[]string{"https://ferry.example.com", "http://127.0.0.1:8081"},
			"connect-src 'self' https://ferry.example.com http://127.0.0.1:8081;",
			`<meta name="ferry-page-servers" content="https://ferry.example.com http://127.0.0.1:8081">`,
		},
	} {
		srv := httptest.NewServer(Handler(Options{PageServers: tc.servers}))
		for _, path := range []string{"/", "/app.js"} {
			_, header, body := rawRequest(t, srv, "GET", path, nil)
			csp := header.Get("Content-Security-Policy")
			if !strings.Contains(csp, tc.connect) {
				t.Errorf("servers %v: GET %s: Content-Security-Policy %q lacks %q", tc.servers, path, csp, tc.connect)
			}
			for _, bad := range []string{"http:", "https:", "*"} {
				if strings.Contains(" "+strings.ReplaceAll(csp, ";", " ")+" ", " "+bad+" ") {
					t.Errorf("servers %v: Content-Security-Policy %q allows every origin (%s)", tc.servers, csp, bad)
				}
			}
			if path == "/" && !strings.Contains(body, tc.meta) {
				t.Errorf("servers %v: index.html lacks %s", tc.servers, tc.meta)
			}
		}
		srv.Close()
	}
}

// TestHandlerRefusesBadServers checks that Handler panics, rather than
// serve a policy it was not asked for, on a page server that is not an
// origin as ParseOrigin returns it (a policy of "'self' *" or one with a
// stray directive would let the page's token go anywhere).
func TestHandlerRefusesBadServers(t *testing.T) {
	for _, s := range []string{"*", "http:", "https://a.example; connect-src *", "https://A.example", "http://a.example:80", ""} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Handler(PageServers: [%q]) did not panic", s)
				}
			}()
			Handler(Options{PageServers: []string{s}})
		}()
	}
}

func TestParseOrigin(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{"http://127.0.0.1:8080", "http://127.0.0.1:8080"},
		{"http://127.0.0.1:8080/", "http://127.0.0.1:8080"},
		{"HTTPS://Ferry.Example.COM", "https://ferry.example.com"},
		{"https://ferry.example.com:443", "https://ferry.example.com"},
		{"http://ferry.example.com:80/", "http://ferry.example.com"},
		{"https://ferry.example.com:80", "https://ferry.example.com:80"},
		{"http://[::1]:8080", "http://[::1]:8080"},
		{"http://[0:0::1]", "http://[::1]"},
		{"http://xn--bcher-kva.example", "http://xn--bcher-kva.example"},
		{"http://localhost:1", "http://localhost:1"},
	} {
		got, err := ParseOrigin(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseOrigin(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{
		"", "127.0.0.1:8080", "ftp://ferry.example.com", "ws://ferry.example.com", "file:///etc/passwd",
		"http://", "http:ferry.example.com", "https://user:pw@ferry.example.com", "https://ferry.example.com/ferry",
		"https://ferry.example.com?x=1", "https://ferry.example.com?", "https://ferry.example.com#top",
		"https://*.example.com", "*", "https://ferry.example.com:0", "https://ferry.example.com:65536",
		"https://ferry.example.com:08080", "https://ferry.example.com:", "https://ferry.example.com:x",
		"https://bücher.example", "https://a b.example", "https://a;b.example", "https://-a.example",
		"http://[::1%25eth0]:8080", "http://[1.2.3.4]", "https://ferry.example.com\n", "http:// ferry.example.com",
		"https://" + strings.Repeat("a", 64) + ".example",
	} {
		if got, err := ParseOrigin(in); err == nil {
			t.Errorf("ParseOrigin(%q) = %q, want an error", in, got)
		} else if !strings.Contains(err.Error(), "is not an http or https origin") {
			t.Errorf("ParseOrigin(%q): unclear error %v", in, err)
		}
	}
}
