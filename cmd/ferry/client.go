package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/ferryhq/ferry/download"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
	"github.com/ferryhq/ferry/telemetry"
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
	// token is the bearer token sent in every request's Authorization
	// header; empty sends none.
	token string
	// tls trusts the certificates of --ca-cert besides the system's; nil
	// trusts the system's only.
	tls *tls.Config
	// limitRate is the most bytes per second the command's requests and
	// responses carry together (--limit-rate); 0 for no limit.
	limitRate int64
	// transport is the one HTTP transport of the command's clients, so
	// that they share connections and the rate limit.
	transport http.RoundTripper
}

// clientFlags are the client commands' flags, as given.
type clientFlags struct {
	server, protocol, chunkSize string
	token, caCert, limitRate    string
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
	fs.StringVar(&f.token, "token", "", "bearer `token` sent to the server (env FERRY_TOKEN; prefer the environment: flags show in ps)")
	fs.StringVar(&f.caCert, "ca-cert", "", "PEM `file` of CA certificates to trust for an https:// server, besides the system's (env FERRY_CA_CERT)")
	fs.StringVar(&f.limitRate, "limit-rate", "", "most bytes per `second` sent and received, all transfers of the command together, such as 50MiB (env FERRY_LIMIT_RATE; default no limit)")
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
	cfg := clientConfig{server: f.server, protocol: f.protocol, concurrency: f.concurrency, quiet: f.quiet, token: f.token}
	flags := cmd.Flags()
	for _, v := range []struct {
		flag, env string
		dst       *string
	}{
		{"server", "FERRY_SERVER", &cfg.server},
		{"protocol", "FERRY_PROTOCOL", &cfg.protocol},
		{"token", "FERRY_TOKEN", &cfg.token},
		{"ca-cert", "FERRY_CA_CERT", &f.caCert},
		{"limit-rate", "FERRY_LIMIT_RATE", &f.limitRate},
	} {
		if s, ok := lookupEnv(v.env); ok && s != "" && !flags.Changed(v.flag) {
			*v.dst = s
		}
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
	if f.caCert != "" {
		if cfg.tls, err = trustCAs(f.caCert); err != nil {
			return cfg, err
		}
	}
	if f.limitRate != "" {
		if cfg.limitRate, err = parseSize("--limit-rate", f.limitRate); err != nil {
			return cfg, err
		}
		if cfg.limitRate == 0 {
			return cfg, usagef("--limit-rate must be more than 0 bytes per second (leave it out for no limit)")
		}
	}
	cfg.transport = cfg.newTransport()
	return cfg, nil
}

// trustCAs returns a TLS configuration that trusts the system's
// certificates and those in the PEM file path.
func trustCAs(path string) (*tls.Config, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, usagef("--ca-cert: %v", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, usagef("--ca-cert %s: no PEM certificate in it", path)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// httpClient returns the HTTP client of cfg's transport.
func (cfg clientConfig) httpClient() *http.Client {
	if cfg.transport == nil {
		return &http.Client{Transport: cfg.newTransport()}
	}
	return &http.Client{Transport: cfg.transport}
}

// newTransport returns the HTTP transport for cfg's protocol, limited to
// cfg.limitRate. gRPC needs HTTP/2, so for an http:// server it speaks
// HTTP/2 over cleartext (h2c); Connect and gRPC-Web work over HTTP/1.1
// (one connection per stream in flight) and over HTTP/2 with TLS.
func (cfg clientConfig) newTransport() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.tls != nil {
		t.TLSClientConfig = cfg.tls.Clone()
	}
	// Room for the connections of every client of the command, which share
	// this transport: a sync's files each upload 4 chunks at once.
	t.MaxIdleConnsPerHost = max(4*cfg.concurrency, 16)
	if cfg.protocol == "grpc" {
		t.Protocols = new(http.Protocols)
		t.Protocols.SetHTTP2(true)
		t.Protocols.SetUnencryptedHTTP2(true)
		// Frames of up to 1 MiB instead of HTTP/2's default 16 KiB: a
		// download's 1 MiB data messages then cost the server one frame
		// each (about 20% less server CPU per GiB; docs/benchmarks.md).
		t.HTTP2 = &http.HTTP2Config{MaxReadFrameSize: 1 << 20}
	}
	if cfg.limitRate > 0 {
		return newRateLimited(t, cfg.limitRate)
	}
	return t
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
	if telemetry.TracingEnabled("") {
		// A client span per RPC, whose context goes to the server in the
		// traceparent header (run starts the command's span and exporter).
		if tracing, err := telemetry.RPCTracing(nil); err == nil {
			opts = append(opts, connect.WithInterceptors(tracing))
		}
	}
	if cfg.token != "" {
		opts = append(opts, connect.WithInterceptors(bearerToken(cfg.token)))
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
// it waits, above the progress display p if there is one.
func (cfg clientConfig) retryPolicy(stderr io.Writer, p *progress) upload.RetryPolicy {
	if cfg.quiet {
		return upload.RetryPolicy{}
	}
	var mu sync.Mutex
	return upload.RetryPolicy{Notify: func(err error, wait time.Duration) {
		line := fmt.Sprintf("retrying in %v: %v", wait.Round(time.Millisecond), err)
		if p != nil {
			p.println(line)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintln(stderr, line)
	}}
}

func (cfg clientConfig) uploadClient() ferryv1connect.UploadServiceClient {
	return ferryv1connect.NewUploadServiceClient(cfg.httpClient(), cfg.server, cfg.clientOptions()...)
}

func (cfg clientConfig) downloadClient() ferryv1connect.DownloadServiceClient {
	// Every DownloadService client here feeds a download.Downloader.
	opts := append(cfg.clientOptions(), download.WithDataBuffers())
	return ferryv1connect.NewDownloadServiceClient(cfg.httpClient(), cfg.server, opts...)
}

func (cfg clientConfig) objectClient() ferryv1connect.ObjectServiceClient {
	return ferryv1connect.NewObjectServiceClient(cfg.httpClient(), cfg.server, cfg.clientOptions()...)
}

// bearerToken is a client interceptor that sends "Authorization: Bearer
// <token>" with every request, unary or streaming, in all three protocols.
type bearerToken string

func (b bearerToken) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", "Bearer "+string(b))
		return next(ctx, req)
	}
}

func (b bearerToken) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", "Bearer "+string(b))
		return conn
	}
}

func (b bearerToken) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}
