package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
	"github.com/ferryhq/ferry/upload"
)

// clientConfig is what the client commands (upload, download, stat, ls, rm)
// run with.
type clientConfig struct {
	server      string
	protocol    string
	concurrency int
	chunkSize   int64
	quiet       bool
}

// clientFlags are the client commands' flags, as given.
type clientFlags struct {
	server, protocol, chunkSize string
	concurrency                 int
	quiet                       bool
}

const (
	defaultServer   = "http://127.0.0.1:8080"
	defaultProtocol = "connect"
	// clientReadMaxBytes bounds every message a client accepts: download
	// data messages are at most 1 MiB, every other response is small.
	clientReadMaxBytes = 4 << 20
)

// Kinds of client command, for addClientFlags.
const (
	plainCommand = iota
	uploadCommand
	downloadCommand
)

// addClientFlags adds the flags of a client command of the kind.
func addClientFlags(cmd *cobra.Command, f *clientFlags, kind int) {
	fs := cmd.Flags()
	fs.StringVar(&f.server, "server", "", "server `URL` (env FERRY_SERVER; default "+defaultServer+")")
	fs.StringVar(&f.protocol, "protocol", "", "RPC `protocol`: connect, grpc or grpcweb (env FERRY_PROTOCOL; default "+defaultProtocol+")")
	switch kind {
	case uploadCommand:
		fs.IntVar(&f.concurrency, "concurrency", 4, "chunks in flight at once (parallel streams); each is held in memory (env FERRY_CONCURRENCY)")
		fs.StringVar(&f.chunkSize, "chunk-size", "", "chunk `size`, such as 8MiB: at least 5MiB (env FERRY_CHUNK_SIZE; default: the server's choice)")
		fs.BoolVarP(&f.quiet, "quiet", "q", false, "show no progress")
	case downloadCommand:
		fs.IntVar(&f.concurrency, "concurrency", 4, "ranged streams at once, for a FILE (env FERRY_CONCURRENCY)")
		fs.StringVar(&f.chunkSize, "chunk-size", "", "bytes per ranged stream, such as 16MiB (env FERRY_CHUNK_SIZE; default 16MiB)")
		fs.BoolVarP(&f.quiet, "quiet", "q", false, "show no progress, and no summary when FILE is -")
	}
}

// resolve returns the configuration the flags and the environment give.
func (f *clientFlags) resolve(cmd *cobra.Command, lookupEnv lookupEnvFunc) (clientConfig, error) {
	cfg := clientConfig{server: f.server, protocol: f.protocol, concurrency: f.concurrency, quiet: f.quiet}
	flags := cmd.Flags()
	if s, ok := lookupEnv("FERRY_SERVER"); ok && s != "" && !flags.Changed("server") {
		cfg.server = s
	}
	if s, ok := lookupEnv("FERRY_PROTOCOL"); ok && s != "" && !flags.Changed("protocol") {
		cfg.protocol = s
	}
	if cfg.server == "" {
		cfg.server = defaultServer
	}
	if cfg.protocol == "" {
		cfg.protocol = defaultProtocol
	}
	switch cfg.protocol {
	case "connect", "grpc", "grpcweb":
	default:
		return cfg, usagef("protocol %q: use connect, grpc or grpcweb", cfg.protocol)
	}
	u, err := url.Parse(cfg.server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return cfg, usagef("server %q: need an http:// or https:// URL", cfg.server)
	}
	if s, ok := lookupEnv("FERRY_CONCURRENCY"); ok && s != "" && !flags.Changed("concurrency") && flags.Lookup("concurrency") != nil {
		n, err := strconv.Atoi(s)
		if err != nil {
			return cfg, usagef("FERRY_CONCURRENCY %q: need a whole number", s)
		}
		cfg.concurrency = n
	}
	chunkSize, chunkSource := f.chunkSize, "--chunk-size"
	if s, ok := lookupEnv("FERRY_CHUNK_SIZE"); ok && s != "" && !flags.Changed("chunk-size") && flags.Lookup("chunk-size") != nil {
		chunkSize, chunkSource = s, "FERRY_CHUNK_SIZE"
	}
	if cfg.concurrency < 1 && flags.Lookup("concurrency") != nil {
		return cfg, usagef("--concurrency must be at least 1")
	}
	if chunkSize != "" {
		if cfg.chunkSize, err = parseSize(chunkSource, chunkSize); err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}

// httpClient returns the HTTP client for cfg's protocol. gRPC needs
// HTTP/2, so for an http:// server it speaks HTTP/2 over cleartext (h2c);
// Connect and gRPC-Web work over HTTP/1.1 (one connection per stream in
// flight) and over HTTP/2 with TLS.
func (cfg clientConfig) httpClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = max(cfg.concurrency, 2)
	if cfg.protocol == "grpc" {
		t.Protocols = new(http.Protocols)
		t.Protocols.SetHTTP2(true)
		t.Protocols.SetUnencryptedHTTP2(true)
	}
	return &http.Client{Transport: t}
}

// clientOptions returns the Connect client options for cfg's protocol.
// They do not offer to accept gzip: object data is mostly incompressible,
// and compressing it would cap a download at what one server core
// compresses.
func (cfg clientConfig) clientOptions() []connect.ClientOption {
	opts := []connect.ClientOption{
		connect.WithReadMaxBytes(clientReadMaxBytes),
		connect.WithAcceptCompression("gzip", nil, nil),
	}
	switch cfg.protocol {
	case "grpc":
		opts = append(opts, connect.WithGRPC())
	case "grpcweb":
		opts = append(opts, connect.WithGRPCWeb())
	}
	return opts
}

// retryPolicy is the default policy, saying on stderr (unless quiet) why
// it waits, above the progress line p if there is one.
func (cfg clientConfig) retryPolicy(stderr io.Writer, p *progressPrinter) upload.RetryPolicy {
	if cfg.quiet {
		return upload.RetryPolicy{}
	}
	var mu sync.Mutex
	return upload.RetryPolicy{Notify: func(err error, wait time.Duration) {
		if p != nil {
			p.println(fmt.Sprintf("retrying in %v: %v", wait.Round(time.Millisecond), err))
			return
		}
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(stderr, "retrying in %v: %v\n", wait.Round(time.Millisecond), err)
	}}
}

func (cfg clientConfig) uploadClient() ferryv1connect.UploadServiceClient {
	return ferryv1connect.NewUploadServiceClient(cfg.httpClient(), cfg.server, cfg.clientOptions()...)
}

func (cfg clientConfig) downloadClient() ferryv1connect.DownloadServiceClient {
	return ferryv1connect.NewDownloadServiceClient(cfg.httpClient(), cfg.server, cfg.clientOptions()...)
}

func (cfg clientConfig) objectClient() ferryv1connect.ObjectServiceClient {
	return ferryv1connect.NewObjectServiceClient(cfg.httpClient(), cfg.server, cfg.clientOptions()...)
}

// plainProgressInterval is how often a progress line is printed when
// stderr is not a terminal.
const plainProgressInterval = 5 * time.Second

// progressPrinter shows a transfer's progress. On a terminal it rewrites
// one line at most a few times a second; elsewhere (a log file, a pipe) it
// prints a plain line every interval, such as
// "12 MiB / 100 MiB (12%) 35 MiB/s".
type progressPrinter struct {
	w        io.Writer
	verb     string
	start    time.Time
	plain    bool
	interval time.Duration

	mu   sync.Mutex
	last time.Time
	used bool
}

// newProgress returns a printer for w, or nil when quiet; a nil printer's
// methods do nothing.
func newProgress(w io.Writer, verb string, quiet bool) *progressPrinter {
	if quiet {
		return nil
	}
	now := time.Now()
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			return &progressPrinter{w: w, verb: verb, start: now, interval: 200 * time.Millisecond}
		}
	}
	return &progressPrinter{w: w, verb: verb, start: now, plain: true, interval: plainProgressInterval, last: now}
}

// report is a Progress callback of the Uploader or Downloader.
func (p *progressPrinter) report(done, total int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if p.plain {
		if now.Sub(p.last) < p.interval {
			return
		}
		p.last = now
		fmt.Fprintln(p.w, progressText(done, total, now.Sub(p.start), " / "))
		return
	}
	if now.Sub(p.last) < p.interval && done != total {
		return
	}
	p.last, p.used = now, true
	fmt.Fprintf(p.w, "\r%s %s\033[K", p.verb, progressText(done, total, now.Sub(p.start), " of "))
}

// progressText describes done bytes of total (-1 when unknown) after
// elapsed: bytes, percentage and rate.
func progressText(done, total int64, elapsed time.Duration, of string) string {
	text := humanize.IBytes(uint64(max(done, 0)))
	if total >= 0 {
		pct := int64(100)
		if total > 0 {
			pct = 100 * done / total
		}
		text += fmt.Sprintf("%s%s (%d%%)", of, humanize.IBytes(uint64(total)), pct)
	}
	if s := elapsed.Seconds(); s > 0.5 {
		text += fmt.Sprintf("  %s/s", humanize.IBytes(uint64(float64(max(done, 0))/s)))
	}
	return text
}

// progressFunc returns p.report, or nil for a nil printer, so that the
// transfer skips progress bookkeeping altogether.
func (p *progressPrinter) progressFunc() func(done, total int64) {
	if p == nil {
		return nil
	}
	return p.report
}

// println prints a line above the progress line.
func (p *progressPrinter) println(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.plain {
		fmt.Fprintln(p.w, line)
		return
	}
	fmt.Fprintf(p.w, "\r\033[K%s\n", line)
	p.last = time.Time{} // redraw the progress line at the next report
}

// end finishes the progress line.
func (p *progressPrinter) end() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.used {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
