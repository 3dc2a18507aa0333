//go:build linux

package integration

// Nothing leaks (issue 12, finding 12): a server killed with SIGKILL at
// any step of creating, writing or completing an upload, and a stream
// broken at any point, leave nothing that startup or the sweeper does not
// reclaim promptly: no temp files, no open multipart uploads, no manifests
// or completion records past their time.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"connectrpc.com/connect"
	"github.com/minio/minio-go/v7"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
)

// leakSweepTTL is the --upload-ttl of the server that, once every kill is
// done, must sweep away what they left: the shortest ferry serve takes, so
// that the uploads, the pending manifests and the completion records the
// kills left are past their time within a minute.
const leakSweepTTL = "1m"

// leakClean bounds how long that server may take to sweep: its TTL, then
// the sweeps' interval (a quarter of it), with room for a busy machine.
const leakClean = 4 * time.Minute

// leakRun kills a server at one chosen step of a scenario and restarts
// it when its client finds it gone, as a supervisor would.
type leakRun struct {
	t  *testing.T
	fs *faultServer
	// pending is set once the armed kill has happened and the server has
	// not been restarted since.
	pending atomic.Bool
	// restarted, when set, checks the store right after each restart,
	// before any client request.
	restarted func(t *testing.T)
	// kills counts the kills so far; kill may run on the inotify
	// goroutine while the test reads it.
	kills atomic.Int64
}

// kill kills the server with SIGKILL and waits for it to die; safe to
// call from any goroutine, once per run.
func (r *leakRun) kill() {
	if err := r.fs.kill(); err != nil {
		r.t.Errorf("kill: %v", err)
		return
	}
	r.kills.Add(1)
	r.pending.Store(true)
}

// recover restarts the server if the armed kill has happened.
func (r *leakRun) recover() {
	if !r.pending.CompareAndSwap(true, false) {
		return
	}
	if err := r.fs.restart(); err != nil {
		r.t.Fatalf("restart after the kill: %v", err)
	}
	if r.restarted != nil {
		r.restarted(r.t)
	}
}

// call runs op with faultRetryPolicy, restarting the server after a kill.
func (r *leakRun) call(ctx context.Context, what string, op func() error) {
	r.t.Helper()
	if err := faultRetryPolicy().Do(ctx, func() error {
		err := op()
		if err != nil {
			r.recover()
		}
		return err
	}); err != nil {
		r.t.Fatalf("%s: %v (code %v)", what, err, connect.CodeOf(err))
	}
}

// leakScenario uploads content under key with if_none_match through c as
// a client that retries every call would: CreateUpload, PutChunk of each
// chunk, CompleteUpload; and checks the object.
func leakScenario(ctx context.Context, r *leakRun, c ferryv1connect.UploadServiceClient, key string, content []byte) {
	r.t.Helper()
	spec := faultSpec(key, content)
	spec.IfNoneMatch = true
	var id string
	r.call(ctx, "CreateUpload", func() error {
		res, err := faultCall(ctx, func(ctx context.Context) (*connect.Response[ferryv1.CreateUploadResponse], error) {
			return c.CreateUpload(ctx, connect.NewRequest(&ferryv1.CreateUploadRequest{Spec: spec}))
		})
		if err == nil {
			id = res.Msg.GetUpload().GetUploadId()
		}
		return err
	})
	for _, ch := range splitChunks(content, faultChunkSize) {
		r.call(ctx, fmt.Sprintf("PutChunk %d", ch.GetIndex()), func() error { return faultPutChunk(ctx, c, id, ch) })
	}
	size, crc := int64(len(content)), crc32.Checksum(content, castagnoli)
	r.call(ctx, "CompleteUpload", func() error {
		res, err := faultCall(ctx, func(ctx context.Context) (*connect.Response[ferryv1.CompleteUploadResponse], error) {
			return c.CompleteUpload(ctx, connect.NewRequest(&ferryv1.CompleteUploadRequest{UploadId: id, Size: &size, Crc32C: &crc}))
		})
		if err == nil {
			faultRequireObject(r.t, res.Msg.GetObject(), key, content)
		}
		return err
	})
	r.recover() // a kill that landed after the last answer
}

// TestLeakKilled runs the upload scenario once without a fault, counting
// its store steps (S3 requests through a proxy in front of MinIO; on the
// disk store, the changes in its tmp/ and uploads/ directories, seen with
// inotify), then once per step with the server killed there (on S3 both
// before the request reaches MinIO and after MinIO answered it), each
// time restarting it and letting the client retry to the end. Every
// object must be whole, the disk store's tmp/ empty after each restart,
// and once a server with a short TTL has swept, nothing may be left but
// the objects: no temp file, no open multipart upload, no manifest, no
// completion record.
func TestLeakKilled(t *testing.T) {
	t.Parallel()
	t.Run("s3", func(t *testing.T) {
		t.Parallel()
		env := requireS3(t)
		bucket := env.newBucket(t)
		proxy := startKillProxy(t, "http://"+env.endpoint)
		s3 := s3Env{endpoint: strings.TrimPrefix(proxy.url, "http://"), accessKey: env.accessKey, secretKey: env.secretKey}
		testLeakKilled(t, s3.serveArgs(bucket), proxy, nil, func(t *testing.T, keys []string) []string {
			return s3Leftovers(t, env.client(t), bucket, keys, len(keys))
		})
	})
	t.Run("disk", func(t *testing.T) {
		t.Parallel()
		data := t.TempDir()
		w := watchDiskStore(t, data)
		testLeakKilled(t, []string{"--data", data}, w, func(t *testing.T) {
			if names := dirNames(t, filepath.Join(data, "tmp")); len(names) > 0 {
				t.Errorf("tmp/ holds %v right after the restart: startup must remove a dead server's temp files", names)
			}
		}, func(t *testing.T, keys []string) []string {
			return diskLeftovers(t, data, len(keys))
		})
	})
}

// killPoints counts the steps of a store and kills a server at one.
type killPoints interface {
	// arm makes step n (1-based, counted from now; 0 disarms) kill the
	// server with kill, and returns the steps counted since the last arm.
	arm(n int, after bool, kill func()) []string
	// hasAfter reports whether a step can also be killed after it.
	hasAfter() bool
}

func testLeakKilled(t *testing.T, args []string, points killPoints, restarted func(*testing.T), leftovers func(*testing.T, []string) []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	content := faultContent(t, faultChunkSize+1000, 500)
	fs := startFaultServer(t, args...)
	r := &leakRun{t: t, fs: fs, restarted: restarted}
	c := ferryv1connect.NewUploadServiceClient(faultHTTPClient(t, "grpc"), fs.url, connect.WithGRPC())

	points.arm(0, false, nil)
	leakScenario(ctx, r, c, "leak/clean", content)
	steps := points.arm(0, false, nil)
	if len(steps) < 8 {
		t.Fatalf("the scenario took %d store steps (%v): the counting is broken", len(steps), steps)
	}
	t.Logf("the scenario's %d store steps: %s", len(steps), strings.Join(steps, "; "))

	keys := []string{"leak/clean"}
	for n := 1; n <= len(steps); n++ {
		for _, after := range []bool{false, true} {
			if after && !points.hasAfter() {
				continue
			}
			when := "before"
			if after {
				when = "after"
			}
			key := fmt.Sprintf("leak/%02d-%s", n, when)
			keys = append(keys, key)
			kills := r.kills.Load()
			points.arm(n, after, r.kill)
			leakScenario(ctx, r, c, key, content)
			if r.kills.Load() == kills {
				// An asynchronous kill (inotify) may land just after the
				// last answer: wait for it.
				waitUntil(t, 10*time.Second, fmt.Sprintf("kill %s step %d (%s)", when, n, steps[n-1]), func() bool { return r.kills.Load() > kills })
				r.recover()
			}
			points.arm(0, false, nil)
		}
	}
	for _, key := range keys {
		faultRequireDownload(ctx, t, fs.url, key, content)
	}

	// A server with a short TTL sweeps what the kills left.
	fs.cleanup()
	sweeper := startServer(t, append(slicesClone(args), "--upload-ttl", leakSweepTTL)...)
	var left []string
	deadline := time.Now().Add(leakClean)
	for {
		if left = leftovers(t, keys); len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v after %d kills and %v of sweeps with --upload-ttl %s, left: %s", leakClean, r.kills.Load(), leakClean, leakSweepTTL, strings.Join(left, "; "))
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("%d kills; the sweeping server left nothing but the %d objects", r.kills.Load(), len(keys))
	for _, key := range keys {
		faultRequireDownload(ctx, t, sweeper.url, key, content)
	}
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }

// killProxy is a reverse proxy in front of an S3 server that counts the
// requests a ferry server makes (except bucket listings, which its
// sweeper makes at any time) and kills the server at one of them.
type killProxy struct {
	url string

	mu    sync.Mutex
	steps []string
	armed int
	after bool
	kill  func()
}

type killAfterKey struct{}

func startKillProxy(t testing.TB, target string) *killProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &killProxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = &http.Transport{}
	rp.ModifyResponse = func(resp *http.Response) error {
		kill, _ := resp.Request.Context().Value(killAfterKey{}).(func())
		if kill == nil {
			return nil
		}
		_, _ = io.Copy(io.Discard, resp.Body) // S3 answered in full
		resp.Body.Close()
		kill()
		return errAnswerLost
	}
	rp.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
		if errors.Is(err, errAnswerLost) {
			panic(http.ErrAbortHandler)
		}
		w.WriteHeader(http.StatusBadGateway)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if q := r.URL.Query(); q.Has("list-type") || q.Has("location") || !strings.Contains(strings.Trim(r.URL.Path, "/"), "/") {
			rp.ServeHTTP(w, r) // bucket-level requests: the sweeper's and startup's, at any time
			return
		}
		p.mu.Lock()
		p.steps = append(p.steps, s3Step(r))
		var kill func()
		if len(p.steps) == p.armed {
			kill, p.armed = p.kill, 0
		}
		after := p.after
		p.mu.Unlock()
		switch {
		case kill != nil && !after:
			kill()
			panic(http.ErrAbortHandler)
		case kill != nil:
			r = r.WithContext(context.WithValue(r.Context(), killAfterKey{}, kill))
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	p.url = srv.URL
	return p
}

func (p *killProxy) arm(n int, after bool, kill func()) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	steps := p.steps
	p.steps, p.armed, p.after, p.kill = nil, n, after, kill
	return steps
}

func (p *killProxy) hasAfter() bool { return true }

// s3Step names an S3 request by what it does.
func s3Step(r *http.Request) string {
	q := r.URL.Query()
	key := r.URL.Path
	if i := strings.Index(strings.TrimPrefix(key, "/"), "/"); i >= 0 {
		key = key[i+2:]
	}
	switch {
	case strings.HasPrefix(key, ".ferry/uploads/"):
		key = ".ferry/uploads/ID"
	case strings.HasPrefix(key, ".ferry/completed/"):
		key = ".ferry/completed/ID"
	default:
		key = "KEY"
	}
	var op string
	switch {
	case q.Has("uploads"):
		op = "CreateMultipartUpload"
	case q.Has("partNumber"):
		op = "UploadPart"
	case q.Has("uploadId") && r.Method == http.MethodGet:
		op = "ListParts"
	case q.Has("uploadId") && r.Method == http.MethodPost:
		op = "CompleteMultipartUpload"
	case q.Has("uploadId") && r.Method == http.MethodDelete:
		op = "AbortMultipartUpload"
	default:
		op = r.Method
	}
	return op + " " + key
}

// s3Leftovers lists what is left in bucket besides the objects: objects
// under .ferry/ and open multipart uploads of keys. stored is unused (the
// objects are listed under their keys).
func s3Leftovers(t *testing.T, c *minio.Client, bucket string, keys []string, stored int) []string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var left []string
	for obj := range c.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: ".ferry/", Recursive: true}) {
		if obj.Err != nil {
			t.Fatal(obj.Err)
		}
		left = append(left, obj.Key)
	}
	for _, key := range keys {
		for _, id := range openMultipartUploads(ctx, t, c, bucket, key) {
			left = append(left, "multipart upload of "+key+" "+id[:8]+"...")
		}
	}
	return left
}

// diskWatch counts the changes a disk store makes to its tmp/ and
// uploads/ directories (inotify) and kills a server at one of them.
type diskWatch struct {
	mu    sync.Mutex
	steps []string
	armed int
	kill  func()
}

// watchDiskStore watches the disk store in dir, which it creates.
func watchDiskStore(t *testing.T, dir string) *diskWatch {
	t.Helper()
	w := &diskWatch{}
	fd, err := syscall.InotifyInit1(syscall.IN_CLOEXEC | syscall.IN_NONBLOCK)
	if err != nil {
		t.Fatalf("inotify: %v", err)
	}
	// Non-blocking, so that os.File reads through the runtime's poller
	// and Close ends a pending Read.
	f := os.NewFile(uintptr(fd), "inotify")
	names := map[int32]string{}
	for _, d := range []string{"tmp", "uploads"} {
		path := filepath.Join(dir, d)
		if err := os.MkdirAll(path, 0o700); err != nil {
			t.Fatal(err)
		}
		wd, err := syscall.InotifyAddWatch(fd, path, syscall.IN_CREATE|syscall.IN_MOVED_FROM|syscall.IN_MOVED_TO|syscall.IN_DELETE)
		if err != nil {
			t.Fatalf("inotify watch %s: %v", path, err)
		}
		names[int32(wd)] = d
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			n, err := f.Read(buf)
			if err != nil || n <= 0 {
				return // closed at the end of the test
			}
			for off := 0; off+syscall.SizeofInotifyEvent <= n; {
				ev := (*syscall.InotifyEvent)(unsafe.Pointer(&buf[off]))
				name := string(bytes.TrimRight(buf[off+syscall.SizeofInotifyEvent:off+syscall.SizeofInotifyEvent+int(ev.Len)], "\x00"))
				off += syscall.SizeofInotifyEvent + int(ev.Len)
				w.event(names[ev.Wd], ev.Mask, name)
			}
		}
	}()
	t.Cleanup(func() {
		f.Close()
		<-done
	})
	return w
}

// event counts one change and kills the server if it is the armed one.
func (w *diskWatch) event(dir string, mask uint32, name string) {
	what := map[uint32]string{syscall.IN_CREATE: "create", syscall.IN_MOVED_FROM: "move from", syscall.IN_MOVED_TO: "move to", syscall.IN_DELETE: "delete"}[mask&^syscall.IN_ISDIR]
	if what == "" {
		return
	}
	// Temp names carry random digits: keep the kind.
	if i := strings.IndexAny(name, "-"); i >= 0 {
		name = name[:i+1] + "*"
	}
	w.mu.Lock()
	w.steps = append(w.steps, what+" "+dir+"/"+name)
	var kill func()
	if len(w.steps) == w.armed {
		kill, w.armed = w.kill, 0
	}
	w.mu.Unlock()
	if kill != nil {
		kill()
	}
}

func (w *diskWatch) arm(n int, _ bool, kill func()) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	steps := w.steps
	w.steps, w.armed, w.kill = nil, n, kill
	return steps
}

func (w *diskWatch) hasAfter() bool { return false }

// diskLeftovers lists what is left in the disk store in dir besides the
// stored objects: temp files, open multipart uploads (of any key), other
// objects (manifests, completion records).
func diskLeftovers(t *testing.T, dir string, stored int) []string {
	var left []string
	for _, d := range []string{"tmp", "uploads"} {
		for _, name := range dirNames(t, filepath.Join(dir, d)) {
			left = append(left, d+"/"+name)
		}
	}
	objects := 0
	err := filepath.WalkDir(filepath.Join(dir, "objects"), func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			objects++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if objects != stored {
		left = append(left, fmt.Sprintf("%d objects besides the %d uploaded (manifests, completion records)", objects-stored, stored))
	}
	return left
}

// dirNames lists the entries of dir.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// TestLeakBrokenStream breaks Upload streams whose header creates the
// upload: after the finish of a one-chunk object, and after the first
// chunk of a larger one. Their clients never learned the upload ID, so
// nothing of them may stay (before, the one-chunk stream left an open
// upload with a committed chunk until the TTL).
func TestLeakBrokenStream(t *testing.T) {
	t.Parallel()
	for _, backend := range []struct {
		name  string
		start func(t *testing.T) (srv *server, committed func(key string) bool, leftovers func(t *testing.T, keys []string) []string)
	}{
		{"s3", func(t *testing.T) (*server, func(string) bool, func(*testing.T, []string) []string) {
			env := requireS3(t)
			bucket := env.newBucket(t)
			srv := startServer(t, append(env.serveArgs(bucket), "--log-level", "debug")...)
			c := env.client(t)
			committed := func(key string) bool {
				ctx := context.Background()
				for _, id := range openMultipartUploads(ctx, t, c, bucket, key) {
					res, err := (&minio.Core{Client: c}).ListObjectParts(ctx, bucket, key, id, 0, 10)
					if err == nil && len(res.ObjectParts) > 0 {
						return true
					}
				}
				return false
			}
			return srv, committed, func(t *testing.T, keys []string) []string { return s3Leftovers(t, c, bucket, keys, 0) }
		}},
		{"disk", func(t *testing.T) (*server, func(string) bool, func(*testing.T, []string) []string) {
			data := t.TempDir()
			srv := startServer(t, "--data", data, "--log-level", "debug")
			committed := func(string) bool {
				parts, _ := filepath.Glob(filepath.Join(data, "uploads", "*", "part-*"))
				return len(parts) > 0
			}
			return srv, committed, func(t *testing.T, keys []string) []string { return diskLeftovers(t, data, 0) }
		}},
	} {
		t.Run(backend.name, func(t *testing.T) {
			t.Parallel()
			srv, committed, leftovers := backend.start(t)
			c := ferryv1connect.NewUploadServiceClient(faultHTTPClient(t, "grpc"), srv.url, connect.WithGRPC())
			for i, tc := range []struct {
				key     string
				content []byte
				finish  bool
			}{
				{"broken/one-chunk", faultContent(t, 1000, 510), true},
				{"broken/two-chunks", faultContent(t, faultChunkSize+1000, 511), false},
			} {
				ctx, cancel := context.WithCancel(context.Background())
				stream := c.Upload(ctx)
				chunk := splitChunks(tc.content, faultChunkSize)[0]
				msgs := []*ferryv1.UploadRequest{
					{Message: &ferryv1.UploadRequest_Header{Header: &ferryv1.UploadHeader{Target: &ferryv1.UploadHeader_Create{Create: faultSpec(tc.key, tc.content)}}}},
					faultChunkMessage(chunk),
				}
				if tc.finish {
					msgs = append(msgs, &ferryv1.UploadRequest{Message: &ferryv1.UploadRequest_Finish{Finish: &ferryv1.UploadFinish{}}})
				}
				for _, m := range msgs {
					if err := stream.Send(m); err != nil {
						t.Fatalf("%s: send: %v", tc.key, faultStreamError(stream, err))
					}
				}
				// The stream breaks once the server has read every message.
				if tc.finish {
					waitUntil(t, time.Minute, "the server's debug line: finish read", func() bool {
						return strings.Contains(srv.logs.String(), "finish read, waiting for the end of the stream")
					})
				} else {
					waitUntil(t, time.Minute, "chunk 0 of "+tc.key+" committed", func() bool { return committed(tc.key) })
				}
				// Cancel without closing the stream first: a close would
				// end it cleanly, and could reach the server before the
				// cancellation does.
				cancel()
				// The server logs an RPC when its handler has returned.
				waitUntil(t, time.Minute, "the server's log line of the broken stream of "+tc.key, func() bool {
					return strings.Count(srv.logs.String(), "procedure=ferry.v1.UploadService/Upload") > i
				})
				if _, err := stream.CloseAndReceive(); err == nil {
					t.Fatalf("%s: the broken stream succeeded", tc.key)
				}
				if logs := srv.logs.String(); strings.Contains(logs[strings.LastIndex(logs, "procedure=ferry.v1.UploadService/Upload"):], "code=ok") {
					t.Fatalf("%s: the server saw the stream end cleanly: the test broke nothing", tc.key)
				}
			}
			if left := leftovers(t, []string{"broken/one-chunk", "broken/two-chunks"}); len(left) > 0 {
				t.Errorf("left after the broken streams: %s", strings.Join(left, "; "))
			}
		})
	}
}

// TestDiskStoreLocked starts a second server on the data directory of a
// running one: it must fail at once, saying why, instead of sharing the
// directory (and its temp files) with the first, which keeps serving.
func TestDiskStoreLocked(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	first := startServer(t, "--data", data)
	ctx, cancel := context.WithTimeout(context.Background(), serverStartTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, ferryBin, "serve", "--addr", "127.0.0.1:0", "--data", data).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "in use by another process") {
		t.Fatalf("second ferry serve --data on the same directory: %v\n%s\nwant a failure saying the directory is in use", err, out)
	}
	c := ferryv1connect.NewUploadServiceClient(faultHTTPClient(t, "grpc"), first.url, connect.WithGRPC())
	if _, err := faultPutObject(ctx, c, "locked/still-serving", []byte("x")); err != nil {
		t.Fatalf("the first server after the second was refused: %v", err)
	}
}
