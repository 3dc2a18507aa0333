package telemetry

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/wire"
)

// call is what the log line of one RPC says beyond what the interceptor
// sees itself; code further in (other interceptors, the services) adds to
// it through [SetKey] and [SetPrincipal].
type call struct {
	mu        sync.Mutex
	key       string
	principal string
}

type callKey struct{}

// SetKey records key as the object key of the RPC in ctx, for its log line:
// the upload service knows the key of a request that names only an upload
// ID. Without an RPC in ctx it does nothing.
func SetKey(ctx context.Context, key string) {
	if c, ok := ctx.Value(callKey{}).(*call); ok {
		c.mu.Lock()
		c.key = key
		c.mu.Unlock()
	}
}

// SetPrincipal records the name of the token that made the RPC in ctx, for
// its log line. Without an RPC in ctx it does nothing.
func SetPrincipal(ctx context.Context, name string) {
	if c, ok := ctx.Value(callKey{}).(*call); ok {
		c.mu.Lock()
		c.principal = name
		c.mu.Unlock()
	}
}

// interceptor implements [connect.Interceptor] for handlers.
type interceptor struct {
	log     *slog.Logger
	metrics *Metrics
}

// NewInterceptor returns a handler interceptor that logs one line per RPC
// to log, message "rpc", with the attributes procedure, protocol, peer,
// key (or prefix for ListObjects), upload_id when the request names one,
// token (when authenticated), bytes_in and bytes_out (protobuf bytes of the
// messages), duration and code ("ok" on success) — at level Info, Error
// for the codes internal, unknown and data_loss — and updates metrics
// (nil: none). Place it first, outermost. Client-side it does nothing.
func NewInterceptor(log *slog.Logger, metrics *Metrics) connect.Interceptor {
	return &interceptor{log: log, metrics: metrics}
}

func (i *interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		start := time.Now()
		c := &call{}
		ctx = context.WithValue(ctx, callKey{}, c)
		procedure := req.Spec().Procedure
		upload := isUpload(procedure)
		if upload && i.metrics != nil {
			i.metrics.activeUploads.Inc()
			defer i.metrics.activeUploads.Dec()
		}
		var r rpcRecord
		r.note(req.Any())
		r.bytesIn.Add(int64(size(req.Any())))
		res, err := next(ctx, req)
		if res != nil {
			r.bytesOut.Add(int64(size(res.Any())))
		}
		if upload && err == nil && i.metrics != nil {
			i.metrics.chunkSeconds.Observe(time.Since(start).Seconds())
		}
		i.finish(ctx, c, &r, procedure, req.Peer(), start, err)
		return res, err
	}
}

func (i *interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i *interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		start := time.Now()
		c := &call{}
		ctx = context.WithValue(ctx, callKey{}, c)
		procedure := conn.Spec().Procedure
		upload := isUpload(procedure)
		if upload && i.metrics != nil {
			i.metrics.activeUploads.Inc()
			defer i.metrics.activeUploads.Dec()
		}
		oc := &observedConn{StreamingHandlerConn: conn, metrics: i.metrics}
		err := next(ctx, oc)
		oc.chunkDone(err == nil)
		i.finish(ctx, c, &oc.rpcRecord, procedure, conn.Peer(), start, err)
		return err
	}
}

// rpcRecord accumulates what one RPC moved and named.
type rpcRecord struct {
	bytesIn, bytesOut atomic.Int64
	mu                sync.Mutex
	keyAttr, key      string
	uploadID          string
}

// note records the key, prefix or upload ID a request message names.
func (r *rpcRecord) note(msg any) {
	var attr, val, id string
	switch m := msg.(type) {
	case *ferryv1.UploadRequest:
		if h := m.GetHeader(); h != nil {
			attr, val, id = "key", h.GetCreate().GetKey(), h.GetUploadId()
		}
	case *ferryv1.CreateUploadRequest:
		attr, val = "key", m.GetSpec().GetKey()
	case *ferryv1.PutChunkRequest:
		id = m.GetUploadId()
	case *ferryv1.GetUploadRequest:
		id = m.GetUploadId()
	case *ferryv1.CompleteUploadRequest:
		id = m.GetUploadId()
	case *ferryv1.AbortUploadRequest:
		id = m.GetUploadId()
	case *ferryv1.DownloadRequest:
		attr, val = "key", m.GetKey()
	case *ferryv1.StatObjectRequest:
		attr, val = "key", m.GetKey()
	case *ferryv1.DeleteObjectRequest:
		attr, val = "key", m.GetKey()
	case *ferryv1.ListObjectsRequest:
		attr, val = "prefix", m.GetPrefix()
	}
	if attr == "" && id == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if val != "" {
		r.keyAttr, r.key = attr, val
	}
	if id != "" {
		r.uploadID = id
	}
}

// observedConn counts a stream's messages and times its chunks.
type observedConn struct {
	connect.StreamingHandlerConn
	rpcRecord
	metrics    *Metrics
	chunkStart time.Time // when the chunk being committed arrived; zero if none
}

func (c *observedConn) Receive(msg any) error {
	// The handler reads the next message once it has committed the last.
	c.chunkDone(true)
	err := c.StreamingHandlerConn.Receive(msg)
	if err != nil {
		return err
	}
	c.bytesIn.Add(int64(size(msg)))
	c.note(msg)
	if m, ok := msg.(*ferryv1.UploadRequest); ok && m.GetChunk() != nil {
		c.chunkStart = time.Now()
	}
	return nil
}

func (c *observedConn) Send(msg any) error {
	err := c.StreamingHandlerConn.Send(msg)
	if err == nil {
		c.bytesOut.Add(int64(size(msg)))
	}
	return err
}

// chunkDone ends the timing of the chunk being committed, recording it
// when ok.
func (c *observedConn) chunkDone(ok bool) {
	if c.chunkStart.IsZero() {
		return
	}
	if ok && c.metrics != nil {
		c.metrics.chunkSeconds.Observe(time.Since(c.chunkStart).Seconds())
	}
	c.chunkStart = time.Time{}
}

// finish logs the RPC and updates the metrics.
func (i *interceptor) finish(ctx context.Context, c *call, r *rpcRecord, procedure string, peer connect.Peer, start time.Time, err error) {
	elapsed := time.Since(start)
	code := "ok"
	level := slog.LevelInfo
	if err != nil {
		cc := connect.CodeOf(err)
		code = cc.String()
		switch cc {
		case connect.CodeInternal, connect.CodeUnknown, connect.CodeDataLoss:
			level = slog.LevelError
		}
	}
	in, out := r.bytesIn.Load(), r.bytesOut.Load()
	if m := i.metrics; m != nil {
		m.bytesIn.WithLabelValues(procedure).Add(float64(in))
		m.bytesOut.WithLabelValues(procedure).Add(float64(out))
		m.rpcs.WithLabelValues(procedure, code).Inc()
		if err != nil {
			m.errors.WithLabelValues(procedure, code).Inc()
		}
		m.rpcSeconds.WithLabelValues(procedure).Observe(elapsed.Seconds())
	}
	if !i.log.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 12)
	attrs = append(attrs,
		slog.String("procedure", strings.TrimPrefix(procedure, "/")),
		slog.String("protocol", peer.Protocol),
		slog.String("peer", peer.Addr),
	)
	c.mu.Lock()
	key, principal := c.key, c.principal
	c.mu.Unlock()
	r.mu.Lock()
	keyAttr, reqKey, uploadID := r.keyAttr, r.key, r.uploadID
	r.mu.Unlock()
	if key == "" {
		key = reqKey
	} else {
		keyAttr = "key"
	}
	if keyAttr != "" {
		attrs = append(attrs, slog.String(keyAttr, key))
	}
	if uploadID != "" {
		attrs = append(attrs, slog.String("upload_id", uploadID))
	}
	if principal != "" {
		attrs = append(attrs, slog.String("token", principal))
	}
	attrs = append(attrs,
		slog.Int64("bytes_in", in),
		slog.Int64("bytes_out", out),
		slog.Duration("duration", elapsed),
		slog.String("code", code),
	)
	if err != nil {
		var ce *connect.Error
		if errors.As(err, &ce) {
			attrs = append(attrs, slog.String("err", ce.Message()))
		} else {
			attrs = append(attrs, slog.String("err", err.Error()))
		}
		// What the client was not told (see wire.ConnectError): the
		// cause of an internal error, for the operator.
		var c causer
		if errors.As(err, &c) && c.Cause() != nil {
			attrs = append(attrs, slog.String("cause", c.Cause().Error()))
		}
	}
	i.log.LogAttrs(ctx, level, "rpc", attrs...)
}

// isUpload reports whether procedure carries chunks (Upload, PutChunk): the
// RPCs counted as active uploads and timed per chunk.
func isUpload(procedure string) bool {
	p, ok := wire.Lookup(procedure)
	return ok && p.Kind == wire.Upload
}

// causer is an error that hides its cause from the client, as
// wire.ConnectError's generic messages do.
type causer interface{ Cause() error }

// size returns the encoded size of a protobuf message, 0 for anything else.
func size(msg any) int {
	if m, ok := msg.(proto.Message); ok {
		return proto.Size(m)
	}
	return 0
}

// maxLoggedPath is the most bytes of an unknown request path a log line
// carries.
const maxLoggedPath = 128

// LogRefused logs and counts, like an RPC, a request that an HTTP
// middleware (auth's) refused before any interceptor ran: message "rpc"
// with procedure, protocol (guessed from the content type), peer,
// bytes_in 0, code and err. The procedure is one of ferry's, or "unknown"
// for any other path, which the line then gives (its first 128 bytes) as
// path: the client chooses the path, so it must not choose metric series
// or the size of log lines. metrics may be nil.
func LogRefused(log *slog.Logger, metrics *Metrics, r *http.Request, err *connect.Error) {
	procedure := wire.Label(r.URL.Path)
	code := err.Code().String()
	if metrics != nil {
		metrics.rpcs.WithLabelValues(procedure, code).Inc()
		metrics.errors.WithLabelValues(procedure, code).Inc()
	}
	protocol := connect.ProtocolConnect
	switch ct := r.Header.Get("Content-Type"); {
	case strings.HasPrefix(ct, "application/grpc-web"):
		protocol = connect.ProtocolGRPCWeb
	case strings.HasPrefix(ct, "application/grpc"):
		protocol = connect.ProtocolGRPC
	}
	attrs := []slog.Attr{
		slog.String("procedure", strings.TrimPrefix(procedure, "/")),
		slog.String("protocol", protocol),
		slog.String("peer", r.RemoteAddr),
		slog.Int64("bytes_in", 0),
		slog.Int64("bytes_out", 0),
		slog.String("code", code),
		slog.String("err", err.Message()),
	}
	if procedure != r.URL.Path {
		path := r.URL.Path
		if len(path) > maxLoggedPath {
			path = strings.ToValidUTF8(path[:maxLoggedPath], "") + "..."
		}
		attrs = append(attrs, slog.String("path", path))
	}
	log.LogAttrs(r.Context(), slog.LevelInfo, "rpc", attrs...)
}
