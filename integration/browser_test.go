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
	node, chromium, script string
}

// requireBrowser returns the Node.js, Chromium and e2e script the browser
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
		script:   filepath.Join(root, "web", "e2e", "browser.mjs"),
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
//     index by a proxy in front of the server, not by the page);
//   - a connection lost in the middle of a chunk (the proxy closes it
//     without an answer) is survived: the chunk is sent again;
//   - the page served from another origin lists, uploads, downloads and
//     deletes through --cors-origin, and fails against a server without it;
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

// resumeGateFrom is the first chunk index the counting proxy holds until
// the page has been reloaded.
const resumeGateFrom = 3

// droppedChunk is the chunk index whose first PutChunk the proxy answers by
// closing the connection, as a lost connection would.
const droppedChunk = 1

func testBrowser(t *testing.T, env browserEnv, backend string) {
	// The page from another origin: the same embedded assets on another port.
	other := httptest.NewServer(web.Handler())
	t.Cleanup(other.Close)

	var srv *server
	switch backend {
	case "s3":
		srv, _, _ = startS3Server(t, "--cors-origin", other.URL)
	default:
		srv = startServer(t, "--data", t.TempDir(), "--cors-origin", other.URL)
	}
	noCors := startServer(t, "--data", t.TempDir())
	proxy := newChunkProxy(t, srv.url, resumeGateFrom)

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
		"gateUrl":   proxy.url + gatePath,
		"heldUrl":   proxy.url + heldPath,
		"gateFrom":  resumeGateFrom,
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
	res := runBrowserScript(t, env, cfgPath)
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
	// The reload resumed: every chunk reached the server exactly once, and
	// the reload cut off at least one held chunk.
	chunks := int64(fileSize(t, files["resume"]) / (8 << 20))
	proxy.mu.Lock()
	defer proxy.mu.Unlock()
	for i := range chunks {
		if n := proxy.forwarded[i]; n != 1 {
			t.Errorf("resumed upload: chunk %d was sent to the server %d times, want once (all: %v)", i, n, proxy.forwarded)
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

// browserResult is the RESULT line of web/e2e/browser.mjs.
type browserResult struct {
	UploadMiBs   float64 `json:"uploadMiBs"`
	UploadMs     float64 `json:"uploadMs"`
	DownloadMiBs float64 `json:"downloadMiBs"`
	DownloadMs   float64 `json:"downloadMs"`
	// The same upload with Uint8Array fetch bodies, when compareBodies.
	BytesBodyUploadMiBs float64 `json:"bytesBodyUploadMiBs"`
}

// runBrowserScript runs the e2e script with cfgPath and returns its RESULT.
func runBrowserScript(t *testing.T, env browserEnv, cfgPath string) browserResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), browserTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, env.node, env.script, cfgPath)
	cmd.Dir = filepath.Dir(filepath.Dir(env.script)) // web/, for node_modules
	cmd.SysProcAttr = childProcAttr()
	// Chromium leaves files in its temp dir; keep them in the test's.
	cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	t.Logf("node %s:\n%s", filepath.Base(env.script), out.String())
	if err != nil {
		t.Fatalf("browser script: %v", errors.Join(err, ctx.Err()))
	}
	var res browserResult
	sc := bufio.NewScanner(&out)
	found := false
	for sc.Scan() {
		if s, ok := strings.CutPrefix(sc.Text(), "RESULT "); ok {
			found = json.Unmarshal([]byte(s), &res) == nil
		}
	}
	if !found {
		t.Fatal("browser script printed no RESULT line")
	}
	return res
}

// The proxy's own endpoints: gatePath lets held chunks through; heldPath
// answers the number of PutChunk requests being held.
const (
	gatePath = "/__test/open-gate"
	heldPath = "/__test/held"
)

// chunkProxy is a reverse proxy in front of a ferry server that counts,
// per chunk index, the gRPC-Web PutChunk requests it forwards, holds those
// of index >= gateFrom until gatePath is requested, and closes the
// connection of the first PutChunk of droppedChunk without forwarding it.
type chunkProxy struct {
	url      string
	gateFrom int64
	open     chan struct{}
	openOnce sync.Once

	mu        sync.Mutex
	forwarded map[int64]int // PutChunk requests forwarded, by chunk index
	held      int           // requests being held now
	cut       int           // held requests whose client went away
	dropped   int           // connections closed instead of forwarding
	errs      []error
}

func newChunkProxy(t *testing.T, target string, gateFrom int64) *chunkProxy {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &chunkProxy{gateFrom: gateFrom, open: make(chan struct{}), forwarded: map[int64]int{}}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1 // server streams pass through as they come
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == gatePath {
			p.openOnce.Do(func() { close(p.open) })
			w.WriteHeader(http.StatusNoContent)
			return
		}
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
			if index >= p.gateFrom {
				p.mu.Lock()
				p.held++
				p.mu.Unlock()
				var cut bool
				select {
				case <-p.open:
				case <-r.Context().Done():
					cut = true
				}
				p.mu.Lock()
				p.held--
				if cut {
					p.cut++
				}
				p.mu.Unlock()
				if cut {
					return
				}
			}
			p.mu.Lock()
			p.forwarded[index]++
			p.mu.Unlock()
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { p.openOnce.Do(func() { close(p.open) }) })
	p.url = srv.URL
	return p
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
