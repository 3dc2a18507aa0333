package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/upload"
)

// Load test bounds. The server's peak resident memory is bounded by its
// memory limits, never by the bytes or uploads in flight: the chunk bytes
// in flight (--max-inflight-bytes) are held about twice (connect-go's read
// buffer and the decoded message) and the garbage collector lets the heap
// grow to twice what is live, so the bound is five times the budget (four,
// and one for buffers kept for reuse) plus the runtime's own: below the
// bytes uploaded.
const (
	loadSmallUploads = 200
	loadSmallSize    = 64 << 10
	loadLargeUploads = 8
	loadLargeSize    = 40 * MiB
	loadChunkSize    = 8 * MiB
	// loadInflight is the server's --max-inflight-bytes.
	loadInflight = 48 * MiB
	// loadMaxRSS bounds the server's VmHWM over the whole load test.
	loadMaxRSS = 5*loadInflight + 64*MiB
)

// patternReader is a deterministic io.ReaderAt of size bytes, so large
// inputs take no memory in the test process: byte i is patternBlock at
// (i + seed·104729) mod its length, a prime, so every seed and every chunk
// differs.
type patternReader struct {
	seed uint64
	size int64
}

// patternBlock is the random block that patternReader repeats.
var patternBlock = func() []byte {
	b := make([]byte, 1<<20+7)
	_, _ = rand.NewChaCha8([32]byte{1, 2}).Read(b)
	return b
}()

func (p patternReader) ReadAt(b []byte, off int64) (int, error) {
	if off >= p.size {
		return 0, io.EOF
	}
	n := len(b)
	if rest := p.size - off; int64(n) > rest {
		n = int(rest)
	}
	period := int64(len(patternBlock))
	for i := 0; i < n; {
		at := (off + int64(i) + int64(p.seed)*104729) % period
		i += copy(b[i:n], patternBlock[at:])
	}
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

// crc returns the CRC32C of all of p.
func (p patternReader) crc() uint32 {
	var crc uint32
	buf := make([]byte, 1<<20)
	for off := int64(0); off < p.size; off += int64(len(buf)) {
		n, _ := p.ReadAt(buf, off)
		crc = crc32.Update(crc, castagnoli, buf[:n])
	}
	return crc
}

// freeLoopbackAddr returns a loopback host:port that was free a moment ago.
func freeLoopbackAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// metricsSample is one scrape of a Prometheus text endpoint: each sample
// line's name with labels ("name{a=\"b\"}") mapped to its value.
type metricsSample map[string]float64

var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)`)

// scrapeMetrics reads http://addr/metrics.
func scrapeMetrics(t testing.TB, addr string) metricsSample {
	t.Helper()
	res, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape metrics: %v", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("scrape metrics: %s", res.Status)
	}
	m := metricsSample{}
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		if g := sampleLine.FindStringSubmatch(sc.Text()); g != nil {
			if v, err := strconv.ParseFloat(g[2], 64); err == nil {
				m[g[1]] = v
			}
		}
	}
	return m
}

// sum adds the samples of metric name whose labels contain all of labels
// (each as `k="v"`).
func (m metricsSample) sum(name string, labels ...string) float64 {
	var total float64
	for k, v := range m {
		base, rest, _ := strings.Cut(k, "{")
		if base != name {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(rest, l) {
				ok = false
			}
		}
		if ok {
			total += v
		}
	}
	return total
}

// quantile estimates quantile q of histogram name from its buckets: the
// upper bound of the first bucket holding q of the observations.
func (m metricsSample) quantile(name string, q float64) float64 {
	type bucket struct{ le, count float64 }
	var buckets []bucket
	le := regexp.MustCompile(`le="([^"]+)"`)
	for k, v := range m {
		if !strings.HasPrefix(k, name+"_bucket{") {
			continue
		}
		g := le.FindStringSubmatch(k)
		if g == nil {
			continue
		}
		b, err := strconv.ParseFloat(g[1], 64)
		if err != nil {
			b = math.Inf(1)
		}
		buckets = append(buckets, bucket{b, v})
	}
	sort.Slice(buckets, func(i, j int) bool { return buckets[i].le < buckets[j].le })
	total := m[name+"_count"]
	for _, b := range buckets {
		if b.count >= q*total {
			return b.le
		}
	}
	return math.Inf(1)
}

// waitMetric waits until metric name (summed over labels) equals want.
func waitMetric(t testing.TB, addr, name string, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := scrapeMetrics(t, addr).sum(name)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %v", name, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// peakRSS returns the peak resident set size of process pid (VmHWM in
// /proc/PID/status), in bytes.
func peakRSS(t testing.TB, pid int) int64 { return procStatusBytes(t, pid, "VmHWM") }

// procStatusBytes returns the field of /proc/PID/status given in kB, such
// as VmHWM, in bytes.
func procStatusBytes(t testing.TB, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("%s %q: %v", field, rest, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// TestLoad runs 200 small uploads and 8 large ones (5 chunks of 8 MiB,
// 4 in flight each) at once, over all three protocols, against one server
// with tokens, on loopback. Every upload must succeed (the uploader checks
// each object's size and CRC32C), and the server's peak RSS must stay
// under loadMaxRSS. It logs the figures: uploads, errors, peak RSS and the
// server's p99 chunk commit latency.
func TestLoad(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("peak RSS is read from /proc")
	}
	t.Parallel()
	metricsAddr := freeLoopbackAddr(t)
	tokens := writeTokenFile(t, map[string]any{"name": "loader", "token": "loader-secret-token-0123456789", "read": []string{"load/"}, "write": []string{"load/"}})
	srv := startServer(t, "--data", t.TempDir(), "--token-file", tokens, "--metrics-addr", metricsAddr,
		"--max-uploads-per-token", "256", "--max-inflight-bytes", strconv.Itoa(loadInflight), "--max-chunk-size", "16MiB")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	protocols := []string{"connect", "grpc", "grpcweb"}
	const token = "loader-secret-token-0123456789"
	uploaders := map[string]*upload.Uploader{}
	for _, p := range protocols {
		c := newSecClients(secHTTPClient(t, p), srv.url, p, token)
		uploaders[p] = upload.NewUploader(c.upload, upload.UploaderOptions{})
	}

	type job struct {
		key string
		r   patternReader
		u   *upload.Uploader
	}
	var jobs []job
	for i := range loadLargeUploads {
		// Each large upload is a client of its own (as a CLI run is),
		// with its own connection.
		p := protocols[i%3]
		c := newSecClients(secHTTPClient(t, p), srv.url, p, token)
		u := upload.NewUploader(c.upload, upload.UploaderOptions{ChunkSize: loadChunkSize, Concurrency: 4})
		jobs = append(jobs, job{fmt.Sprintf("load/large-%d-%s", i, p), patternReader{seed: uint64(1000 + i), size: loadLargeSize}, u})
	}
	for i := range loadSmallUploads {
		p := protocols[i%3]
		jobs = append(jobs, job{fmt.Sprintf("load/small-%03d-%s", i, p), patternReader{seed: uint64(i), size: loadSmallSize}, uploaders[p]})
	}

	start := time.Now()
	var errs atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErrs []string
	for _, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			obj, err := j.u.Upload(ctx, j.key, j.r, j.r.size, upload.ObjectOptions{})
			if err == nil && (obj.GetSize() != j.r.size || obj.GetCrc32C() != j.r.crc()) {
				err = fmt.Errorf("stored %d bytes with crc32c %08x, want %d and %08x", obj.GetSize(), obj.GetCrc32C(), j.r.size, j.r.crc())
			}
			if err != nil {
				errs.Add(1)
				mu.Lock()
				if len(firstErrs) < 5 {
					firstErrs = append(firstErrs, fmt.Sprintf("%s: %v", j.key, err))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)

	m := scrapeMetrics(t, metricsAddr)
	rss := peakRSS(t, srv.cmd.Process.Pid)
	p99 := m.quantile("ferry_chunk_duration_seconds", 0.99)
	p50 := m.quantile("ferry_chunk_duration_seconds", 0.50)
	chunks := m["ferry_chunk_duration_seconds_count"]
	total := int64(loadSmallUploads*loadSmallSize + loadLargeUploads*loadLargeSize)
	t.Logf("load: %d uploads (%d × %d KiB + %d × %d MiB = %.1f MiB) in %v, %d errors; server peak RSS (VmHWM) %.1f MiB (bound %d MiB); "+
		"%v chunks committed, chunk latency p50 ≤ %vs, p99 ≤ %vs (histogram bucket bounds); failed RPCs (retried): %v resource_exhausted, %v in all",
		len(jobs), loadSmallUploads, loadSmallSize>>10, loadLargeUploads, loadLargeSize/MiB, float64(total)/MiB, elapsed.Round(time.Millisecond),
		errs.Load(), float64(rss)/MiB, loadMaxRSS/MiB, chunks, p50, p99, m.sum("ferry_rpc_errors_total", `code="resource_exhausted"`), m.sum("ferry_rpc_errors_total"))
	for k, v := range m {
		if strings.HasPrefix(k, "ferry_rpc_errors_total{") {
			t.Logf("failed RPCs, retried by the uploader: %s %v", k, v)
		}
	}
	// Requests wait up to --limit-wait (1 minute) for room under the
	// memory limits, and uploads commit in milliseconds here: a refusal
	// means requests were stuck, as when held-back HTTP/2 streams starve
	// the others of the connection's flow-control window.
	if n := m.sum("ferry_rpc_errors_total", `code="resource_exhausted"`); n != 0 {
		t.Errorf("%v requests were refused with resource_exhausted after waiting a minute for room", n)
	}
	if errs.Load() != 0 {
		t.Errorf("%d of %d uploads failed; first: %s", errs.Load(), len(jobs), strings.Join(firstErrs, "; "))
	}
	if rss > loadMaxRSS {
		t.Errorf("server peak RSS %d MiB, over the bound of %d MiB", rss/MiB, loadMaxRSS/MiB)
	}
	if want := float64(loadSmallUploads + loadLargeUploads*loadLargeSize/loadChunkSize); chunks < want {
		t.Errorf("metrics count %v chunks, want at least %v", chunks, want)
	}
	if got := m.sum("ferry_received_bytes_total"); got < float64(total) {
		t.Errorf("ferry_received_bytes_total = %v, want at least the %d bytes uploaded", got, total)
	}
}

// TestObjectSizeLimit: --max-object-size refuses a larger declared size, and
// a chunk that would take an object of unknown size past it, with
// InvalidArgument; --max-chunk-size sets the read limit, so a larger
// message is ResourceExhausted before it is read.
func TestObjectSizeLimit(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--data", t.TempDir(), "--token-file", writeTokenFile(t),
		"--max-object-size", "1MiB", "--chunk-size", "5MiB", "--max-chunk-size", "5MiB")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := newSecClients(secHTTPClient(t, "grpc"), srv.url, "grpc", aliceToken)

	_, err := c.upload.CreateUpload(ctx, connect.NewRequest(&ferryv1.CreateUploadRequest{Spec: &ferryv1.UploadSpec{Key: "team-a/big", Size: proto.Int64(2 * MiB)}}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "maximum") {
		t.Errorf("declared size over --max-object-size: %v, want invalid_argument naming the maximum", err)
	}
	// Unknown size: the first chunk alone would pass the limit.
	_, err = secStream(ctx, c.upload, &ferryv1.UploadHeader{Target: &ferryv1.UploadHeader_Create{Create: &ferryv1.UploadSpec{Key: "team-a/big2"}}}, make([]byte, 3*MiB/2))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "maximum") {
		t.Errorf("chunk past --max-object-size: %v, want invalid_argument naming the maximum", err)
	}
	if err := secPut(ctx, c.upload, "team-a/small", make([]byte, 512<<10)); err != nil {
		t.Errorf("object under the limit: %v", err)
	}
	// A message over the read limit (--max-chunk-size plus 1 MiB).
	id, err := secOpenUpload(ctx, c.upload, "team-a/open", []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.upload.PutChunk(ctx, connect.NewRequest(&ferryv1.PutChunkRequest{UploadId: id, Chunk: secChunk(0, make([]byte, 7*MiB))}))
	if code := connect.CodeOf(err); code != connect.CodeResourceExhausted {
		t.Errorf("PutChunk of 7 MiB with --max-chunk-size 5MiB: %v, want resource_exhausted", err)
	}
}

// grpcFrame returns msg as one gRPC length-prefixed message.
func grpcFrame(t testing.TB, msg proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	frame := make([]byte, 5, 5+len(b))
	binary.BigEndian.PutUint32(frame[1:], uint32(len(b)))
	return append(frame, b...)
}

// rawGRPCUpload starts an Upload call over h2c with a body the test writes
// itself through the returned pipe; the response (or error) arrives on the
// channel once the server answers.
func rawGRPCUpload(t testing.TB, ctx context.Context, url, token string) (*io.PipeWriter, <-chan rawResult) {
	t.Helper()
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/ferry.v1.UploadService/Upload", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/grpc+proto")
	req.Header.Set("TE", "trailers")
	req.Header.Set("Authorization", "Bearer "+token)
	hc := secHTTPClient(t, "grpc")
	done := make(chan rawResult, 1)
	go func() {
		res, err := hc.Do(req)
		if err != nil {
			done <- rawResult{err: err}
			return
		}
		defer res.Body.Close()
		_, _ = io.Copy(io.Discard, res.Body)
		status := res.Trailer.Get("Grpc-Status")
		if status == "" {
			status = res.Header.Get("Grpc-Status") // trailers-only response
		}
		msg := res.Trailer.Get("Grpc-Message") + res.Header.Get("Grpc-Message")
		done <- rawResult{status: status, message: msg}
	}()
	return pw, done
}

type rawResult struct {
	status, message string
	err             error
}

func headerMsg(key string, size int64) *ferryv1.UploadRequest {
	return &ferryv1.UploadRequest{Message: &ferryv1.UploadRequest_Header{Header: &ferryv1.UploadHeader{
		Target: &ferryv1.UploadHeader_Create{Create: &ferryv1.UploadSpec{Key: key, Size: proto.Int64(size)}},
	}}}
}

// TestSlowLoris: with --stream-idle-timeout 1s and --read-header-timeout
// 1s, a client that never finishes its headers, one that opens an Upload
// stream and sends nothing more, one that stops in the middle of a chunk,
// and one that stops reading a download are all cut off within a few
// seconds, while an upload that trickles its bytes for several times the
// idle timeout, never pausing that long, succeeds.
func TestSlowLoris(t *testing.T) {
	t.Parallel()
	metricsAddr := freeLoopbackAddr(t)
	srv := startServer(t, "--data", t.TempDir(), "--token-file", writeTokenFile(t), "--metrics-addr", metricsAddr,
		"--stream-idle-timeout", "1s", "--read-header-timeout", "1s")
	const cutWithin = 6 * time.Second

	t.Run("stalled-download", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c := newSecClients(secHTTPClient(t, "grpc"), srv.url, "grpc", aliceToken)
		r := patternReader{seed: 9, size: 48 * MiB} // more than the windows and socket buffers hold
		if _, err := upload.NewUploader(c.upload, upload.UploaderOptions{}).Upload(ctx, "team-a/big-download", r, r.size, upload.ObjectOptions{}); err != nil {
			t.Fatal(err)
		}
		stream, err := c.download.Download(ctx, connect.NewRequest(&ferryv1.DownloadRequest{Key: "team-a/big-download"}))
		if err != nil {
			t.Fatal(err)
		}
		defer stream.Close()
		if !stream.Receive() {
			t.Fatalf("first message: %v", stream.Err())
		}
		// Read nothing more: the server's writes block, and it must give up.
		start := time.Now()
		procedure := `procedure="/ferry.v1.DownloadService/Download"`
		for scrapeMetrics(t, metricsAddr).sum("ferry_rpc_errors_total", procedure) == 0 {
			if time.Since(start) > cutWithin {
				t.Fatalf("download whose client stopped reading still running after %v", cutWithin)
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("download whose client stopped reading cut off after %v", time.Since(start).Round(time.Millisecond))
	})

	t.Run("headers", func(t *testing.T) {
		t.Parallel()
		conn, err := net.Dial("tcp", srv.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		start := time.Now()
		if _, err := io.WriteString(conn, "POST /ferry.v1.UploadService/Upload HTTP/1.1\r\nHost: ferry\r\nX-Slow: "); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(2 * cutWithin))
		_, err = io.Copy(io.Discard, conn) // returns when the server closes
		if elapsed := time.Since(start); err != nil || elapsed > cutWithin {
			t.Errorf("half-sent headers: connection closed after %v (err %v), want within %v", elapsed, err, cutWithin)
		}
	})

	for _, c := range []struct {
		name string
		body func(t *testing.T) []byte
	}{
		{"after-header", func(t *testing.T) []byte { return grpcFrame(t, headerMsg("team-a/loris-1", 100)) }},
		{"mid-chunk", func(t *testing.T) []byte {
			chunk := grpcFrame(t, &ferryv1.UploadRequest{Message: &ferryv1.UploadRequest_Chunk{Chunk: secChunk(0, make([]byte, 100))}})
			return append(grpcFrame(t, headerMsg("team-a/loris-2", 100)), chunk[:len(chunk)/2]...)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			pw, done := rawGRPCUpload(t, ctx, srv.url, aliceToken)
			defer pw.Close()
			start := time.Now()
			if _, err := pw.Write(c.body(t)); err != nil {
				t.Fatal(err)
			}
			select {
			case r := <-done:
				elapsed := time.Since(start)
				if r.err == nil && (r.status == "" || r.status == "0") {
					t.Errorf("stalled stream ended with grpc-status %q after %v, want an error", r.status, elapsed)
				}
				t.Logf("stalled stream cut off after %v: status %q %q %v", elapsed.Round(time.Millisecond), r.status, r.message, r.err)
			case <-time.After(cutWithin):
				t.Errorf("stalled Upload stream still open after %v", cutWithin)
			}
		})
	}

	t.Run("slow-but-moving", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		data := bytes.Repeat([]byte("slow "), 256<<10/5)
		pw, done := rawGRPCUpload(t, ctx, srv.url, aliceToken)
		body := grpcFrame(t, headerMsg("team-a/slow", int64(len(data))))
		body = append(body, grpcFrame(t, &ferryv1.UploadRequest{Message: &ferryv1.UploadRequest_Chunk{Chunk: secChunk(0, data)}})...)
		body = append(body, grpcFrame(t, &ferryv1.UploadRequest{Message: &ferryv1.UploadRequest_Finish{Finish: &ferryv1.UploadFinish{}}})...)
		start := time.Now()
		const pieces = 20 // 20 × 200 ms = 4 s, four times the idle timeout
		step := (len(body) + pieces - 1) / pieces
		for off := 0; off < len(body); off += step {
			if _, err := pw.Write(body[off:min(off+step, len(body))]); err != nil {
				t.Fatalf("write at %d after %v: %v", off, time.Since(start), err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		pw.Close()
		r := <-done
		if r.err != nil || r.status != "0" {
			t.Fatalf("slow upload over %v: status %q %q, %v; want success", time.Since(start), r.status, r.message, r.err)
		}
		t.Logf("slow upload of %d bytes over %v succeeded", len(data), time.Since(start).Round(time.Millisecond))
	})
}

// TestInvalidFlood: while a valid 48 MiB upload runs, 8 clients send
// invalid requests as fast as they can (no token, an unknown token, a
// malformed body, an unknown procedure, another user's upload ID, a 4 MiB
// chunk without a token). Every
// one is refused with its proper code, the upload succeeds intact, and the
// metrics count the refusals.
func TestInvalidFlood(t *testing.T) {
	t.Parallel()
	metricsAddr := freeLoopbackAddr(t)
	srv := startServer(t, "--data", t.TempDir(), "--token-file", writeTokenFile(t), "--metrics-addr", metricsAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	bob := newSecClients(secHTTPClient(t, "grpc"), srv.url, "grpc", bobToken)
	bobUpload, err := secOpenUpload(ctx, bob.upload, "team-b/private", []byte("bob's"))
	if err != nil {
		t.Fatal(err)
	}
	alice := newSecClients(secHTTPClient(t, "grpc"), srv.url, "grpc", aliceToken)
	r := patternReader{seed: 77, size: 48 * MiB}
	u := upload.NewUploader(alice.upload, upload.UploaderOptions{ChunkSize: 8 * MiB, Concurrency: 2})
	uploaded := make(chan error, 1)
	go func() {
		obj, err := u.Upload(ctx, "team-a/during-flood", r, r.size, upload.ObjectOptions{})
		if err == nil && obj.GetCrc32C() != r.crc() {
			err = fmt.Errorf("crc32c %08x, want %08x", obj.GetCrc32C(), r.crc())
		}
		uploaded <- err
	}()

	const maxFlood = 20000
	bigChunk := make([]byte, 4*MiB)
	var sent, wrong atomic.Int64
	var firstWrong atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc := secHTTPClient(t, []string{"connect", "grpc"}[w%2])
			anon := newSecClients(hc, srv.url, "connect", "")
			forged := newSecClients(hc, srv.url, "grpcweb", wrongToken)
			thief := newSecClients(hc, srv.url, "grpc", aliceToken)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if sent.Add(1) > maxFlood {
					return
				}
				var got, want string
				switch i % 6 {
				case 0:
					got, want = secCode(secPut(ctx, anon.upload, "team-a/x", []byte("x"))), "unauthenticated"
				case 1:
					_, err := forged.objects.StatObject(ctx, connect.NewRequest(&ferryv1.StatObjectRequest{Key: "team-a/x"}))
					got, want = secCode(err), "unauthenticated"
				case 2:
					req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.url+"/ferry.v1.ObjectService/StatObject", strings.NewReader("{not json"))
					req.Header.Set("Content-Type", "application/json")
					req.Header.Set("Authorization", "Bearer "+aliceToken)
					got, want = httpStatus(hc, req), "400"
				case 3:
					req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.url+"/ferry.v1.Nope/Nothing", strings.NewReader("{}"))
					req.Header.Set("Content-Type", "application/json")
					req.Header.Set("Authorization", "Bearer "+aliceToken)
					// No such RPC: the page's handler answers 404 or 405.
					got, want = httpStatus(hc, req), "404"
					if got == "405" {
						got = "404"
					}
				case 4:
					_, err := thief.upload.PutChunk(ctx, connect.NewRequest(&ferryv1.PutChunkRequest{UploadId: bobUpload, Chunk: secChunk(0, []byte("evil!"))}))
					got, want = secCode(err), "not_found"
				case 5:
					// A 4 MiB chunk without a token: refused from the headers,
					// before the body is read. Over HTTP/1.1 the server then
					// closes the connection, so the client may fail to send
					// the rest of its body before it sees the answer.
					_, err := anon.upload.PutChunk(ctx, connect.NewRequest(&ferryv1.PutChunkRequest{UploadId: bobUpload, Chunk: secChunk(0, bigChunk)}))
					got, want = secCode(err), "unauthenticated"
					if w%2 == 0 && (got == "canceled" || got == "unavailable" || got == "unknown") {
						got = want
					}
				}
				if got != want {
					wrong.Add(1)
					firstWrong.CompareAndSwap(nil, fmt.Sprintf("request kind %d: %s, want %s", i%6, got, want))
				}
			}
		}()
	}
	err = <-uploaded
	close(stop)
	wg.Wait()
	n := min(sent.Load(), maxFlood)
	if err != nil {
		t.Fatalf("valid upload during a flood of %d invalid requests: %v", n, err)
	}
	if wrong.Load() > 0 {
		t.Errorf("%d of %d invalid requests got an unexpected answer; first: %v", wrong.Load(), n, firstWrong.Load())
	}
	if n < 100 {
		t.Errorf("only %d invalid requests ran during the upload; the flood did not overlap it", n)
	}
	m := scrapeMetrics(t, metricsAddr)
	if got := m.sum("ferry_rpc_errors_total", `code="unauthenticated"`); got < float64(n)/2-16 {
		t.Errorf("ferry_rpc_errors_total{code=unauthenticated} = %v, want about %v", got, n/2)
	}
	// Bob's upload was never touched.
	res, err := bob.upload.GetUpload(ctx, connect.NewRequest(&ferryv1.GetUploadRequest{UploadId: bobUpload}))
	if err != nil || len(res.Msg.GetChunks()) != 1 || res.Msg.GetChunks()[0].GetCrc32C() != crc32.Checksum([]byte("bob's"), castagnoli) {
		t.Errorf("bob's upload after the flood: %v %v", res, err)
	}
	t.Logf("%d invalid requests during a valid 48 MiB upload: all refused as expected, upload intact", n)
}

// httpStatus sends req and returns its HTTP status code as text.
func httpStatus(hc *http.Client, req *http.Request) string {
	res, err := hc.Do(req)
	if err != nil {
		return "error: " + err.Error()
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	return strconv.Itoa(res.StatusCode)
}

// TestGracefulShutdown: SIGTERM while an Upload stream is in the middle of
// a chunk stops the server from taking new connections but lets the chunk
// arrive and the upload complete; the server then exits cleanly, and the
// object is there when a new server starts on the same data.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	metricsAddr := freeLoopbackAddr(t)
	srv := startServer(t, "--data", data, "--token-file", writeTokenFile(t), "--metrics-addr", metricsAddr, "--shutdown-timeout", "20s")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	content := bytes.Repeat([]byte("in flight "), 100<<10) // 1,000 KiB
	body := grpcFrame(t, headerMsg("team-a/in-flight", int64(len(content))))
	body = append(body, grpcFrame(t, &ferryv1.UploadRequest{Message: &ferryv1.UploadRequest_Chunk{Chunk: secChunk(0, content)}})...)
	body = append(body, grpcFrame(t, &ferryv1.UploadRequest{Message: &ferryv1.UploadRequest_Finish{Finish: &ferryv1.UploadFinish{}}})...)
	half := len(body) / 2

	pw, done := rawGRPCUpload(t, ctx, srv.url, aliceToken)
	if _, err := pw.Write(body[:half]); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, metricsAddr, "ferry_active_uploads", 1)

	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		srv.Stop(t) // SIGTERM, then wait for a clean exit
	}()
	// Once shutdown has begun, new connections are refused.
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", srv.addr, time.Second)
		if err != nil {
			break
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatal("the server still accepts connections 10s after SIGTERM")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := pw.Write(body[half:]); err != nil {
		t.Fatalf("rest of the chunk after SIGTERM: %v", err)
	}
	pw.Close()
	if r := <-done; r.err != nil || r.status != "0" {
		t.Fatalf("upload in flight at SIGTERM: status %q %q, %v; want success", r.status, r.message, r.err)
	}
	<-stopped

	again := startServer(t, "--data", data, "--token-file", writeTokenFile(t))
	c := newSecClients(secHTTPClient(t, "connect"), again.url, "connect", aliceToken)
	res, err := c.objects.StatObject(ctx, connect.NewRequest(&ferryv1.StatObjectRequest{Key: "team-a/in-flight"}))
	if err != nil || res.Msg.GetObject().GetSize() != int64(len(content)) {
		t.Fatalf("object after restart: %v, %v; want %d bytes", res, err, len(content))
	}
}
