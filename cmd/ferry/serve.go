package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"time"

	"connectrpc.com/connect"
	connectcors "connectrpc.com/cors"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"github.com/dustin/go-humanize"
	"github.com/rs/cors"
	"github.com/spf13/cobra"

	"github.com/ferryhq/ferry/auth"
	"github.com/ferryhq/ferry/download"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
	"github.com/ferryhq/ferry/proto/wire"
	"github.com/ferryhq/ferry/store"
	"github.com/ferryhq/ferry/store/diskstore"
	"github.com/ferryhq/ferry/store/s3store"
	"github.com/ferryhq/ferry/telemetry"
	"github.com/ferryhq/ferry/upload"
	"github.com/ferryhq/ferry/web"
)

// serveConfig is what `ferry serve` runs with.
type serveConfig struct {
	addr            string
	dataDir         string
	s3              s3store.Config
	chunkSize       int64
	maxChunkSize    int64
	uploadTTL       time.Duration
	corsOrigins     []string
	pageServers     []string // --page-server origins, as web.ParseOrigin returns them
	logLevel        slog.Level
	shutdownTimeout time.Duration
	// security is authentication, TLS, object size and per-token limits,
	// timeouts and metrics (serve_security.go, docs/security.md).
	security securityConfig
	// limits bound the memory of request bodies and transfers
	// (--max-inflight-bytes, --max-inflight-bytes-per-token, --max-streams,
	// --max-streams-per-token, --limit-wait).
	limits upload.Limits
	// maxConnections bounds the connections served at once
	// (--max-connections).
	maxConnections int
	// otlpEndpoint is where traces go over OTLP/HTTP (--otlp-endpoint);
	// empty leaves it to the OTEL_EXPORTER_OTLP_* variables, and with
	// none of them set tracing is off.
	otlpEndpoint string
	// tracing is set when traces are exported: RPCs and store calls get
	// spans.
	tracing bool
}

// HTTP server limits. Streams carry whole files, so there is no timeout on
// a request or response as a whole; a stalled peer is cut off by
// --stream-idle-timeout (serve_idle.go), and headers and keep-alive
// connections by --read-header-timeout and --http-idle-timeout.
const (
	// maxHeaderBytes bounds the headers of a request, in bytes: HTTP/1.1's
	// request line and headers, HTTP/2's header list.
	maxHeaderBytes = 32 << 10
	// sendMaxBytes bounds every message the server sends: download data
	// messages are at most 1 MiB.
	sendMaxBytes = 2 << 20
	// defaultMaxConnections is --max-connections' default.
	defaultMaxConnections = 256
)

// http2Config tunes HTTP/2 for streams that carry whole chunks. A client
// may send frames as large as a stream's window (a DATA frame cannot be
// larger), so each connection's frame buffer is at most that. The
// connection's receive window is the
// sum of the windows of the most streams a connection may have, so that
// streams held back by the transfer limits (upload.Limiter), whose
// buffered data keeps its share of the connection window until it is
// read, can never starve a stream on the same connection that holds part
// of the budget and needs the rest of its message: without this, limits
// that wait could deadlock a connection. The windows are also the most a
// connection buffers in server memory: 8 MiB.
var http2Config = &http.HTTP2Config{
	MaxConcurrentStreams:          http2MaxStreams,
	MaxReadFrameSize:              http2StreamWindow,
	MaxReceiveBufferPerStream:     http2StreamWindow,
	MaxReceiveBufferPerConnection: http2MaxStreams * http2StreamWindow,
}

const (
	http2MaxStreams   = 32
	http2StreamWindow = 256 << 10
)

// serveFunc runs a server with its configuration: [serve], or a stand-in
// in tests of the command line.
type serveFunc func(ctx context.Context, cfg serveConfig, log *slog.Logger) error

func newServeCommand(stdio stdio, lookupEnv lookupEnvFunc, start serveFunc) *cobra.Command {
	var (
		cfg                     serveConfig
		chunkSize, maxChunkSize string
		logLevel                string
		maxInflight             string
		maxInflightPerToken     string
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the upload, download and object services",
		Long: `Serve UploadService, DownloadService and ObjectService over Connect, gRPC
and gRPC-Web on one port (HTTP/1.1 and h2c), with gRPC health checks and
reflection.

Objects are kept in a local directory (--data) unless an S3 bucket is
given with --s3-endpoint and --s3-bucket or the FERRY_S3_* environment
variables (FERRY_S3_ENDPOINT, FERRY_S3_BUCKET, FERRY_S3_ACCESS_KEY,
FERRY_S3_SECRET_KEY, FERRY_S3_REGION, FERRY_S3_INSECURE,
FERRY_S3_CREATE_BUCKET). Flags win over the environment.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.resolve(cmd, lookupEnv, chunkSize, maxChunkSize, logLevel); err != nil {
				return err
			}
			if err := cfg.security.resolve(cmd.Flags(), lookupEnv); err != nil {
				return err
			}
			if err := cfg.security.checkListenAddr(cfg.addr); err != nil {
				return err
			}
			if err := cfg.resolveLimits(cmd.Flags().Changed("max-inflight-bytes"), maxInflight, maxInflightPerToken); err != nil {
				return err
			}
			for i, s := range cfg.pageServers {
				o, err := web.ParseOrigin(s)
				if err != nil {
					return usagef("--page-server: %v", err)
				}
				cfg.pageServers[i] = o
			}
			log := slog.New(slog.NewTextHandler(stdio.err, &slog.HandlerOptions{Level: cfg.logLevel}))
			return start(cmd.Context(), cfg, log)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.addr, "addr", "127.0.0.1:8080", "`host:port` to listen on (port 0 picks a free port)")
	f.StringVar(&cfg.dataDir, "data", "", "`directory` of the local store (default: ferry under the user's data directory, e.g. ~/.local/share/ferry)")
	f.StringVar(&cfg.s3.Endpoint, "s3-endpoint", "", "S3 endpoint, host:port or URL (env FERRY_S3_ENDPOINT)")
	f.StringVar(&cfg.s3.Bucket, "s3-bucket", "", "S3 bucket (env FERRY_S3_BUCKET)")
	f.StringVar(&cfg.s3.AccessKey, "s3-access-key", "", "S3 access key (env FERRY_S3_ACCESS_KEY)")
	f.StringVar(&cfg.s3.SecretKey, "s3-secret-key", "", "S3 secret key (env FERRY_S3_SECRET_KEY)")
	f.StringVar(&cfg.s3.Region, "s3-region", "", "S3 region (env FERRY_S3_REGION)")
	f.BoolVar(&cfg.s3.Insecure, "s3-insecure", false, "use plain HTTP for an S3 endpoint without a scheme (env FERRY_S3_INSECURE)")
	f.BoolVar(&cfg.s3.CreateBucket, "s3-create-bucket", false, "create the S3 bucket if it does not exist (env FERRY_S3_CREATE_BUCKET)")
	f.StringVar(&chunkSize, "chunk-size", "7MiB", "chunk `size` of uploads whose client asks for none (at least 5MiB)")
	f.StringVar(&maxChunkSize, "max-chunk-size", "64MiB", "largest chunk `size` accepted; bounds server memory per stream")
	f.DurationVar(&cfg.uploadTTL, "upload-ttl", 24*time.Hour, "abort uploads idle for this `duration`")
	f.StringArrayVar(&cfg.corsOrigins, "cors-origin", nil, "allow browser requests from this `origin` (repeatable; * for any)")
	f.StringArrayVar(&cfg.pageServers, "page-server", nil, "let the browser page at / connect to this other ferry server, an http(s) `origin` (repeatable; default: its own origin only)")
	f.StringVar(&logLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	f.StringVar(&maxInflight, "max-inflight-bytes", "96MiB", "request-body bytes held in memory at once, over all requests (chunks, compressed or not, and every other message); with --max-streams and --max-connections it bounds server memory (docs/security.md), and the Go heap gets a soft limit near that bound unless GOMEMLIMIT is set (at least --max-chunk-size plus 1MiB)")
	f.StringVar(&maxInflightPerToken, "max-inflight-bytes-per-token", "", "the share of --max-inflight-bytes one token may hold (default: half of it, or --max-chunk-size plus 1MiB if that is more)")
	f.IntVar(&cfg.limits.MaxStreams, "max-streams", upload.DefaultMaxStreams, "upload and download requests served at once; more wait")
	f.IntVar(&cfg.limits.MaxStreamsPerTenant, "max-streams-per-token", 0, "upload and download requests one token has served at once; its others wait (default: a quarter of --max-streams, at least 1)")
	f.IntVar(&cfg.maxConnections, "max-connections", defaultMaxConnections, "client connections served at once (HTTP/1.1 and HTTP/2); more wait to be accepted")
	f.DurationVar(&cfg.limits.Wait, "limit-wait", upload.DefaultLimitWait, "how long a request waits for room under the limits before RESOURCE_EXHAUSTED")
	f.DurationVar(&cfg.shutdownTimeout, "shutdown-timeout", 30*time.Second, "on SIGINT or SIGTERM, wait this `duration` for requests in progress")
	f.StringVar(&cfg.otlpEndpoint, "otlp-endpoint", "", "export traces over OTLP/HTTP to this `URL` (e.g. http://collector:4318); default: the OTEL_EXPORTER_OTLP_* variables, or no tracing without them")
	addSecurityFlags(f, &cfg.security)
	return cmd
}

// resolve completes cfg from the flags' text and the environment.
func (cfg *serveConfig) resolve(cmd *cobra.Command, lookupEnv lookupEnvFunc, chunkSize, maxChunkSize, logLevel string) error {
	var err error
	if cfg.chunkSize, err = parseSize("--chunk-size", chunkSize); err != nil {
		return err
	}
	if cfg.maxChunkSize, err = parseSize("--max-chunk-size", maxChunkSize); err != nil {
		return err
	}
	if err := cfg.logLevel.UnmarshalText([]byte(logLevel)); err != nil {
		return usagef("--log-level: %v", err)
	}
	if err := cfg.check(); err != nil {
		return err
	}
	flags := cmd.Flags()
	for _, v := range []struct {
		flag, env string
		dst       *string
	}{
		{"s3-endpoint", "FERRY_S3_ENDPOINT", &cfg.s3.Endpoint},
		{"s3-bucket", "FERRY_S3_BUCKET", &cfg.s3.Bucket},
		{"s3-access-key", "FERRY_S3_ACCESS_KEY", &cfg.s3.AccessKey},
		{"s3-secret-key", "FERRY_S3_SECRET_KEY", &cfg.s3.SecretKey},
		{"s3-region", "FERRY_S3_REGION", &cfg.s3.Region},
	} {
		if s, ok := lookupEnv(v.env); ok && !flags.Changed(v.flag) {
			*v.dst = s
		}
	}
	for _, v := range []struct {
		flag, env string
		dst       *bool
	}{
		{"s3-insecure", "FERRY_S3_INSECURE", &cfg.s3.Insecure},
		{"s3-create-bucket", "FERRY_S3_CREATE_BUCKET", &cfg.s3.CreateBucket},
	} {
		if s, ok := lookupEnv(v.env); ok && s != "" && !flags.Changed(v.flag) {
			b, err := strconv.ParseBool(s)
			if err != nil {
				return usagef("%s=%q: not a boolean", v.env, s)
			}
			*v.dst = b
		}
	}
	if cfg.useS3() {
		if cfg.s3.Endpoint == "" || cfg.s3.Bucket == "" {
			return usagef("S3 needs both an endpoint and a bucket (--s3-endpoint, --s3-bucket)")
		}
		if flags.Changed("data") {
			return usagef("--data is for the local store; it cannot be used with S3")
		}
		return nil
	}
	if cfg.dataDir == "" {
		dir, err := userDataDir(lookupEnv)
		if err != nil {
			return fmt.Errorf("no --data directory given and %w", err)
		}
		cfg.dataDir = filepath.Join(dir, "ferry")
	}
	return nil
}

// minUploadTTL is the shortest --upload-ttl: uploads are swept a quarter
// TTL apart, and a client must have time to send a chunk between sweeps.
const minUploadTTL = time.Minute

// check validates the sizes and durations given as flags.
func (cfg *serveConfig) check() error {
	switch {
	case cfg.chunkSize < store.MinPartSize:
		return usagef("--chunk-size %d is under S3's smallest part, 5MiB (%d bytes)", cfg.chunkSize, store.MinPartSize)
	case cfg.maxChunkSize > store.MaxPartSize:
		return usagef("--max-chunk-size %d is over S3's largest part, 5GiB (%d bytes)", cfg.maxChunkSize, int64(store.MaxPartSize))
	case cfg.maxChunkSize < cfg.chunkSize:
		return usagef("--max-chunk-size %d is under --chunk-size %d", cfg.maxChunkSize, cfg.chunkSize)
	case cfg.uploadTTL < minUploadTTL:
		return usagef("--upload-ttl %v is under the shortest, %v", cfg.uploadTTL, minUploadTTL)
	case cfg.shutdownTimeout <= 0:
		return usagef("--shutdown-timeout must be positive")
	case cfg.maxConnections < 1:
		return usagef("--max-connections must be at least 1")
	}
	return nil
}

// memoryBound is the most memory, in bytes, the server may use under any
// mix of requests with cfg's limits, as docs/security.md states it and
// integration/abuse_test.go checks it: 64 MiB for the program itself,
// three times --max-inflight-bytes for request bodies (a message is held by
// connect-go's read buffer, which may be twice its size, and by the message
// decoded from it), 4 MiB per stream place (a download's data buffers, an
// upload's part of the HTTP/2 windows), and 1 MiB per connection (its
// frame buffer and the headers of its requests).
func memoryBound(cfg serveConfig) int64 {
	l := cfg.limits
	return 64<<20 + 3*cmp.Or(l.MaxInflightBytes, upload.DefaultMaxInflightBytes) +
		4<<20*int64(cmp.Or(l.MaxStreams, upload.DefaultMaxStreams)) + 1<<20*int64(cmp.Or(cfg.maxConnections, defaultMaxConnections))
}

// heapLimit is the Go runtime's soft memory limit for cfg: memoryBound
// less 32 MiB for the program's code. The garbage collector works harder
// near it rather than let the heap grow to twice what is live.
func heapLimit(cfg serveConfig) int64 { return memoryBound(cfg) - 32<<20 }

// resolveLimits checks the memory limits given as flags. When
// --max-inflight-bytes is not given it is raised, if need be, to hold one
// message of the largest chunk.
func (cfg *serveConfig) resolveLimits(inflightGiven bool, maxInflight, maxInflightPerToken string) error {
	var err error
	if cfg.limits.MaxInflightBytes, err = parseSize("--max-inflight-bytes", maxInflight); err != nil {
		return err
	}
	if maxInflightPerToken != "" {
		if cfg.limits.MaxInflightBytesPerTenant, err = parseSize("--max-inflight-bytes-per-token", maxInflightPerToken); err != nil {
			return err
		}
		if cfg.limits.MaxInflightBytesPerTenant == 0 {
			return usagef("--max-inflight-bytes-per-token must be positive")
		}
	}
	msg := upload.MaxMessageBytes(cfg.maxChunkSize)
	if !inflightGiven {
		cfg.limits.MaxInflightBytes = max(cfg.limits.MaxInflightBytes, msg)
	}
	l := &cfg.limits
	switch {
	case l.MaxInflightBytes < msg:
		return usagef("--max-inflight-bytes %d must be at least --max-chunk-size plus 1MiB (%d), or no chunk of the largest size could be read", l.MaxInflightBytes, msg)
	case l.MaxInflightBytesPerTenant != 0 && l.MaxInflightBytesPerTenant < msg:
		return usagef("--max-inflight-bytes-per-token %d must be at least --max-chunk-size plus 1MiB (%d)", l.MaxInflightBytesPerTenant, msg)
	case l.MaxInflightBytesPerTenant > l.MaxInflightBytes:
		return usagef("--max-inflight-bytes-per-token %d must not be over --max-inflight-bytes %d", l.MaxInflightBytesPerTenant, l.MaxInflightBytes)
	case l.MaxStreams < 1:
		return usagef("--max-streams must be at least 1")
	case l.MaxStreamsPerTenant < 0:
		return usagef("--max-streams-per-token must not be negative")
	case l.MaxStreamsPerTenant > l.MaxStreams:
		return usagef("--max-streams-per-token %d must not be over --max-streams %d", l.MaxStreamsPerTenant, l.MaxStreams)
	case l.Wait <= 0:
		return usagef("--limit-wait must be positive")
	}
	return nil
}

func (cfg *serveConfig) useS3() bool { return cfg.s3.Endpoint != "" || cfg.s3.Bucket != "" }

// parseSize parses a byte size such as 8MiB or 8388608.
func parseSize(flag, s string) (int64, error) {
	n, err := humanize.ParseBytes(s)
	if err != nil || n > 1<<62 {
		return 0, usagef("%s: %q is not a size in bytes (such as 8MiB)", flag, s)
	}
	return int64(n), nil
}

// userDataDir returns the directory for user data: $XDG_DATA_HOME, or the
// platform's usual place (~/.local/share on Unix).
func userDataDir(lookupEnv lookupEnvFunc) (string, error) {
	if dir, ok := lookupEnv("XDG_DATA_HOME"); ok && filepath.IsAbs(dir) {
		return dir, nil
	}
	switch runtime.GOOS {
	case "windows":
		if dir, ok := lookupEnv("LocalAppData"); ok && dir != "" {
			return dir, nil
		}
		return "", errors.New("%LocalAppData% is not set")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	if runtime.GOOS == "darwin" {
		return filepath.Join(home, "Library", "Application Support"), nil
	}
	return filepath.Join(home, ".local", "share"), nil
}

// openStore returns the store cfg names and its kind for the logs.
func openStore(ctx context.Context, cfg serveConfig) (store.Store, string, error) {
	if cfg.useS3() {
		st, err := s3store.New(ctx, cfg.s3)
		if err != nil {
			return nil, "", fmt.Errorf("S3 store: %w", err)
		}
		return st, "s3", nil
	}
	if err := os.MkdirAll(cfg.dataDir, 0o750); err != nil {
		return nil, "", fmt.Errorf("local store: %w", err)
	}
	st, err := diskstore.New(cfg.dataDir)
	if err != nil {
		return nil, "", fmt.Errorf("local store: %w", err)
	}
	return st, "disk", nil
}

// newHandler returns the HTTP handler of all services on st, recording
// into metrics (nil: none).
func newHandler(cfg serveConfig, st store.Store, log *slog.Logger, metrics *telemetry.Metrics) (http.Handler, *upload.Service, error) {
	uploads, err := upload.NewService(upload.Config{
		Store:         st,
		ChunkSize:     cfg.chunkSize,
		MaxChunkSize:  cfg.maxChunkSize,
		TTL:           cfg.uploadTTL,
		Logger:        log,
		Authorize:     cfg.security.authorizeUpload,
		MaxObjectSize: cfg.security.maxObjectSize,
	})
	if err != nil {
		return nil, nil, err
	}
	authn := cfg.security.newAuthenticator(log, metrics) // nil without tokens
	dataLimit := upload.MaxMessageBytes(uploads.MaxChunkSize())
	// Every handler reads with the limit of its procedure's messages
	// (connect-go's read limit also bounds decompression); the Limiter
	// below refuses a larger message from its prefix before connect-go
	// reads it, and inflates compressed ones itself.
	interceptors := cfg.security.serviceInterceptors(log, metrics, authn)
	if cfg.tracing {
		// Outermost: a request refused by the interceptors below is
		// traced too.
		tracing, err := telemetry.RPCTracing(nil)
		if err != nil {
			return nil, nil, err
		}
		interceptors = append([]connect.Interceptor{tracing}, interceptors...)
	}
	common := []connect.HandlerOption{
		connect.WithSendMaxBytes(sendMaxBytes),
		connect.WithInterceptors(interceptors...),
	}
	control := append([]connect.HandlerOption{connect.WithReadMaxBytes(wire.MaxControlMessageBytes)}, common...)
	data := append([]connect.HandlerOption{connect.WithReadMaxBytes(int(dataLimit))}, common...)
	services := []string{
		ferryv1connect.UploadServiceName,
		ferryv1connect.DownloadServiceName,
		ferryv1connect.ObjectServiceName,
	}
	mux := http.NewServeMux()
	mux.Handle(ferryv1connect.NewUploadServiceHandler(uploads, control...))
	_, chunks := ferryv1connect.NewUploadServiceHandler(uploads, data...)
	mux.Handle(ferryv1connect.UploadServiceUploadProcedure, chunks)
	mux.Handle(ferryv1connect.UploadServicePutChunkProcedure, chunks)
	// Object data is mostly incompressible, and gzip would cap a download
	// at what one core compresses: data messages go uncompressed even to
	// clients that accept gzip.
	mux.Handle(ferryv1connect.NewDownloadServiceHandler(download.NewService(st), append(control, connect.WithCompressMinBytes(math.MaxInt32))...))
	mux.Handle(ferryv1connect.NewObjectServiceHandler(download.NewObjectService(st), control...))
	// Health checks and reflection get the control read limit too, but no
	// interceptors: they are open to anyone who can reach the port.
	open := connect.WithReadMaxBytes(wire.MaxControlMessageBytes)
	mux.Handle(grpchealth.NewHandler(grpchealth.NewStaticChecker(services...), open))
	reflector := grpcreflect.NewStaticReflector(services...)
	mux.Handle(grpcreflect.NewHandlerV1(reflector, open))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector, open))
	// GET /healthz for load balancers and probes that speak plain HTTP
	// GET (grpc.health.v1 needs a POST or gRPC): 200 "ok" while the server
	// serves, open to anyone like the gRPC health service.
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = io.WriteString(w, "ok\n")
	})
	// The browser page (package web) at "/"; the RPC paths above are more specific.
	mux.Handle("/", web.Handler(web.Options{PageServers: cfg.pageServers}))
	limits := cfg.limits
	limits.Route = routes(dataLimit)
	limits.Tenant = tokenName
	limiter, err := upload.NewLimiter(limits, dataLimit)
	if err != nil {
		return nil, nil, err
	}
	handler := limiter.Wrap(mux)
	if authn != nil {
		// Outside the limiter: requests without a valid token are refused
		// from their headers, before they wait for room or are read.
		handler = authn.Handler(handler)
	}
	if len(cfg.corsOrigins) == 0 {
		return handler, uploads, nil
	}
	c := cors.New(cors.Options{
		AllowedOrigins: cfg.corsOrigins,
		AllowedMethods: connectcors.AllowedMethods(),
		// Authorization carries the bearer token (auth package).
		AllowedHeaders: append(connectcors.AllowedHeaders(), "Authorization"),
		ExposedHeaders: connectcors.ExposedHeaders(),
		MaxAge:         7200, // seconds; browsers cap it lower
	})
	return c.Handler(handler), uploads, nil
}

// routes returns how the Limiter treats each path served: ferry's
// procedures by their kind (chunk data up to dataLimit bytes per message,
// an Upload stream's header and every other message up to
// wire.MaxControlMessageBytes), health checks and reflection as control
// RPCs, and nothing else as an RPC.
func routes(dataLimit int64) func(string) (upload.Route, bool) {
	return func(path string) (upload.Route, bool) {
		if p, ok := wire.Lookup(path); ok {
			return upload.ProcedureRoute(p, dataLimit), true
		}
		switch path {
		case "/" + grpchealth.HealthV1ServiceName + "/Check", "/" + grpchealth.HealthV1ServiceName + "/Watch":
			return upload.Route{MaxMessageBytes: wire.MaxControlMessageBytes}, true
		}
		for _, svc := range []string{grpcreflect.ReflectV1ServiceName, grpcreflect.ReflectV1AlphaServiceName} {
			if path == "/"+svc+"/ServerReflectionInfo" {
				return upload.Route{MaxMessageBytes: wire.MaxControlMessageBytes, ClientStream: true}, true
			}
		}
		return upload.Route{}, false
	}
}

// tokenName is the tenant of a request for the limits: the name of its
// bearer token ("" without tokens).
func tokenName(r *http.Request) string {
	if p, ok := auth.FromContext(r.Context()); ok {
		return p.Name
	}
	return ""
}

// serve runs the server until ctx is done, then shuts it down gracefully.
func serve(ctx context.Context, cfg serveConfig, log *slog.Logger) error {
	if _, ok := os.LookupEnv("GOMEMLIMIT"); !ok {
		debug.SetMemoryLimit(heapLimit(cfg))
	}
	stopTracing, err := telemetry.StartTracing(ctx, "ferry", cfg.otlpEndpoint)
	if err != nil {
		return fmt.Errorf("tracing: %w", err)
	}
	defer func() {
		// Spans still buffered go out before the process exits.
		flushCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := stopTracing(flushCtx); err != nil {
			log.Warn("traces not exported at exit", "err", err)
		}
	}()
	cfg.tracing = telemetry.TracingEnabled(cfg.otlpEndpoint)
	if cfg.tracing {
		cfg.s3.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return telemetry.TraceTransport(rt, nil) }
	}
	st, kind, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	if cfg.tracing {
		st = telemetry.TraceStore(st, nil)
	}
	sec := &cfg.security
	metrics := telemetry.NewMetrics()
	handler, uploads, err := newHandler(cfg, st, log, metrics)
	if err != nil {
		return err
	}
	tlsConfig, err := sec.tlsConfig()
	if err != nil {
		return err
	}
	if sec.metricsAddr != "" {
		addr, err := sec.serveMetrics(ctx, metrics, log)
		if err != nil {
			return err
		}
		log.Info("metrics", "metrics_addr", addr, "path", "/metrics")
	}
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return err
	}
	// Every connection costs buffers before any request on it is
	// authenticated (docs/security.md's memory bound counts them).
	conns := newConnLimiter(ln, cfg.maxConnections, sec.readHeaderTimeout)
	conns.evicted = metrics.Connections(conns.Len)
	srv := &http.Server{
		ConnState:         conns.track,
		Handler:           withIdleTimeout(handler, sec.streamIdleTimeout),
		Protocols:         sec.protocols(),
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: sec.readHeaderTimeout,
		IdleTimeout:       sec.httpIdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		HTTP2:             http2Config,
	}
	sec.logStartup(log)
	attrs := []any{"addr", ln.Addr().String(), "store", kind, "tls", tlsConfig != nil, "memory_bound", humanize.IBytes(uint64(memoryBound(cfg)))}
	if kind == "disk" {
		attrs = append(attrs, "data", cfg.dataDir)
	} else {
		attrs = append(attrs, "endpoint", cfg.s3.Endpoint, "bucket", cfg.s3.Bucket)
	}
	log.Info("listening", attrs...)

	// Abandoned uploads are looked for a few times per TTL; the sweeper
	// stops with ctx.
	go uploads.RunSweeper(ctx, min(time.Hour, max(time.Second, cfg.uploadTTL/4)))

	served := make(chan error, 1)
	go func() {
		if tlsConfig != nil {
			// ServeTLS offers h2 and http/1.1 by ALPN, as srv.Protocols says.
			served <- srv.ServeTLS(conns, "", "")
			return
		}
		served <- srv.Serve(conns)
	}()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down", "timeout", cfg.shutdownTimeout)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		log.Warn("requests still in progress at the shutdown deadline were cut off", "err", err)
		srv.Close()
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
