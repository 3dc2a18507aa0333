// Command bench measures ferry against direct S3 access in one run, on one
// machine, against one MinIO server, and prints the ratio ferry/direct for
// each case:
//
//   - uploads and downloads of the same sizes (default 1 MiB, 64 MiB and
//     1 GiB of random bytes) directly with minio-go (PutObject and GetObject
//     with default options) and through a real `ferry serve` on S3 with each
//     protocol (Connect, gRPC, gRPC-Web), using the Go clients
//     ([upload.Uploader], [download.Downloader]) with their default
//     concurrency, as the CLI does;
//   - many small uploads (default 1,000 × 64 KiB, one after another), which
//     show the cost per upload;
//   - a memory test: many concurrent large uploads through a fresh server
//     with its default limits (default 32 × 256 MiB over gRPC), whose peak
//     RSS must stay under -mem-limit.
//
// Each case is repeated (-repeats, default 3) with the clients interleaved,
// and the median is reported. For the ferry cases the table also shows the
// server's peak RSS (VmHWM of /proc/PID/status, reset before each case
// through /proc/PID/clear_refs) and its CPU time (utime+stime of
// /proc/PID/stat) per GiB moved, and for every case the CPU time per GiB
// of the client (this process, getrusage) and of MinIO when the benchmark
// started it: on a small machine the three compete for the same cores, so
// these show where a ratio is lost. The same results are written as JSON
// (-json) for comparison between commits.
//
// Usage, from the repository root:
//
//	go run ./integration/bench                  # full run (several minutes)
//	go run ./integration/bench -short -json x.json  # seconds: only shows it works
//
// Without -endpoint it starts its own MinIO server from $FERRY_TEST_MINIO_BIN
// or the tools cache (see scripts/tools.sh) on a free loopback port, and
// removes it at the end. Without -ferry it builds ./cmd/ferry.
//
// It exits 1 when a transfer fails or when the memory test exceeds its limit;
// ratio targets are reported, not enforced (see docs/benchmarks.md).
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"github.com/dustin/go-humanize"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"golang.org/x/sync/errgroup"

	"github.com/ferryhq/ferry/download"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
	"github.com/ferryhq/ferry/upload"
)

// config is what one run measures.
type config struct {
	sizes      []int64
	repeats    int
	smallCount int
	smallSize  int64
	memUploads int
	memSize    int64
	memLimit   int64
	protocols  []string
	jsonPath   string
	endpoint   string
	accessKey  string
	secretKey  string
	ferryBin   string
	serverArgs []string
	skip       map[string]bool
	timeout    time.Duration
	short      bool
	cpuProfile string
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("bench: ")
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	if err := run(ctx, cfg); err != nil {
		log.Print(err)
		stop()
		os.Exit(1)
	}
}

func parseFlags(args []string) (*config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var (
		sizes      = fs.String("sizes", "1MiB,64MiB,1GiB", "comma-separated object `sizes` to upload and download")
		repeats    = fs.Int("repeats", 3, "runs of each case; the median is reported")
		smallCount = fs.Int("small-count", 1000, "number of small uploads per run")
		smallSize  = fs.String("small-size", "64KiB", "`size` of each small upload")
		memUploads = fs.Int("mem-uploads", 32, "concurrent uploads of the memory test (0 skips it)")
		memSize    = fs.String("mem-size", "256MiB", "`size` of each upload of the memory test")
		memLimit   = fs.String("mem-limit", "512MiB", "peak server RSS the memory test must stay under")
		protocols  = fs.String("protocols", "connect,grpc,grpcweb", "ferry protocols to measure")
		jsonPath   = fs.String("json", "", "write the results as JSON to this `file`")
		endpoint   = fs.String("endpoint", "", "S3 `host:port` (plain HTTP) to use instead of starting MinIO (env FERRY_TEST_S3_ENDPOINT with -use-env)")
		accessKey  = fs.String("access-key", "", "S3 access key for -endpoint")
		secretKey  = fs.String("secret-key", "", "S3 secret key for -endpoint")
		useEnv     = fs.Bool("use-env", false, "take -endpoint and the keys from FERRY_TEST_S3_ENDPOINT, _ACCESS_KEY, _SECRET_KEY")
		ferryBin   = fs.String("ferry", "", "ferry `binary` to serve with (default: go build ./cmd/ferry)")
		serverArgs = fs.String("server-args", "", "extra `flags` for ferry serve, space-separated")
		skip       = fs.String("skip", "", "comma-separated parts to skip: transfers, small, memory")
		timeout    = fs.Duration("timeout", 60*time.Minute, "give up after this `duration`")
		short      = fs.Bool("short", false, "a quick run that only shows the benchmark works: small sizes, one repeat")
		cpuProfile = fs.String("cpuprofile", "", "write a CPU profile of the clients (this process) to `file`; for the server, see docs/benchmarks.md")
	)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	cfg := &config{
		repeats:    *repeats,
		smallCount: *smallCount,
		memUploads: *memUploads,
		protocols:  strings.Split(*protocols, ","),
		jsonPath:   *jsonPath,
		endpoint:   *endpoint,
		accessKey:  *accessKey,
		secretKey:  *secretKey,
		ferryBin:   *ferryBin,
		serverArgs: strings.Fields(*serverArgs),
		skip:       map[string]bool{},
		timeout:    *timeout,
		short:      *short,
		cpuProfile: *cpuProfile,
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *short {
		// Sizes that still cover one chunk, several chunks and the
		// small-object path; the flags given win.
		if !set["sizes"] {
			*sizes = "1MiB,20MiB"
		}
		if !set["repeats"] {
			cfg.repeats = 1
		}
		if !set["small-count"] {
			cfg.smallCount = 20
		}
		if !set["mem-uploads"] {
			cfg.memUploads = 4
		}
		if !set["mem-size"] {
			*memSize = "24MiB"
		}
	}
	if *useEnv {
		cfg.endpoint = os.Getenv("FERRY_TEST_S3_ENDPOINT")
		cfg.accessKey = os.Getenv("FERRY_TEST_S3_ACCESS_KEY")
		cfg.secretKey = os.Getenv("FERRY_TEST_S3_SECRET_KEY")
		if cfg.endpoint == "" {
			return nil, errors.New("-use-env: FERRY_TEST_S3_ENDPOINT is not set")
		}
	}
	for _, s := range strings.Split(*sizes, ",") {
		n, err := parseSize(s)
		if err != nil {
			return nil, fmt.Errorf("-sizes: %w", err)
		}
		cfg.sizes = append(cfg.sizes, n)
	}
	var err error
	if cfg.smallSize, err = parseSize(*smallSize); err != nil {
		return nil, fmt.Errorf("-small-size: %w", err)
	}
	if cfg.memSize, err = parseSize(*memSize); err != nil {
		return nil, fmt.Errorf("-mem-size: %w", err)
	}
	if cfg.memLimit, err = parseSize(*memLimit); err != nil {
		return nil, fmt.Errorf("-mem-limit: %w", err)
	}
	for _, p := range cfg.protocols {
		if p != "connect" && p != "grpc" && p != "grpcweb" {
			return nil, fmt.Errorf("-protocols: %q is not connect, grpc or grpcweb", p)
		}
	}
	for _, s := range strings.Split(*skip, ",") {
		if s != "" {
			cfg.skip[s] = true
		}
	}
	if cfg.repeats < 1 {
		return nil, errors.New("-repeats must be at least 1")
	}
	return cfg, nil
}

func parseSize(s string) (int64, error) {
	n, err := humanize.ParseBytes(strings.TrimSpace(s))
	if err != nil || n == 0 || n > 1<<40 {
		return 0, fmt.Errorf("%q is not a size such as 64MiB", s)
	}
	return int64(n), nil
}

// report is the JSON output.
type report struct {
	// Started is when the run began (UTC).
	Started time.Time `json:"started"`
	// Seconds is how long the run took.
	Seconds float64 `json:"seconds"`
	// Command is the command line of the run.
	Command string `json:"command"`
	// Short reports whether the run was a -short one.
	Short bool `json:"short"`
	// Machine describes where it ran.
	Machine machine `json:"machine"`
	// Results has one entry per case and client, in table order.
	Results []result `json:"results"`
	// Memory is the memory test, when it ran.
	Memory *memoryResult `json:"memory,omitempty"`
	// S3Started reports whether the benchmark started MinIO itself, so
	// that its CPU time was measured.
	S3Started bool `json:"s3_started"`
}

type machine struct {
	OS      string `json:"os"`
	Arch    string `json:"arch"`
	CPUs    int    `json:"cpus"`
	CPU     string `json:"cpu"`
	Go      string `json:"go"`
	Kernel  string `json:"kernel"`
	MemTotl string `json:"mem_total"`
}

// result is one case measured with one client.
type result struct {
	// Op is upload, download or small-upload.
	Op string `json:"op"`
	// Size is the bytes of one transfer; Count the transfers per run.
	Size  int64 `json:"size_bytes"`
	Count int   `json:"count"`
	// Client is direct (minio-go), or ferry's protocol: connect, grpc, grpcweb.
	Client string `json:"client"`
	// MiBps is the median throughput over the runs, in MiB/s; Samples
	// holds every run's.
	MiBps   float64   `json:"mib_per_s"`
	Samples []float64 `json:"samples_mib_per_s"`
	// PerSecond is the median number of transfers per second.
	PerSecond float64 `json:"transfers_per_s"`
	// Ratio is MiBps over the direct client's MiBps for the same case
	// (1 for direct itself).
	Ratio float64 `json:"ratio"`
	// PeakRSS is the ferry server's highest peak RSS over the runs, in
	// bytes (0 for direct).
	PeakRSS int64 `json:"server_peak_rss_bytes,omitempty"`
	// CPUPerGiB is the ferry server's median user+system CPU seconds per
	// GiB moved (0 for direct).
	CPUPerGiB float64 `json:"server_cpu_s_per_gib,omitempty"`
	// ClientCPUPerGiB is the median user+system CPU seconds per GiB moved
	// of the benchmark process, which runs the client (minio-go or ferry's).
	ClientCPUPerGiB float64 `json:"client_cpu_s_per_gib"`
	// S3CPUPerGiB is the same for the MinIO server, when the benchmark
	// started it (0 with -endpoint).
	S3CPUPerGiB float64 `json:"s3_cpu_s_per_gib,omitempty"`
}

// memoryResult is the memory test.
type memoryResult struct {
	Uploads     int     `json:"uploads"`
	Size        int64   `json:"size_bytes"`
	Protocol    string  `json:"protocol"`
	Concurrency int     `json:"concurrency_per_upload"`
	Seconds     float64 `json:"seconds"`
	MiBps       float64 `json:"mib_per_s"`
	PeakRSS     int64   `json:"server_peak_rss_bytes"`
	Limit       int64   `json:"limit_bytes"`
	Pass        bool    `json:"pass"`
	ServerArgs  string  `json:"server_args"`
}

// bench holds what the cases share.
type bench struct {
	cfg    *config
	dir    string
	data   *os.File // random bytes, as long as the largest transfer
	direct *minio.Client
	bucket string
	ferry  *ferryServer
	s3Pid  int // MinIO's process, when the benchmark started it; else 0
}

// s3CPU returns the CPU seconds MinIO has used, 0 when not known.
func (b *bench) s3CPU() float64 {
	if b.s3Pid == 0 {
		return 0
	}
	return procCPU(b.s3Pid)
}

func run(ctx context.Context, cfg *config) (err error) {
	start := time.Now()
	dir, err := os.MkdirTemp("", "ferry-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	s3Pid := 0
	if cfg.endpoint == "" {
		m, err := startMinIO(ctx, dir)
		if err != nil {
			return err
		}
		defer m.stop()
		cfg.endpoint, cfg.accessKey, cfg.secretKey = m.endpoint, m.accessKey, m.secretKey
		s3Pid = m.cmd.Process.Pid
	}
	if cfg.ferryBin == "" {
		cfg.ferryBin = filepath.Join(dir, "ferry")
		log.Print("building ./cmd/ferry")
		build := exec.CommandContext(ctx, "go", "build", "-o", cfg.ferryBin, "./cmd/ferry")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("go build ./cmd/ferry (run from the repository root): %w", err)
		}
	}

	b := &bench{cfg: cfg, dir: dir, s3Pid: s3Pid}
	b.direct, err = minio.New(cfg.endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(cfg.accessKey, cfg.secretKey, ""),
		Secure: false,
	})
	if err != nil {
		return err
	}
	b.bucket = fmt.Sprintf("ferry-bench-%d", time.Now().UnixNano())
	if err := b.direct.MakeBucket(ctx, b.bucket, minio.MakeBucketOptions{}); err != nil {
		return fmt.Errorf("create bucket: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		if rerr := b.direct.RemoveBucketWithOptions(cctx, b.bucket, minio.RemoveBucketOptions{ForceDelete: true}); rerr != nil {
			log.Printf("remove bucket %s: %v", b.bucket, rerr)
		}
	}()

	largest := max(cfg.smallSize, cfg.memSize)
	for _, s := range cfg.sizes {
		largest = max(largest, s)
	}
	if b.data, err = randomFile(filepath.Join(dir, "data"), largest); err != nil {
		return err
	}
	defer b.data.Close()

	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	rep := &report{
		Started:   start.UTC(),
		Command:   strings.Join(append([]string{"go run ./integration/bench"}, os.Args[1:]...), " "),
		Short:     cfg.short,
		Machine:   describeMachine(),
		S3Started: b.s3Pid != 0,
	}
	var failed error
	if !cfg.skip["transfers"] || !cfg.skip["small"] {
		b.ferry, err = startFerry(ctx, cfg, b.bucket, dir, "main")
		if err != nil {
			return err
		}
		if !cfg.skip["transfers"] {
			for _, size := range cfg.sizes {
				res, err := b.transfers(ctx, size)
				rep.Results = append(rep.Results, res...)
				if err != nil {
					failed = err
					break
				}
			}
		}
		if failed == nil && !cfg.skip["small"] && cfg.smallCount > 0 {
			res, err := b.small(ctx)
			rep.Results = append(rep.Results, res...)
			failed = err
		}
		if err := b.ferry.stop(); err != nil && failed == nil {
			failed = err
		}
	}
	if failed == nil && !cfg.skip["memory"] && cfg.memUploads > 0 {
		rep.Memory, failed = b.memory(ctx)
	}
	rep.Seconds = time.Since(start).Seconds()
	printTable(os.Stdout, rep)
	if cfg.jsonPath != "" {
		out, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(cfg.jsonPath, append(out, '\n'), 0o644); err != nil {
			return err
		}
	}
	if failed != nil {
		return failed
	}
	if rep.Memory != nil && !rep.Memory.Pass {
		return fmt.Errorf("memory test: server peak RSS %s is over the limit of %s", mib(rep.Memory.PeakRSS), mib(rep.Memory.Limit))
	}
	return nil
}

// sample is one run of one case with one client.
type sample struct {
	seconds float64
	rss     int64
	cpu     float64 // server CPU seconds
	client  float64 // this process's CPU seconds
	s3      float64 // MinIO's CPU seconds (when the benchmark started it)
}

// measure runs fn once and reads the CPU time the client (this process)
// and MinIO used and, for a ferry client, the ferry server's peak RSS
// (reset first) and CPU time.
func (b *bench) measure(client string, fn func() error) (sample, error) {
	var before procStat
	if client != "direct" {
		b.ferry.resetPeak()
		before = b.ferry.stat()
	}
	client0, s30 := selfCPU(), b.s3CPU()
	t0 := time.Now()
	err := fn()
	s := sample{seconds: time.Since(t0).Seconds(), client: selfCPU() - client0, s3: b.s3CPU() - s30}
	if client != "direct" {
		after := b.ferry.stat()
		s.rss = after.peakRSS
		s.cpu = after.cpu - before.cpu
	}
	return s, err
}

// clients is every client of a case: direct first.
func (b *bench) clients() []string { return append([]string{"direct"}, b.cfg.protocols...) }

// transfers measures uploads and downloads of size bytes. An object under
// 64 MiB is transferred several times per run (up to 32, and 64 MiB in
// all), so that the run lasts long enough to time it and to see the
// server's CPU time, which /proc counts in ticks of 10 ms.
func (b *bench) transfers(ctx context.Context, size int64) ([]result, error) {
	clients := b.clients()
	ups := map[string][]sample{}
	downs := map[string][]sample{}
	src := io.NewSectionReader(b.data, 0, size)
	n := int(min(max((64<<20)/size, 1), 32))
	key := func(c string, rep, i int) string { return fmt.Sprintf("t/%d/%s/%d/%d", size, c, rep, i) }
	what := humanize.IBytes(uint64(size))
	if n > 1 {
		what = fmt.Sprintf("%d × %s", n, what)
	}
	for rep := range b.cfg.repeats {
		for _, c := range clients {
			log.Printf("upload %s with %s, run %d", what, c, rep+1)
			hc := httpClient(c, 4) // one client per run, as direct has
			s, err := b.measure(c, func() error {
				defer hc.CloseIdleConnections()
				for i := range n {
					if err := b.upload(ctx, hc, c, key(c, rep, i), src, size); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return nil, fmt.Errorf("upload %s with %s: %w", what, c, err)
			}
			ups[c] = append(ups[c], s)
		}
		// Every client downloads the same objects, written through ferry.
		last := clients[len(clients)-1]
		for _, c := range clients {
			log.Printf("download %s with %s, run %d", what, c, rep+1)
			hc := httpClient(c, 4)
			s, err := b.measure(c, func() error {
				defer hc.CloseIdleConnections()
				for i := range n {
					if err := b.download(ctx, hc, c, key(last, rep, i), size); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return nil, fmt.Errorf("download %s with %s: %w", what, c, err)
			}
			downs[c] = append(downs[c], s)
		}
		for _, c := range clients {
			for i := range n {
				_ = b.direct.RemoveObject(ctx, b.bucket, key(c, rep, i), minio.RemoveObjectOptions{})
			}
		}
	}
	return append(summarize("upload", size, n, clients, ups), summarize("download", size, n, clients, downs)...), nil
}

// small measures many small uploads, one after another.
func (b *bench) small(ctx context.Context) ([]result, error) {
	clients := b.clients()
	samples := map[string][]sample{}
	size := b.cfg.smallSize
	src := io.NewSectionReader(b.data, 0, size)
	for rep := range b.cfg.repeats {
		for _, c := range clients {
			log.Printf("%d uploads of %s with %s, run %d", b.cfg.smallCount, humanize.IBytes(uint64(size)), c, rep+1)
			var up func(key string) error
			if c == "direct" {
				up = func(key string) error { return b.upload(ctx, nil, c, key, src, size) }
			} else {
				hc := httpClient(c, 4)
				defer hc.CloseIdleConnections()
				u := upload.NewUploader(ferryv1connect.NewUploadServiceClient(hc, b.ferry.url, clientOptions(c)...), upload.UploaderOptions{})
				up = func(key string) error {
					_, err := u.Upload(ctx, key, src, size, upload.ObjectOptions{})
					return err
				}
			}
			s, err := b.measure(c, func() error {
				for i := range b.cfg.smallCount {
					if err := up(fmt.Sprintf("s/%s/%d/%d", c, rep, i)); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return nil, fmt.Errorf("small uploads with %s: %w", c, err)
			}
			samples[c] = append(samples[c], s)
		}
	}
	return summarize("small-upload", size, b.cfg.smallCount, clients, samples), nil
}

// upload writes size bytes of src as key with client c (over hc, for
// ferry).
func (b *bench) upload(ctx context.Context, hc *http.Client, c, key string, src io.ReaderAt, size int64) error {
	r := io.NewSectionReader(src, 0, size)
	if c == "direct" {
		info, err := b.direct.PutObject(ctx, b.bucket, key, r, size, minio.PutObjectOptions{})
		if err == nil && info.Size != size {
			err = fmt.Errorf("stored %d bytes, sent %d", info.Size, size)
		}
		return err
	}
	u := upload.NewUploader(ferryv1connect.NewUploadServiceClient(hc, b.ferry.url, clientOptions(c)...), upload.UploaderOptions{})
	_, err := u.Upload(ctx, key, r, size, upload.ObjectOptions{})
	return err
}

// download reads key (size bytes) with client c (over hc, for ferry) and
// drops the bytes.
func (b *bench) download(ctx context.Context, hc *http.Client, c, key string, size int64) error {
	if c == "direct" {
		obj, err := b.direct.GetObject(ctx, b.bucket, key, minio.GetObjectOptions{})
		if err != nil {
			return err
		}
		defer obj.Close()
		n, err := io.Copy(io.Discard, obj)
		if err == nil && n != size {
			err = fmt.Errorf("read %d bytes, want %d", n, size)
		}
		return err
	}
	// The CLI's download client: data messages decode into recycled buffers.
	opts := append(clientOptions(c), download.WithDataBuffers())
	d := download.NewDownloader(ferryv1connect.NewDownloadServiceClient(hc, b.ferry.url, opts...), download.DownloaderOptions{})
	obj, err := d.DownloadAt(ctx, key, discardAt{})
	if err == nil && obj.GetSize() != size {
		err = fmt.Errorf("object is %d bytes, want %d", obj.GetSize(), size)
	}
	return err
}

// memory runs many concurrent uploads through a fresh server with its
// default limits and reports its peak RSS.
func (b *bench) memory(ctx context.Context) (*memoryResult, error) {
	srv, err := startFerry(ctx, b.cfg, b.bucket, b.dir, "memory")
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	const protocol = "grpc"
	res := &memoryResult{
		Uploads:     b.cfg.memUploads,
		Size:        b.cfg.memSize,
		Protocol:    protocol,
		Concurrency: 4,
		Limit:       b.cfg.memLimit,
		ServerArgs:  strings.Join(b.cfg.serverArgs, " "),
	}
	log.Printf("memory test: %d concurrent uploads of %s over %s", res.Uploads, humanize.IBytes(uint64(res.Size)), protocol)
	srv.resetPeak()
	t0 := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	for i := range res.Uploads {
		g.Go(func() error {
			// One connection per uploader, as separate clients would have.
			hc := httpClient(protocol, 4)
			defer hc.CloseIdleConnections()
			u := upload.NewUploader(ferryv1connect.NewUploadServiceClient(hc, srv.url, clientOptions(protocol)...), upload.UploaderOptions{})
			key := fmt.Sprintf("m/%d", i)
			_, err := u.Upload(gctx, key, io.NewSectionReader(b.data, 0, res.Size), res.Size, upload.ObjectOptions{})
			return err
		})
	}
	err = g.Wait()
	res.Seconds = time.Since(t0).Seconds()
	res.PeakRSS = srv.stat().peakRSS
	res.MiBps = float64(res.Size) * float64(res.Uploads) / (1 << 20) / res.Seconds
	res.Pass = err == nil && res.PeakRSS > 0 && res.PeakRSS < res.Limit
	for i := range res.Uploads {
		_ = b.direct.RemoveObject(ctx, b.bucket, fmt.Sprintf("m/%d", i), minio.RemoveObjectOptions{})
	}
	if err != nil {
		return res, fmt.Errorf("memory test: %w", err)
	}
	return res, nil
}

// summarize turns samples into results with medians and ratios.
func summarize(op string, size int64, count int, clients []string, samples map[string][]sample) []result {
	var out []result
	var direct float64
	for _, c := range clients {
		ss := samples[c]
		r := result{Op: op, Size: size, Count: count, Client: c}
		var cpus, clientCPUs, s3CPUs, rates []float64
		gib := float64(size) * float64(count) / (1 << 30) // moved per run
		for _, s := range ss {
			clientCPUs = append(clientCPUs, s.client/gib)
			s3CPUs = append(s3CPUs, s.s3/gib)
			rate := float64(size) * float64(count) / (1 << 20) / s.seconds
			r.Samples = append(r.Samples, round(rate, 1))
			rates = append(rates, rate)
			r.PeakRSS = max(r.PeakRSS, s.rss)
			cpus = append(cpus, s.cpu/gib)
		}
		r.MiBps = median(rates)
		r.ClientCPUPerGiB = round(median(clientCPUs), 2)
		r.S3CPUPerGiB = round(median(s3CPUs), 2)
		r.PerSecond = round(r.MiBps*(1<<20)/float64(size), 1)
		if c == "direct" {
			direct = r.MiBps
		} else {
			r.CPUPerGiB = round(median(cpus), 2)
		}
		if direct > 0 {
			r.Ratio = round(r.MiBps/direct, 2)
		}
		r.MiBps = round(r.MiBps, 1)
		out = append(out, r)
	}
	return out
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func round(x float64, digits int) float64 {
	v, _ := strconv.ParseFloat(strconv.FormatFloat(x, 'f', digits, 64), 64)
	return v
}

func mib(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }

// printTable writes the results as a Markdown table.
func printTable(w io.Writer, rep *report) {
	fmt.Fprintf(w, "\nferry vs direct minio-go — %s, %d CPUs, %s, %s; median of runs; ratio = ferry/direct\n\n",
		rep.Machine.CPU, rep.Machine.CPUs, rep.Machine.Go, rep.Machine.OS+"/"+rep.Machine.Arch)
	fmt.Fprintln(w, "| case | client | MiB/s | transfers/s | ratio | server peak RSS | server CPU s/GiB | client CPU s/GiB | S3 CPU s/GiB |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|")
	for _, r := range rep.Results {
		name := r.Op + " " + humanize.IBytes(uint64(r.Size))
		if r.Count > 1 {
			name = fmt.Sprintf("%s %d × %s", r.Op, r.Count, humanize.IBytes(uint64(r.Size)))
		}
		rss, cpu := "", ""
		if r.Client != "direct" {
			rss, cpu = mib(r.PeakRSS), fmt.Sprintf("%.2f", r.CPUPerGiB)
		}
		s3 := ""
		if rep.S3Started {
			s3 = fmt.Sprintf("%.2f", r.S3CPUPerGiB)
		}
		fmt.Fprintf(w, "| %s | %s | %.1f | %.1f | %.2f | %s | %s | %.2f | %s |\n", name, r.Client, r.MiBps, r.PerSecond, r.Ratio, rss, cpu, r.ClientCPUPerGiB, s3)
	}
	if m := rep.Memory; m != nil {
		verdict := "PASS"
		if !m.Pass {
			verdict = "FAIL"
		}
		fmt.Fprintf(w, "\nmemory: %d concurrent uploads of %s over %s (concurrency %d each): server peak RSS %s (limit %s) %s; %.1f MiB/s in all, %.1f s\n",
			m.Uploads, humanize.IBytes(uint64(m.Size)), m.Protocol, m.Concurrency, mib(m.PeakRSS), mib(m.Limit), verdict, m.MiBps, m.Seconds)
	}
	fmt.Fprintf(w, "\nrun took %.0f s: %s\n", rep.Seconds, rep.Command)
}

// discardAt is an io.WriterAt that drops what it is given.
type discardAt struct{}

func (discardAt) WriteAt(p []byte, _ int64) (int, error) { return len(p), nil }

// httpClient returns the HTTP client the ferry CLI uses for protocol
// (cmd/ferry/client.go): HTTP/2 over cleartext for gRPC, accepting frames
// of up to 1 MiB, and HTTP/1.1 for Connect and gRPC-Web on an http://
// server, with an idle connection per stream in flight.
func httpClient(protocol string, concurrency int) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = max(concurrency, 2)
	if protocol == "grpc" {
		t.Protocols = new(http.Protocols)
		t.Protocols.SetHTTP2(true)
		t.Protocols.SetUnencryptedHTTP2(true)
		t.HTTP2 = &http.HTTP2Config{MaxReadFrameSize: 1 << 20}
	}
	return &http.Client{Transport: t}
}

// clientOptions are the CLI's Connect client options for protocol.
func clientOptions(protocol string) []connect.ClientOption {
	opts := []connect.ClientOption{
		connect.WithReadMaxBytes(4 << 20),
		connect.WithAcceptCompression("gzip", nil, nil),
	}
	switch protocol {
	case "grpc":
		opts = append(opts, connect.WithGRPC())
	case "grpcweb":
		opts = append(opts, connect.WithGRPCWeb())
	}
	return opts
}

// randomFile writes n random bytes to path and returns the file open.
func randomFile(path string, n int64) (*os.File, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if _, err := io.CopyN(f, rand.Reader, n); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func describeMachine() machine {
	m := machine{OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "MemTotal:") {
				m.MemTotl = strings.TrimSpace(strings.TrimPrefix(line, "MemTotal:"))
			}
		}
	}
	return m
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
