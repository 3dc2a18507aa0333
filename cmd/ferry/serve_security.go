package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/pflag"

	"github.com/ferryhq/ferry/auth"
	"github.com/ferryhq/ferry/telemetry"
)

// securityConfig is the part of [serveConfig] that docs/security.md
// describes: authentication, TLS, limits, timeouts and metrics.
type securityConfig struct {
	tokenFile          string
	tokens             *auth.Tokens // loaded from tokenFile; nil without one
	tlsCert, tlsKey    string
	metricsAddr        string
	pprof              bool
	maxObjectSize      int64
	maxUploadsPerToken int
	requestTimeout     time.Duration
	streamIdleTimeout  time.Duration
	readHeaderTimeout  time.Duration
	httpIdleTimeout    time.Duration

	maxObjectSizeText string
}

// addSecurityFlags registers the flags of sc on f.
func addSecurityFlags(f *pflag.FlagSet, sc *securityConfig) {
	f.StringVar(&sc.tokenFile, "token-file", "", "JSON `file` of bearer tokens and their read/write key prefixes (env FERRY_TOKEN_FILE); without it only a loopback --addr is allowed")
	f.StringVar(&sc.tlsCert, "tls-cert", "", "PEM certificate `file` (chain) to serve TLS with HTTP/2; needs --tls-key")
	f.StringVar(&sc.tlsKey, "tls-key", "", "PEM private key `file` of --tls-cert")
	f.StringVar(&sc.metricsAddr, "metrics-addr", "", "`host:port` serving Prometheus metrics at /metrics (default: none)")
	f.BoolVar(&sc.pprof, "pprof", false, "also serve Go's runtime profiles (net/http/pprof) at /debug/pprof/ on --metrics-addr; profiles of at most 25 seconds")
	f.StringVar(&sc.maxObjectSizeText, "max-object-size", "5TiB", "largest object `size` an upload may create")
	f.IntVar(&sc.maxUploadsPerToken, "max-uploads-per-token", 16, "upload requests (Upload streams, PutChunk calls) one token may have in flight; 0 for no limit")
	f.DurationVar(&sc.requestTimeout, "request-timeout", 2*time.Minute, "longest handling of a unary RPC once its request is read; 0 for none")
	f.DurationVar(&sc.streamIdleTimeout, "stream-idle-timeout", time.Minute, "cut off a request whose body, or a response whose reader, makes no progress for this `duration`; 0 for never")
	f.DurationVar(&sc.readHeaderTimeout, "read-header-timeout", 10*time.Second, "longest time to read a request's headers")
	f.DurationVar(&sc.httpIdleTimeout, "http-idle-timeout", 2*time.Minute, "close a keep-alive connection idle this long")
}

// resolve completes sc from the environment and loads the token file.
func (sc *securityConfig) resolve(flags *pflag.FlagSet, lookupEnv lookupEnvFunc) error {
	if s, ok := lookupEnv("FERRY_TOKEN_FILE"); ok && !flags.Changed("token-file") {
		sc.tokenFile = s
	}
	var err error
	if sc.maxObjectSize, err = parseSize("--max-object-size", sc.maxObjectSizeText); err != nil {
		return err
	}
	switch {
	case sc.maxObjectSize <= 0:
		return usagef("--max-object-size must be positive")
	case (sc.tlsCert == "") != (sc.tlsKey == ""):
		return usagef("--tls-cert and --tls-key go together")
	case sc.maxUploadsPerToken < 0:
		return usagef("--max-uploads-per-token must not be negative")
	case sc.requestTimeout < 0 || sc.streamIdleTimeout < 0 || sc.readHeaderTimeout < 0 || sc.httpIdleTimeout < 0:
		return usagef("timeouts must not be negative")
	case sc.pprof && sc.metricsAddr == "":
		return usagef("--pprof serves on --metrics-addr: give both")
	}
	if sc.tokenFile != "" {
		if sc.tokens, err = auth.LoadTokens(sc.tokenFile); err != nil {
			return err
		}
	}
	return nil
}

// checkListenAddr refuses to serve without tokens on an address other
// hosts can reach: a server without authentication lets anyone read and
// write everything.
func (sc *securityConfig) checkListenAddr(addr string) error {
	if sc.tokens != nil {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return usagef("--addr %q: %v", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return usagef("refusing to listen on %s without authentication: anyone who can reach it could read and write every object. "+
		"Give --token-file (or FERRY_TOKEN_FILE), or listen on loopback (--addr 127.0.0.1:PORT)", addr)
}

// newAuthenticator returns the authenticator of sc's tokens, nil without
// tokens.
func (sc *securityConfig) newAuthenticator(log *slog.Logger, metrics *telemetry.Metrics) *auth.Authenticator {
	if sc.tokens == nil {
		return nil
	}
	return auth.New(sc.tokens, auth.Options{
		MaxUploads: sc.maxUploadsPerToken,
		OnAuthenticated: func(ctx context.Context, p *auth.Principal) {
			telemetry.SetPrincipal(ctx, p.Name)
		},
		OnRefused: func(r *http.Request, err *connect.Error) {
			telemetry.LogRefused(log, metrics, r, err)
		},
	})
}

// serviceInterceptors returns the interceptors of ferry's service handlers,
// outermost first: logs and metrics (so refusals are counted), then
// authorization (authn nil: none), then the unary deadline.
func (sc *securityConfig) serviceInterceptors(log *slog.Logger, metrics *telemetry.Metrics, authn *auth.Authenticator) []connect.Interceptor {
	interceptors := []connect.Interceptor{telemetry.NewInterceptor(log, metrics)}
	if authn != nil {
		interceptors = append(interceptors, authn.Interceptor())
	}
	if sc.requestTimeout > 0 {
		timeout := sc.requestTimeout
		interceptors = append(interceptors, connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
			return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
				ctx, cancel := context.WithTimeout(ctx, timeout)
				defer cancel()
				return next(ctx, req)
			}
		}))
	}
	return interceptors
}

// authorizeUpload is the upload service's Authorize hook: it names the key
// in the RPC's log line and, with tokens, checks the token's write rights.
func (sc *securityConfig) authorizeUpload(ctx context.Context, key string) error {
	telemetry.SetKey(ctx, key)
	if sc.tokens == nil {
		return nil
	}
	return auth.AuthorizeUpload(ctx, key)
}

// tlsConfig returns the TLS configuration of the server, nil for plaintext.
func (sc *securityConfig) tlsConfig() (*tls.Config, error) {
	if sc.tlsCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(sc.tlsCert, sc.tlsKey)
	if err != nil {
		return nil, fmt.Errorf("TLS: %w", err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
	}, nil
}

// protocols returns the HTTP versions served: HTTP/1.1 and HTTP/2 over TLS,
// or HTTP/1.1 and h2c in plaintext.
func (sc *securityConfig) protocols() *http.Protocols {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	if sc.tlsCert != "" {
		p.SetHTTP2(true)
	} else {
		p.SetUnencryptedHTTP2(true)
	}
	return p
}

// logStartup says how the server is protected.
func (sc *securityConfig) logStartup(log *slog.Logger) {
	if sc.tokens == nil {
		log.Warn("no --token-file: serving loopback only, without authentication; every local request may read and write every object")
	} else {
		log.Info("bearer token authentication", "tokens", sc.tokens.Len(), "file", sc.tokenFile)
		if fi, err := os.Stat(sc.tokenFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
			log.Warn("the token file is readable by other users; chmod 600 it, or give sha256 hashes instead of secrets", "file", sc.tokenFile, "mode", fi.Mode().Perm().String())
		}
	}
	if sc.tlsCert == "" {
		log.Info("plaintext HTTP/1.1 and h2c; put TLS in front of the server (--tls-cert, --tls-key, or a reverse proxy) before exposing it")
	}
}

// maxMetricsConnections bounds the connections the metrics port serves at
// once: a scraper and a person with pprof need a few.
const maxMetricsConnections = 16

// serveMetrics serves the metrics at /metrics on sc.metricsAddr until ctx
// is done. It returns once the listener is open, with the address bound.
func (sc *securityConfig) serveMetrics(ctx context.Context, metrics *telemetry.Metrics, log *slog.Logger) (string, error) {
	ln, err := net.Listen("tcp", sc.metricsAddr)
	if err != nil {
		return "", fmt.Errorf("--metrics-addr: %w", err)
	}
	conns := newConnLimiter(ln, maxMetricsConnections, sc.readHeaderTimeout)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.Handler())
	if sc.pprof {
		// How docs/benchmarks.md's server profiles are taken. The write
		// timeout below bounds a CPU profile's ?seconds=.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	srv := &http.Server{
		ConnState:         conns.track,
		Handler:           mux,
		ReadHeaderTimeout: sc.readHeaderTimeout,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       sc.httpIdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	go func() {
		if err := srv.Serve(conns); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	return ln.Addr().String(), nil
}
