package integration

import (
	"context"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v5"
	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"

	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
	"github.com/ferryhq/ferry/upload"
)

const (
	// clusterLoadPerInstance is how many uploads run at once per ferry
	// instance in TestClusterLoad.
	clusterLoadPerInstance = 100
	// clusterLoadChunk is the chunk size of its uploads, in bytes.
	clusterLoadChunk = 8 * MiB
	// The limits its servers run with (ferry serve's defaults, given
	// explicitly so the bound below is theirs), and the memory bound of
	// docs/security.md they make: 64 MiB + 3 × inflight + 4 MiB × streams +
	// 1 MiB × connections = 672 MiB.
	clusterLoadInflight    = 96 * MiB
	clusterLoadStreams     = 16
	clusterLoadConnections = 256
	clusterLoadBound       = 64*MiB + 3*clusterLoadInflight + 4*MiB*clusterLoadStreams + 1*MiB*clusterLoadConnections
	// clusterLoadRetries is how many times an upload is sent again after
	// a transient error.
	clusterLoadRetries = 5
	// clusterLoadTimeout bounds each round of uploads.
	clusterLoadTimeout = 10 * time.Minute
)

// clusterLoadSizes are the sizes in bytes the uploads cycle through: one
// request (64 KiB, 1 MiB), one chunk and a bit, and several chunks.
var clusterLoadSizes = []int64{64 << 10, 1 * MiB, 9 * MiB, 17 * MiB, 30 * MiB}

// loadRound is the result of one round of TestClusterLoad.
type loadRound struct {
	setup    string
	uploads  int
	bytes    int64
	elapsed  time.Duration
	errors   int64
	retries  int64 // uploads sent again after a transient error
	firstErr string
	peakRSS  []int64 // per instance, VmHWM after the round, bytes
}

// TestClusterLoad puts load through the balancer: 3 instances × 100
// uploads at once of mixed sizes (64 KiB to 30 MiB, over gRPC, Connect and
// gRPC-Web), all through nginx, and compares the aggregate rate with 100
// such uploads sent straight to one instance of the same cluster, in the
// same run (first, so that its instance's peak is its own). Every upload
// must succeed: each is one Upload stream, sent again whole after a
// transient error as a client's retry policy would (a server refusing a
// stream under its limits answers RESOURCE_EXHAUSTED, which over HTTP/1.1
// a client still writing sees as a broken pipe); the table counts those
// retries. Each
// instance's peak RSS (VmHWM) must stay within the bound its limits give.
// It prints the table.
func TestClusterLoad(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("peak RSS is read from /proc")
	}
	t.Parallel()
	// An upload waiting its turn under the limits is idle to the sweeper:
	// the TTL must outlast the longest wait (--limit-wait, 5m) on a busy
	// machine, or the sweeper aborts uploads still queued (not_found).
	c := startFerryCluster(t, "--chunk-size", "8MiB", "--upload-ttl", "30m",
		"--max-inflight-bytes", fmt.Sprint(clusterLoadInflight), "--max-streams", fmt.Sprint(clusterLoadStreams),
		"--max-connections", fmt.Sprint(clusterLoadConnections),
		// No tokens here, so every request is one tenant's: give it the
		// whole server, as many tenants would take it.
		"--max-uploads-per-token", "0", "--max-streams-per-token", fmt.Sprint(clusterLoadStreams),
		"--max-inflight-bytes-per-token", fmt.Sprint(clusterLoadInflight))
	data := make([]byte, clusterLoadSizes[len(clusterLoadSizes)-1]+MiB)
	_, _ = rand.NewChaCha8([32]byte{17, 5}).Read(data)

	single := loadThrough(t, c, "1 instance, direct", []string{c.ferries[0].url}, clusterLoadPerInstance, data)
	balanced := loadThrough(t, c, "3 instances, nginx", nil, 3*clusterLoadPerInstance, data)

	var table strings.Builder
	fmt.Fprintf(&table, "\n| setup | uploads | MiB | seconds | MiB/s | errors | retries | peak RSS per instance (MiB) | bound (MiB) |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range []loadRound{single, balanced} {
		var rss []string
		for _, b := range r.peakRSS {
			rss = append(rss, fmt.Sprintf("%.0f", float64(b)/MiB))
		}
		fmt.Fprintf(&table, "| %s | %d | %.0f | %.1f | %.0f | %d | %d | %s | %d |\n", r.setup, r.uploads, float64(r.bytes)/MiB,
			r.elapsed.Seconds(), float64(r.bytes)/MiB/r.elapsed.Seconds(), r.errors, r.retries, strings.Join(rss, ", "), clusterLoadBound/MiB)
	}
	ratio := (float64(balanced.bytes) / balanced.elapsed.Seconds()) / (float64(single.bytes) / single.elapsed.Seconds())
	fmt.Fprintf(&table, "\naggregate rate through nginx over 3 instances / 1 instance direct: %.2f× (on %d cores shared by MinIO, nginx, ferry and the clients)\n", ratio, runtime.NumCPU())
	t.Log(table.String())
	for _, r := range []loadRound{single, balanced} {
		if r.errors != 0 {
			t.Errorf("%s: %d of %d uploads failed; first: %s", r.setup, r.errors, r.uploads, r.firstErr)
		}
		for i, b := range r.peakRSS {
			if b > clusterLoadBound {
				t.Errorf("%s: ferry %d peak RSS %d MiB, over its bound of %d MiB", r.setup, i+1, b/MiB, clusterLoadBound/MiB)
			}
		}
	}
}

// loadThrough runs n uploads at once to the servers at urls (nil: through
// nginx, gRPC on its h2c listener, Connect and gRPC-Web on its HTTP/1.1
// one), each its own client, protocols and sizes in turn, and reads every
// instance's peak RSS afterwards.
func loadThrough(t *testing.T, c *ferryCluster, setup string, urls []string, n int, data []byte) loadRound {
	ctx, cancel := context.WithTimeout(context.Background(), clusterLoadTimeout)
	defer cancel()
	r := loadRound{setup: setup, uploads: n}
	type job struct {
		key     string
		content []byte
		client  ferryv1connect.UploadServiceClient
	}
	var jobs []job
	// One HTTP client per protocol, shared by its uploads as one service's
	// client would be; HTTP/1.1 opens a connection per upload in flight.
	hcs := map[string]*http.Client{}
	for _, p := range protocols {
		hcs[p] = faultHTTPClient(t, p)
	}
	for i := range n {
		p := protocols[i%len(protocols)]
		url := c.nginx.httpURL
		if p == "grpc" {
			url = c.nginx.h2cURL
		}
		if urls != nil {
			url = urls[i%len(urls)]
		}
		size := clusterLoadSizes[i%len(clusterLoadSizes)]
		off := (i * 7919) % (len(data) - int(size))
		jobs = append(jobs, job{
			key:     fmt.Sprintf("load/%s/%03d-%s", strings.ReplaceAll(setup, " ", "-"), i, p),
			content: data[off : off+int(size)],
			client:  ferryv1connect.NewUploadServiceClient(hcs[p], url, clientOptions(p)...),
		})
		r.bytes += size
	}
	var errs, retries atomic.Int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for _, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := backoff.Retry(ctx, func() (struct{}, error) {
				err := clusterPut(ctx, j.client, j.key, j.content)
				if err != nil && !upload.IsTransient(ctx, err) {
					err = backoff.Permanent(err)
				}
				return struct{}{}, err
			}, backoff.WithBackOff(&backoff.ExponentialBackOff{
				InitialInterval: 200 * time.Millisecond, RandomizationFactor: 0.5, Multiplier: 2, MaxInterval: 5 * time.Second,
			}), backoff.WithMaxTries(1+clusterLoadRetries), backoff.WithNotify(func(error, time.Duration) { retries.Add(1) }))
			if err != nil {
				errs.Add(1)
				mu.Lock()
				if r.firstErr == "" {
					r.firstErr = fmt.Sprintf("%s: %v", j.key, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	r.elapsed = time.Since(start)
	r.errors = errs.Load()
	r.retries = retries.Load()
	for _, fs := range c.ferries {
		fs.mu.Lock()
		r.peakRSS = append(r.peakRSS, peakRSS(t, fs.cur.cmd.Process.Pid))
		fs.mu.Unlock()
	}
	return r
}

// clusterPut stores content under key in one Upload stream (create, chunks
// of clusterLoadChunk bytes, finish) and checks the object the server
// reports.
func clusterPut(ctx context.Context, c ferryv1connect.UploadServiceClient, key string, content []byte) error {
	size, crc := int64(len(content)), crc32.Checksum(content, castagnoli)
	spec := &ferryv1.UploadSpec{Key: key, Size: &size, ChunkSize: clusterLoadChunk, Crc32C: &crc}
	stream := c.Upload(ctx)
	msgs := []*ferryv1.UploadRequest{{Message: &ferryv1.UploadRequest_Header{Header: &ferryv1.UploadHeader{Target: &ferryv1.UploadHeader_Create{Create: spec}}}}}
	for _, ch := range splitChunks(content, clusterLoadChunk) {
		msgs = append(msgs, faultChunkMessage(ch))
	}
	msgs = append(msgs, &ferryv1.UploadRequest{Message: &ferryv1.UploadRequest_Finish{Finish: &ferryv1.UploadFinish{Size: &size, Crc32C: &crc}}})
	for _, msg := range msgs {
		if err := stream.Send(msg); err != nil {
			return faultStreamError(stream, err)
		}
	}
	resp, err := stream.CloseAndReceive()
	if err != nil {
		return err
	}
	if obj := resp.Msg.GetObject(); obj.GetSize() != size || obj.GetCrc32C() != crc {
		return fmt.Errorf("stored as %d bytes with crc32c %08x, sent %d bytes with %08x", obj.GetSize(), obj.GetCrc32C(), size, crc)
	}
	return nil
}
