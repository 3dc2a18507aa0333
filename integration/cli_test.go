package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
)

// cliJSON is what `ferry upload --json` and `ferry download --json` print.
type cliJSON struct {
	Key     string  `json:"key"`
	Size    int64   `json:"size"`
	CRC32C  string  `json:"crc32c"`
	Seconds float64 `json:"seconds"`
	Resumed bool    `json:"resumed"`
}

// cliProcess is one ferry CLI process the test started and may kill.
type cliProcess struct {
	cmd            *exec.Cmd
	stdout, stderr lockedBuffer
	done           chan struct{}
	err            error
}

// startCLI starts the ferry CLI with args, extra environment variables
// (KEY=VALUE) and stdin (nil for none), without waiting for it.
func startCLI(t testing.TB, stdin io.Reader, env []string, args ...string) *cliProcess {
	t.Helper()
	p := &cliProcess{cmd: exec.Command(ferryBin, args...), done: make(chan struct{})}
	p.cmd.Env = append(cliEnv(), env...)
	p.cmd.Stdin = stdin
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	p.cmd.SysProcAttr = childProcAttr()
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start ferry %s: %v", strings.Join(args, " "), err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// wait waits for the process to exit and returns its exit status.
func (p *cliProcess) wait(t testing.TB) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(cliTimeout):
		t.Fatalf("ferry %s did not exit within %v", strings.Join(p.cmd.Args[1:], " "), cliTimeout)
	}
	var exit *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &exit):
		return exit.ExitCode()
	default:
		t.Fatalf("ferry: %v", p.err)
		return -1
	}
}

// exited reports whether the process has exited.
func (p *cliProcess) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// runCLI runs the ferry CLI to the end and returns its exit status, stdout
// and stderr.
func runCLI(t testing.TB, stdin io.Reader, env []string, args ...string) (int, string, string) {
	t.Helper()
	p := startCLI(t, stdin, env, args...)
	code := p.wait(t)
	return code, p.stdout.String(), p.stderr.String()
}

// decodeCLIJSON decodes the one JSON object a --json command printed.
func decodeCLIJSON(t testing.TB, stdout string) cliJSON {
	t.Helper()
	var r cliJSON
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatalf("--json output %q: %v", stdout, err)
	}
	return r
}

// waitFor polls cond every 10 ms until it is true, failing the test after
// timeout or when the process p exits first.
func waitFor(t testing.TB, p *cliProcess, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if p != nil && p.exited() {
			t.Fatalf("ferry exited before %s (status %v)\nstdout: %s\nstderr: %s", what, p.err, p.stdout.String(), p.stderr.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// throttleProxy is a TCP proxy on a free loopback port that forwards every
// connection to a target at a bounded rate in each direction (bytes per
// second shared by all connections), so that a transfer lasts long enough
// to be killed in the middle, and that counts the bytes it forwards.
type throttleProxy struct {
	addr   string
	target string
	rate   int64
	ln     net.Listener
	// forwarded counts bytes in each direction: [0] client→server,
	// [1] server→client.
	forwarded [2]atomic.Int64
	mu        sync.Mutex
	next      [2]time.Time // when each direction may send its next block
	wg        sync.WaitGroup
}

// startThrottleProxy starts a proxy to target (host:port) passing at most
// rate bytes per second each way, closed when the test ends.
func startThrottleProxy(t testing.TB, target string, rate int64) *throttleProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &throttleProxy{addr: ln.Addr().String(), target: target, rate: rate, ln: ln}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.wg.Wait()
	})
	return p
}

func (p *throttleProxy) url() string { return "http://" + p.addr }

func (p *throttleProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serve(c)
		}()
	}
}

func (p *throttleProxy) serve(client net.Conn) {
	defer client.Close()
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer server.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn, dir int) {
		defer func() { done <- struct{}{} }()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				p.wait(dir, n)
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
				p.forwarded[dir].Add(int64(n))
			}
			if err != nil {
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
				return
			}
		}
	}
	go pipe(server, client, 0)
	go pipe(client, server, 1)
	<-done
	<-done
}

// wait sleeps until n more bytes may pass in direction dir.
func (p *throttleProxy) wait(dir, n int) {
	p.mu.Lock()
	now := time.Now()
	at := p.next[dir]
	if at.Before(now) {
		at = now
	}
	p.next[dir] = at.Add(time.Duration(int64(n) * int64(time.Second) / p.rate))
	p.mu.Unlock()
	time.Sleep(at.Sub(now))
}

// TestCLIUploadKilled kills `ferry upload` with SIGKILL in the middle of a
// multi-chunk upload to S3, runs the same command again, and checks that it
// continues the same upload (its state was recorded when the upload was
// created, before any chunk), sends about only the chunks that were not
// committed, and stores the file byte for byte.
func TestCLIUploadKilled(t *testing.T) {
	t.Parallel()
	const (
		size  = 60 << 20
		chunk = 5 << 20
	)
	srv, _, _ := startS3Server(t)
	proxy := startThrottleProxy(t, srv.addr, 40<<20)
	file := generated(t, size, 41)
	cache := t.TempDir()
	env := []string{"FERRY_CACHE_DIR=" + cache}
	args := []string{"upload", "--json", "--server", proxy.url(), "--protocol", "grpc", "--concurrency", "2", "--chunk-size", "5MiB", file, "killed/upload.bin"}

	first := startCLI(t, nil, env, args...)
	var uploadID string
	waitFor(t, first, time.Minute, "upload state under FERRY_CACHE_DIR", func() bool {
		uploadID = recordedUploadID(t, cache)
		return uploadID != ""
	})
	client := ferryv1connect.NewUploadServiceClient(httpClient("connect"), srv.url)
	var committed map[int64]*ferryv1.CommittedChunk
	waitFor(t, first, time.Minute, "3 committed chunks", func() bool {
		var err error
		committed, err = faultCommitted(context.Background(), client, uploadID)
		return err == nil && len(committed) >= 3
	})
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.wait(t)
	committed, err := faultCommitted(context.Background(), client, uploadID)
	if err != nil {
		t.Fatalf("upload %s after the kill: %v", uploadID, err)
	}
	if len(committed) == size/chunk {
		t.Fatalf("every chunk was committed before the kill: the test proves nothing; slow the proxy")
	}
	if _, err := ferryv1connect.NewObjectServiceClient(httpClient("connect"), srv.url).StatObject(context.Background(),
		connect.NewRequest(&ferryv1.StatObjectRequest{Key: "killed/upload.bin"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("the object is visible before its upload completed: %v", err)
	}

	before := proxy.forwarded[0].Load()
	code, stdout, stderr := runCLI(t, nil, env, args...)
	sent := proxy.forwarded[0].Load() - before
	if code != 0 {
		t.Fatalf("second run: status %d\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "continuing upload "+uploadID) {
		t.Errorf("second run did not continue upload %s: stderr %q", uploadID, stderr)
	}
	res := decodeCLIJSON(t, stdout)
	if !res.Resumed || res.Size != size {
		t.Errorf("second run printed %+v; want resumed, size %d", res, size)
	}
	missing := int64(size - len(committed)*chunk)
	t.Logf("killed with %d of %d chunks committed; the second run sent %d bytes for the %d missing", len(committed), size/chunk, sent, missing)
	// A chunk whose last byte reached the server just before the kill may
	// have been committed after the count above, so fewer bytes may go.
	if sent > missing+1<<20 {
		t.Errorf("second run sent %d bytes; want at most the %d bytes of the missing chunks (+ 1 MiB of protocol)", sent, missing)
	}
	if got := recordedUploadID(t, cache); got != "" {
		t.Errorf("upload state %s is left after success", got)
	}
	requireDownloadedCLI(t, srv.url, "killed/upload.bin", file)
}

// recordedUploadID returns the upload ID of the one upload state file
// under cache, or "" when there is none.
func recordedUploadID(t testing.TB, cache string) string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(cache, "ferry", "uploads", "*.json"))
	if err != nil || len(paths) == 0 {
		return ""
	}
	b, err := os.ReadFile(paths[0])
	if err != nil {
		return ""
	}
	var state struct {
		UploadID string `json:"upload_id"`
	}
	if json.Unmarshal(b, &state) != nil {
		return ""
	}
	return state.UploadID
}

// requireDownloadedCLI downloads key with the CLI and compares it with the
// file want.
func requireDownloadedCLI(t testing.TB, url, key, want string) {
	t.Helper()
	got := filepath.Join(t.TempDir(), "downloaded")
	mustFerry(t, "download", "--server", url, key, got)
	requireSameFile(t, want, got)
}

// TestCLIDownloadKilled kills `ferry download` with SIGKILL in the middle of
// a parallel ranged download, runs the same command again, and checks that
// it continues from the gapless prefix it had recorded (receiving about
// only the rest) and that the file is byte for byte the object.
func TestCLIDownloadKilled(t *testing.T) {
	t.Parallel()
	const size = 60 << 20
	srv, _, _ := startS3Server(t)
	file := generated(t, size, 42)
	mustFerry(t, "upload", "--server", srv.url, file, "killed/download.bin")
	proxy := startThrottleProxy(t, srv.addr, 40<<20)
	out := filepath.Join(t.TempDir(), "out.bin")
	state := out + ".ferry-part.etag"
	args := []string{"download", "--json", "--server", proxy.url(), "--concurrency", "2", "--chunk-size", "4MiB", "killed/download.bin", out}

	first := startCLI(t, nil, nil, args...)
	var written int64
	waitFor(t, first, time.Minute, "12 MiB recorded in "+state, func() bool {
		var st struct {
			ETag    string `json:"etag"`
			Written int64  `json:"written"`
		}
		b, err := os.ReadFile(state)
		if err != nil || json.Unmarshal(b, &st) != nil {
			return false
		}
		written = st.Written
		return st.ETag != "" && written >= 12<<20
	})
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.wait(t)
	if _, err := os.Stat(out); err == nil {
		t.Fatalf("%s exists after the kill: the download finished before it", out)
	}

	before := proxy.forwarded[1].Load()
	code, stdout, stderr := runCLI(t, nil, nil, args...)
	received := proxy.forwarded[1].Load() - before
	if code != 0 {
		t.Fatalf("second run: status %d\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "continuing the download from the ") {
		t.Errorf("second run did not continue: stderr %q", stderr)
	}
	if res := decodeCLIJSON(t, stdout); !res.Resumed || res.Size != size {
		t.Errorf("second run printed %+v; want resumed, size %d", res, size)
	}
	t.Logf("killed with at least %d bytes recorded; the second run received %d bytes of %d", written, received, size)
	if rest := int64(size) - written; received > rest+1<<20 {
		t.Errorf("second run received %d bytes; want at most the %d bytes not recorded (+ 1 MiB of protocol)", received, rest)
	}
	requireSameFile(t, file, out)
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("%s is left after success: %v", state, err)
	}
}

// TestCLIStdinUpload uploads from standard input, whose size the CLI cannot
// know: small input (one chunk) and input of several chunks, over each
// protocol, and downloads each back to standard output.
func TestCLIStdinUpload(t *testing.T) {
	t.Parallel()
	srv, _, _ := startS3Server(t)
	for _, tc := range []struct {
		name string
		size int64
	}{{"small", 100 << 10}, {"chunks", 3*chunkSize + 12345}} {
		for _, protocol := range protocols {
			t.Run(tc.name+"/"+protocol, func(t *testing.T) {
				t.Parallel()
				file := generated(t, tc.size, uint64(50+tc.size))
				f, err := os.Open(file)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				key := "stdin/" + tc.name + "-" + protocol
				code, stdout, stderr := runCLI(t, f, nil, "upload", "--json", "--server", srv.url, "--protocol", protocol, "--chunk-size", chunkSizeFlag, "-", key)
				if code != 0 {
					t.Fatalf("upload -: status %d\n%s", code, stderr)
				}
				if res := decodeCLIJSON(t, stdout); res.Size != tc.size || res.Key != key {
					t.Errorf("upload - printed %+v; want key %s, size %d", res, key, tc.size)
				}
				code, data, stderr := runCLI(t, nil, nil, "download", "--quiet", "--server", srv.url, "--protocol", protocol, key, "-")
				want, err := os.ReadFile(file)
				if err != nil {
					t.Fatal(err)
				}
				if code != 0 || !bytes.Equal([]byte(data), want) {
					t.Fatalf("download - gave status %d and %d bytes (want %d); stderr %q", code, len(data), len(want), stderr)
				}
			})
		}
	}
}

// TestCLIExitStatus checks the exit statuses scripts rely on: 2 for a
// command line that cannot run, 1 for a failed call (with its Connect
// code in the message), and 130 for Ctrl-C in the middle of an upload,
// which says how to continue; the same command then finishes it.
func TestCLIExitStatus(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--data", t.TempDir())
	if code, _, stderr := runCLI(t, nil, nil, "upload", "--server", srv.url, "only-one-arg"); code != 2 || !strings.Contains(stderr, "--help") {
		t.Errorf("usage error: status %d, stderr %q; want 2 and a pointer to --help", code, stderr)
	}
	if code, _, stderr := runCLI(t, nil, nil, "stat", "--server", srv.url, "no/such/key"); code != 1 || !strings.Contains(stderr, "not_found") {
		t.Errorf("missing key: status %d, stderr %q; want 1 and not_found", code, stderr)
	}
	if code, _, stderr := runCLI(t, nil, []string{"FERRY_CHUNK_SIZE=lots"}, "upload", "--server", srv.url, "x", "y"); code != 2 || !strings.Contains(stderr, "FERRY_CHUNK_SIZE") {
		t.Errorf("bad FERRY_CHUNK_SIZE: status %d, stderr %q; want 2 naming it", code, stderr)
	}

	proxy := startThrottleProxy(t, srv.addr, 20<<20)
	file := generated(t, 40<<20, 43)
	cache := t.TempDir()
	env := []string{"FERRY_CACHE_DIR=" + cache}
	args := []string{"upload", "--server", proxy.url(), "--chunk-size", "5MiB", file, "interrupted.bin"}
	p := startCLI(t, nil, env, args...)
	waitFor(t, p, time.Minute, "upload state", func() bool { return recordedUploadID(t, cache) != "" })
	time.Sleep(300 * time.Millisecond) // some chunks on their way
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t); code != 130 {
		t.Errorf("Ctrl-C: status %d; want 130\nstderr: %s", code, p.stderr.String())
	}
	if !strings.Contains(p.stderr.String(), "run the same command again") {
		t.Errorf("Ctrl-C: stderr %q does not say how to continue", p.stderr.String())
	}
	if code, _, stderr := runCLI(t, nil, env, args...); code != 0 || !strings.Contains(stderr, "continuing upload") {
		t.Fatalf("after Ctrl-C, the same command: status %d, stderr %q", code, stderr)
	}
	requireDownloadedCLI(t, srv.url, "interrupted.bin", file)
}

// TestSyncGoSource syncs the whole Go source tree ($(go env GOROOT)/src,
// thousands of files) to S3 twice: the first run uploads every file whose
// path is a valid key, the second transfers nothing. The figures are
// logged.
func TestSyncGoSource(t *testing.T) {
	if testing.Short() {
		t.Skip("the whole Go source tree takes minutes; run without -short")
	}
	t.Parallel()
	srv, _, _ := startS3Server(t)
	tree := filepath.Join(goEnv(t, "GOROOT"), "src")
	first := ferrySync(t, "--server", srv.url, "--concurrency", "8", tree, "gosrc/")
	if first.Files < 5000 || first.Failed != 0 || first.Transferred == 0 || first.Transferred+first.Skipped != first.Files {
		t.Fatalf("first sync: %+v", first)
	}
	second := ferrySync(t, "--server", srv.url, "--concurrency", "8", tree, "gosrc/")
	if second.Transferred != 0 || second.Bytes != 0 || second.Failed != 0 || second.Files != first.Files {
		t.Fatalf("second sync transferred files: %+v", second)
	}
	t.Logf("ferry sync of %s to S3: %d files (%d uploaded), %d bytes in %.1f s; second run: %d bytes in %.1f s",
		tree, first.Files, first.Transferred, first.Bytes, first.Seconds, second.Bytes, second.Seconds)
}
