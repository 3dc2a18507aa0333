package integration

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/web"
)

// browserTimeout bounds one run of web/e2e/browser.mjs: four pages, about
// 130 MiB up and 80 MiB down, usually well under a minute.
const browserTimeout = 5 * time.Minute

// browserEnv is what the browser tests need on the machine.
type browserEnv struct {
	// e2e is the folder of the scripts that drive the browser (web/e2e).
	node, chromium, e2e string
}

// requireBrowser returns the Node.js, Chromium and e2e scripts the browser
// tests run. When one is missing it skips the test, or fails it when
// FERRY_REQUIRE_BROWSER=1 (as in CI), so a missing browser is never
// mistaken for a pass there. FERRY_TEST_CHROMIUM overrides /usr/bin/chromium.
func requireBrowser(t *testing.T) browserEnv {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	env := browserEnv{
		chromium: cmp.Or(os.Getenv("FERRY_TEST_CHROMIUM"), "/usr/bin/chromium"),
		e2e:      filepath.Join(root, "web", "e2e"),
	}
	var missing []string
	if env.node, err = exec.LookPath("node"); err != nil {
		missing = append(missing, "node (Node.js)")
	}
	if _, err := os.Stat(env.chromium); err != nil {
		missing = append(missing, env.chromium+" (install with: bash scripts/chromium.sh)")
	}
	if _, err := os.Stat(filepath.Join(root, "web", "node_modules", "playwright-core", "package.json")); err != nil {
		missing = append(missing, "web/node_modules/playwright-core (install with: bash scripts/tools.sh)")
	}
	if len(missing) == 0 {
		return env
	}
	msg := "browser tests need " + strings.Join(missing, ", ")
	if os.Getenv("FERRY_REQUIRE_BROWSER") == "1" {
		t.Fatal(msg + " (FERRY_REQUIRE_BROWSER=1)")
	}
	t.Skip(msg)
	return env
}

// TestBrowser drives ferry's page (package web, embedded in the binary) in
// a real Chromium against the real `ferry serve`, in front of the embedded
// disk store and of MinIO. It proves, through the browser:
//   - three files, one of 64 MiB, uploaded with the unary chunk RPCs over
//     gRPC-Web are stored byte for byte (read back with the CLI);
//   - downloading them from the object list yields the same bytes;
//   - a reload in the middle of an upload resumes it: choosing the file
//     again sends only the chunks not yet committed (counted per chunk
//     index and page load by a proxy in front of the server, not by the
//     page);
//   - a connection lost in the middle of a chunk (the proxy closes it
//     without an answer) is survived: the chunk is sent again;
//   - the page served from another origin, once the person confirms the
//     server its link names, lists, uploads, downloads and deletes through
//     --cors-origin, and fails against a server without it;
//   - the page fits a 390 px wide screen.
//
// It writes screenshots to test-output/ and logs the upload and download
// rates of the 64 MiB file. Not parallel: the rates are measured with
// nothing else running.
func TestBrowser(t *testing.T) {
	env := requireBrowser(t)
	for _, backend := range []string{"disk", "s3"} {
		t.Run(backend, func(t *testing.T) {
			testBrowser(t, env, backend)
		})
	}
}

// resumeHoldFrom is the first chunk index the counting proxy holds, and
// never forwards, in the page's first load.
const resumeHoldFrom = 3

// droppedChunk is the chunk index whose first PutChunk the proxy answers by
// closing the connection, as a lost connection would.
const droppedChunk = 1

func testBrowser(t *testing.T, env browserEnv, backend string) {
	// The page from another origin: the same embedded assets on another
	// port, allowed to connect to both servers (so that it is CORS, not the
	// page's Content-Security-Policy, that stops it at noCors).
	other := httptest.NewUnstartedServer(nil)
	otherURL := "http://" + other.Listener.Addr().String()

	var srv *server
	switch backend {
	case "s3":
		srv, _, _ = startS3Server(t, "--cors-origin", otherURL)
	default:
		srv = startServer(t, "--data", t.TempDir(), "--cors-origin", otherURL)
	}
	noCors := startServer(t, "--data", t.TempDir())
	other.Config.Handler = web.Handler(web.Options{PageServers: []string{srv.url, noCors.url}})
	other.Start()
	t.Cleanup(other.Close)
	proxy := newChunkProxy(t, srv.url, resumeHoldFrom)

	dir := t.TempDir()
	files := map[string]string{
		"small":  filepath.Join(dir, "small.txt"),
		"mid":    filepath.Join(dir, "mid.bin"),
		"big":    filepath.Join(dir, "big.bin"),
		"resume": filepath.Join(dir, "resume.bin"),
		"cross":  filepath.Join(dir, "cross.txt"),
	}
	text := strings.Repeat("ferry carries files over gRPC-Web from a browser.\n", 60)
	for name, body := range map[string]string{"small": text, "cross": "from another origin\n" + text} {
		if err := os.WriteFile(files[name], []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, size := range map[string]int64{"mid": 13 << 20, "big": 64 << 20, "resume": 6 * 8 << 20} {
		if err := writeRandom(files[name], size, uint64(len(name))*7919); err != nil {
			t.Fatal(err)
		}
	}
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	outDir := filepath.Join(root, "test-output")
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	downloads := t.TempDir()
	cfg := map[string]any{
		"chromium":  env.chromium,
		"pageUrl":   srv.url + "/",
		"proxyUrl":  proxy.url + "/",
		"heldUrl":   proxy.url + heldPath,
		"holdFrom":  resumeHoldFrom,
		"crossUrl":  other.URL + "/?server=" + url.QueryEscape(srv.url),
		"noCorsUrl": other.URL + "/?server=" + url.QueryEscape(noCors.url),
		// Once is enough to show what Blob request bodies gain.
		"compareBodies":   backend == "disk",
		"files":           files,
		"downloadDir":     downloads,
		"screenshot":      filepath.Join(outDir, "browser-"+backend+".png"),
		"phoneScreenshot": filepath.Join(outDir, "browser-"+backend+"-phone.png"),
	}
	cfgPath := filepath.Join(dir, "config.json")
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
		t.Fatal(err)
	}

	started := time.Now()
	var res browserResult
	if err := json.Unmarshal(runBrowserScript(t, env, "browser.mjs", cfgPath), &res); err != nil {
		t.Fatalf("browser.mjs RESULT: %v", err)
	}
	t.Logf("%s: browser run took %.1f s; 64 MiB upload %.1f MiB/s (%v ms), download %.1f MiB/s (%v ms)",
		backend, time.Since(started).Seconds(), res.UploadMiBs, res.UploadMs, res.DownloadMiBs, res.DownloadMs)
	summary := fmt.Sprintf("backend=%s upload_MiBps=%.1f download_MiBps=%.1f upload_ms=%.0f download_ms=%.0f browser_run_s=%.1f",
		backend, res.UploadMiBs, res.DownloadMiBs, res.UploadMs, res.DownloadMs, time.Since(started).Seconds())
	if res.BytesBodyUploadMiBs > 0 {
		summary += fmt.Sprintf(" uint8array_body_upload_MiBps=%.1f blob_body_speedup=%.2fx",
			res.BytesBodyUploadMiBs, res.UploadMiBs/res.BytesBodyUploadMiBs)
		t.Logf("%s: Uint8Array fetch bodies (baseline): %.1f MiB/s; Blob bodies %.2fx that", backend, res.BytesBodyUploadMiBs, res.UploadMiBs/res.BytesBodyUploadMiBs)
	}
	summary += "\n"
	if err := os.WriteFile(filepath.Join(outDir, "browser-"+backend+".txt"), []byte(summary), 0o644); err != nil {
		t.Error(err)
	}

	// What the browser uploaded is stored byte for byte (read back with
	// the CLI, which shares no code with the page).
	for _, name := range []string{"small", "mid", "big", "resume"} {
		key := filepath.Base(files[name])
		out := filepath.Join(t.TempDir(), key)
		mustFerry(t, "download", "--server", srv.url, key, out)
		requireSameFile(t, files[name], out)
	}
	// What the browser downloaded is the files' bytes.
	for _, name := range []string{"small", "mid", "big", "cross"} {
		requireSameFile(t, files[name], filepath.Join(downloads, filepath.Base(files[name])))
	}
	// The cross-origin page deleted its file.
	if r := ferry(t, "stat", "--server", srv.url, filepath.Base(files["cross"])); r.err == nil {
		t.Errorf("cross.txt still exists after the page deleted it:\n%s", r.stdout)
	}
	// The reload resumed: every chunk reached the server exactly once, the
	// first load sending those below resumeHoldFrom and the second the
	// rest, and the reload cut off at least one held chunk.
	chunks := int64(fileSize(t, files["resume"]) / (8 << 20))
	proxy.mu.Lock()
	defer proxy.mu.Unlock()
	for i := range chunks {
		run := "1"
		if i >= resumeHoldFrom {
			run = "2"
		}
		if n := proxy.forwarded[chunkSend{run, i}]; n != 1 {
			t.Errorf("resumed upload: chunk %d was sent to the server %d times by page load %s, want once (all: %v)", i, n, run, proxy.forwarded)
		}
	}
	if len(proxy.forwarded) != int(chunks) {
		t.Errorf("resumed upload: chunks sent %v, want 0..%d once each", proxy.forwarded, chunks-1)
	}
	if proxy.dropped != 1 {
		t.Errorf("the proxy dropped %d connections carrying chunk %d, want 1", proxy.dropped, droppedChunk)
	}
	if proxy.cut == 0 {
		t.Errorf("no held chunk was cut off by the reload: the page was not reloaded mid-upload")
	}
	if proxy.errs != nil {
		t.Error(errors.Join(proxy.errs...))
	}
}

// Tokens of TestBrowserTokenStaysWithItsServer: pageToken is ferry's (it
// may read and write every key), listedToken the listed server's.
const (
	pageToken   = "page-secret-token-0123456789"
	listedToken = "listed-secret-token-0123456789"
)

// TestBrowserTokenStaysWithItsServer attacks the page's token in a real
// Chromium against the real `ferry serve`: two servers on loopback record
// every connection and request (method, path, headers), an attacker's
// that the operator did not list with --page-server and another that the
// operator did. With a token entered for the page's own origin, the same
// tab follows links to /?server=ATTACKER and /?server=LISTED, then the
// person switches servers by hand (web/e2e/servers.mjs). It proves:
//   - a server named by a link is not contacted, nor connected to, until
//     the person confirms it, and the page names it in its question;
//   - the page's Content-Security-Policy lets it connect only to its own
//     origin and the --page-server origins: a fetch to the attacker made
//     by a script in the page, token and all, is blocked by the browser
//     and never reaches it; once chosen anyway, the page explains that its
//     policy forbids it, and the attacker gets nothing, ever;
//   - a server chosen from a link or by hand starts with no token: the
//     listed server is asked without Authorization, and no request to
//     either server ever carries the page's token;
//   - a token entered for the listed server reaches it, and switching
//     back by hand restores the own server's token (its listing works).
//
// It also checks, against the binary, that --page-server is validated and
// reaches the policy, and that malformed page paths get a 4xx.
func TestBrowserTokenStaysWithItsServer(t *testing.T) {
	env := requireBrowser(t)
	attacker := newRecorder(t)
	listed := newRecorder(t)
	tokens := writeTokenFile(t, map[string]any{"name": "page", "token": pageToken, "read": []string{""}, "write": []string{""}})
	srv := startServer(t, "--data", t.TempDir(), "--token-file", tokens, "--page-server", listed.url+"/")

	res, err := http.Get(srv.url + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if csp, want := res.Header.Get("Content-Security-Policy"), "connect-src 'self' "+listed.url+";"; !strings.Contains(csp, want) {
		t.Fatalf("the page's Content-Security-Policy %q lacks %q", csp, want)
	}
	for path, status := range map[string]int{"/%ff": 400, "/%00": 400, "/app.js%00": 400, "/missing.js": 404, "/" + strings.Repeat("x", 4000): 404} {
		res, err := http.Get(srv.url + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != status {
			t.Errorf("GET %.40s: status %d, want %d", path, res.StatusCode, status)
		}
	}

	control := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := map[string]*recorder{"attacker": attacker, "listed": listed}[r.URL.Query().Get("of")]
		if r.URL.Path != "/requests" || rec == nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(rec.snapshot())
	}))
	t.Cleanup(control.Close)

	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	outDir := filepath.Join(root, "test-output")
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(t.TempDir(), "config.json")
	b, _ := json.Marshal(map[string]any{
		"chromium":    env.chromium,
		"pageUrl":     srv.url + "/",
		"attackerUrl": attacker.url,
		"listedUrl":   listed.url,
		"controlUrl":  control.URL,
		"pageToken":   pageToken,
		"listedToken": listedToken,
		"screenshot":  filepath.Join(outDir, "browser-server-prompt.png"),
	})
	if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	// What the two servers saw over the whole run, checked even when the
	// script fails.
	defer func() {
		if got := attacker.snapshot(); got.Connections != 0 || len(got.Requests) != 0 {
			t.Errorf("the attacker's server got %d connections and %d requests, want none: %+v", got.Connections, len(got.Requests), got.Requests)
		}
		got := listed.snapshot()
		var authorized int
		for _, q := range got.Requests {
			for name, vs := range q.Header {
				for _, v := range vs {
					if strings.Contains(v, pageToken) {
						t.Errorf("the listed server got the page's token in %s: %s %s", name, q.Method, q.Path)
					}
				}
			}
			if a := q.Header.Get("Authorization"); a != "" {
				authorized++
				if a != "Bearer "+listedToken {
					t.Errorf("the listed server got Authorization %q, want only its own token", a)
				}
			}
		}
		if authorized == 0 && !t.Failed() {
			t.Errorf("the listed server never got the token entered for it (requests: %+v)", got.Requests)
		}
	}()
	runBrowserScript(t, env, "servers.mjs", cfgPath)
}

// TestPageServerFlag checks that ferry serve refuses a --page-server that
// is not an http(s) origin, with a usage error (exit status 2) naming it.
func TestPageServerFlag(t *testing.T) {
	for _, bad := range []string{"ftp://ferry.example.com", "ferry.example.com:8080", "https://ferry.example.com/path", "*", "https://a.example; connect-src *"} {
		r := ferry(t, "serve", "--addr", "127.0.0.1:0", "--data", t.TempDir(), "--page-server", bad)
		var exit *exec.ExitError
		if !errors.As(r.err, &exit) || exit.ExitCode() != 2 {
			t.Errorf("ferry serve --page-server %q: %v, want exit status 2\n%s", bad, r.err, r.stderr)
			continue
		}
		if !strings.Contains(r.stderr, "--page-server") || !strings.Contains(r.stderr, "is not an http or https origin") {
			t.Errorf("ferry serve --page-server %q: unclear error:\n%s", bad, r.stderr)
		}
	}
}

// recorder is an HTTP server on loopback that records every connection and
// request it gets and answers like a permissive ferry: any origin may call
// it (CORS), and ListObjects is answered with no objects given
// listedToken, else UNAUTHENTICATED.
type recorder struct {
	url string

	mu          sync.Mutex
	connections int
	requests    []recordedRequest
}

// recordedRequest is one request a recorder got.
type recordedRequest struct {
	Method string      `json:"method"`
	Path   string      `json:"path"`
	Header http.Header `json:"header"`
}

// recording is what a recorder got so far.
type recording struct {
	Connections int               `json:"connections"`
	Requests    []recordedRequest `json:"requests"`
}

func newRecorder(t *testing.T) *recorder {
	rec := &recorder{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.mu.Lock()
		rec.requests = append(rec.requests, recordedRequest{Method: r.Method, Path: r.URL.RequestURI(), Header: r.Header.Clone()})
		rec.mu.Unlock()
		io.Copy(io.Discard, r.Body)
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", cmp.Or(r.Header.Get("Origin"), "*"))
		if r.Method == http.MethodOptions {
			h.Set("Access-Control-Allow-Methods", "GET, POST")
			h.Set("Access-Control-Allow-Headers", r.Header.Get("Access-Control-Request-Headers"))
			w.WriteHeader(http.StatusNoContent)
			return
		}
		h.Set("Access-Control-Expose-Headers", "Grpc-Status, Grpc-Message")
		h.Set("Content-Type", "application/grpc-web+proto")
		if r.Header.Get("Authorization") != "Bearer "+listedToken {
			h.Set("Grpc-Status", "16")
			h.Set("Grpc-Message", "no valid token")
			return
		}
		// An empty ListObjectsResponse, then the trailers.
		trailer := "grpc-status: 0\r\n"
		body := []byte{0, 0, 0, 0, 0, 0x80}
		body = binary.BigEndian.AppendUint32(body, uint32(len(trailer)))
		w.Write(append(body, trailer...))
	}))
	srv.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			rec.mu.Lock()
			rec.connections++
			rec.mu.Unlock()
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	rec.url = srv.URL
	return rec
}

func (rec *recorder) snapshot() recording {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return recording{Connections: rec.connections, Requests: append([]recordedRequest{}, rec.requests...)}
}

// browserResult is the RESULT line of web/e2e/browser.mjs.
type browserResult struct {
	UploadMiBs   float64 `json:"uploadMiBs"`
	UploadMs     float64 `json:"uploadMs"`
	DownloadMiBs float64 `json:"downloadMiBs"`
	DownloadMs   float64 `json:"downloadMs"`
	// The same upload with Uint8Array fetch bodies, when compareBodies.
	BytesBodyUploadMiBs float64 `json:"bytesBodyUploadMiBs"`
}

// runBrowserScript runs the e2e script (a file in web/e2e) with cfgPath
// and returns the JSON of its RESULT line.
func runBrowserScript(t *testing.T, env browserEnv, script, cfgPath string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), browserTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, env.node, filepath.Join(env.e2e, script), cfgPath)
	cmd.Dir = filepath.Dir(env.e2e) // web/, for node_modules
	cmd.SysProcAttr = childProcAttr()
	// Chromium leaves files in its temp dir; keep them in the test's.
	cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	t.Logf("node %s:\n%s", script, out.String())
	if err != nil {
		t.Fatalf("browser script %s: %v", script, errors.Join(err, ctx.Err()))
	}
	var res []byte
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if s, ok := strings.CutPrefix(sc.Text(), "RESULT "); ok {
			res = []byte(s)
		}
	}
	if res == nil {
		t.Fatalf("browser script %s printed no RESULT line", script)
	}
	return res
}

// heldPath is the proxy's own endpoint that answers the number of
// PutChunk requests it holds.
const heldPath = "/__test/held"

// chunkSend is a PutChunk request as the chunk proxy counts it: the page
// load it came from (the "run" query parameter of its Referer) and the
// chunk index.
type chunkSend struct {
	run   string
	index int64
}

func (c chunkSend) String() string { return fmt.Sprintf("run %s chunk %d", c.run, c.index) }

// chunkProxy is a reverse proxy in front of a ferry server that counts the
// gRPC-Web PutChunk requests it forwards, by page load and chunk index.
// It tells page loads apart by the Referer the browser sends with each
// fetch (the page's URL, ?run=1 or ?run=2), not by when requests arrive,
// so no timing decides what it counts. It closes the connection of the
// first PutChunk of droppedChunk without forwarding it, and holds the
// PutChunk requests of chunks >= holdFrom from run 1 until their client
// goes away, never forwarding them: the chunks the reload cut off.
type chunkProxy struct {
	url      string
	holdFrom int64

	mu        sync.Mutex
	forwarded map[chunkSend]int // PutChunk requests forwarded
	held      int               // requests being held now
	cut       int               // held requests whose client went away
	dropped   int               // connections closed instead of forwarding
	errs      []error
}

func newChunkProxy(t *testing.T, target string, holdFrom int64) *chunkProxy {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &chunkProxy{holdFrom: holdFrom, forwarded: map[chunkSend]int{}}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1 // server streams pass through as they come
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == heldPath {
			p.mu.Lock()
			n := p.held
			p.mu.Unlock()
			fmt.Fprint(w, n)
			return
		}
		if strings.HasSuffix(r.URL.Path, "/ferry.v1.UploadService/PutChunk") {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				return // the client went away
			}
			index, err := putChunkIndex(r.Header.Get("Content-Type"), body)
			if err != nil {
				p.fail(err)
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			send := chunkSend{run: refererRun(r), index: index}
			if send.run != "1" && send.run != "2" {
				err := fmt.Errorf("PutChunk of chunk %d with Referer %q, want a page loaded with ?run=1 or ?run=2", index, r.Referer())
				p.fail(err)
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			p.mu.Lock()
			drop := index == droppedChunk && p.dropped == 0
			if drop {
				p.dropped++
			}
			p.mu.Unlock()
			if drop {
				if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
					conn.Close()
				} else {
					p.fail(fmt.Errorf("drop the connection of chunk %d: %w", index, err))
				}
				return
			}
			if send.run == "1" && index >= p.holdFrom {
				p.mu.Lock()
				p.held++
				p.mu.Unlock()
				select {
				case <-r.Context().Done():
					p.mu.Lock()
					p.cut++
					p.mu.Unlock()
				case <-stop:
				}
				p.mu.Lock()
				p.held--
				p.mu.Unlock()
				return
			}
			p.mu.Lock()
			p.forwarded[send]++
			p.mu.Unlock()
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(stop) }) // runs before srv.Close
	p.url = srv.URL
	return p
}

// refererRun returns the "run" query parameter of r's Referer, "" if none.
func refererRun(r *http.Request) string {
	ref, err := url.Parse(r.Referer())
	if err != nil {
		return ""
	}
	return ref.Query().Get("run")
}

func (p *chunkProxy) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.errs = append(p.errs, err)
}

// putChunkIndex decodes the chunk index of a gRPC-Web PutChunk request
// body: one uncompressed frame (flags byte 0, 4-byte big-endian length)
// holding a ferry.v1.PutChunkRequest.
func putChunkIndex(contentType string, body []byte) (int64, error) {
	if !slices.Contains([]string{"application/grpc-web", "application/grpc-web+proto"}, contentType) {
		return 0, fmt.Errorf("PutChunk with Content-Type %q, want gRPC-Web", contentType)
	}
	if len(body) < 5 || body[0] != 0 || int(binary.BigEndian.Uint32(body[1:5])) != len(body)-5 {
		return 0, fmt.Errorf("PutChunk body of %d bytes is not one uncompressed gRPC-Web frame", len(body))
	}
	var req ferryv1.PutChunkRequest
	if err := proto.Unmarshal(body[5:], &req); err != nil {
		return 0, fmt.Errorf("PutChunk request: %w", err)
	}
	return req.GetChunk().GetIndex(), nil
}
