package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"connectrpc.com/connect"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/wire"
)

// Options configures an [Authenticator].
type Options struct {
	// MaxUploads is the most upload requests (Upload streams and PutChunk
	// calls) one token may have in flight, unless its entry sets
	// max_uploads. 0 (the default) means no limit.
	MaxUploads int
	// OnAuthenticated, when set, is called by the interceptor with the
	// context of each authenticated RPC and its principal, before the
	// request is authorized (to name the token in logs).
	OnAuthenticated func(ctx context.Context, p *Principal)
	// OnRefused, when set, is called by [Authenticator.Handler] for each
	// request it refuses (Unauthenticated, or ResourceExhausted over the
	// token's upload limit) before any of its body is read; such requests
	// never reach the interceptors.
	OnRefused func(r *http.Request, err *connect.Error)
}

type principalKey struct{}

// NewContext returns ctx carrying principal p.
func NewContext(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the principal the authenticator put in ctx.
func FromContext(ctx context.Context) (*Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(*Principal)
	return p, ok
}

// AuthorizeUpload reports whether the principal in ctx may write key, the
// key of an upload named by its ID. It is the upload service's Authorize
// hook (upload.Config.Authorize) on servers with tokens. The error, for
// logs, is not meant for clients: the service answers as for an unknown
// upload ID.
func AuthorizeUpload(ctx context.Context, key string) error {
	p, ok := FromContext(ctx)
	if !ok {
		return errors.New("no authenticated principal")
	}
	if !p.CanWrite(key) {
		return fmt.Errorf("token %q may not write %q", p.Name, key)
	}
	return nil
}

// ServicePathPrefix is the start of the HTTP path of every ferry RPC
// (package ferry.v1 and later versions): the requests
// [Authenticator.Handler] authenticates. Health checks, reflection and the
// browser page's static files are other paths and stay open.
const ServicePathPrefix = "/ferry."

// Authenticator authenticates and authorizes ferry's RPCs with a set of
// tokens, in two layers: [Authenticator.Handler], an HTTP middleware that
// checks the bearer token and the token's upload limit from the headers
// alone, before any request body is read (so an unauthenticated client
// cannot make the server read or buffer a message), and
// [Authenticator.Interceptor], which checks each request message against
// the token's rights.
type Authenticator struct {
	tokens *Tokens
	opts   Options
	errors *connect.ErrorWriter
}

// New returns an Authenticator of tokens.
func New(tokens *Tokens, opts Options) *Authenticator {
	return &Authenticator{tokens: tokens, opts: opts, errors: connect.NewErrorWriter()}
}

// Handler returns next behind authentication: a request to a ferry RPC
// (path under [ServicePathPrefix]) without a valid bearer token is answered
// Unauthenticated, one its token's rights can never allow (a write from a
// token without write prefixes, a read from one without read prefixes)
// PermissionDenied, and an Upload or PutChunk request over its token's
// upload limit ResourceExhausted, in the request's protocol (Connect, gRPC
// or gRPC-Web), without reading its body. Other requests reach next with
// the principal in their context. Put it outside any handler that reads
// bodies or waits for capacity.
func (a *Authenticator) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, ServicePathPrefix) {
			next.ServeHTTP(w, r)
			return
		}
		p, err := a.authenticate(r.Header.Get("Authorization"))
		proc, known := wire.Lookup(r.URL.Path)
		if err == nil && known {
			err = mayCall(p, proc)
		}
		if err == nil && known && proc.Kind == wire.Upload {
			var release func()
			if release, err = a.acquire(p); err == nil {
				defer release()
			}
		}
		if err != nil {
			if a.opts.OnRefused != nil {
				a.opts.OnRefused(r, err)
			}
			if a.errors.IsSupported(r) {
				_ = a.errors.Write(w, r, err)
			} else {
				http.Error(w, err.Message(), connectHTTPStatus(err.Code()))
			}
			return
		}
		next.ServeHTTP(w, r.WithContext(NewContext(r.Context(), p)))
	})
}

// mayCall refuses, from the headers alone, a call that p's rights can never
// allow: a procedure that writes (wire.Procedure.Write) from a token with no
// write prefix, and one that reads from a token with no read prefix. So a
// token without the right holds no stream place and none of the server's
// budget for request bodies; the per-key checks come later, once the key is
// known.
func mayCall(p *Principal, proc wire.Procedure) *connect.Error {
	switch {
	case proc.Write && len(p.Write) == 0:
		return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("token %q may not write: %s needs write rights", p.Name, strings.TrimPrefix(proc.Name, "/")))
	case !proc.Write && len(p.Read) == 0:
		return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("token %q may not read: %s needs read rights", p.Name, strings.TrimPrefix(proc.Name, "/")))
	}
	return nil
}

// connectHTTPStatus is the HTTP status of the codes Handler answers with,
// for requests that are not RPCs.
func connectHTTPStatus(code connect.Code) int {
	switch code {
	case connect.CodeResourceExhausted:
		return http.StatusTooManyRequests
	case connect.CodePermissionDenied:
		return http.StatusForbidden
	}
	return http.StatusUnauthorized
}

// Interceptor returns a handler interceptor that checks every request
// message against the rights of the principal [Authenticator.Handler] put
// in the context (authenticating from the headers itself when there is
// none), as the package doc describes. Client-side, it does nothing.
func (a *Authenticator) Interceptor() connect.Interceptor { return &interceptor{a: a} }

// interceptor implements [connect.Interceptor] for handlers.
type interceptor struct{ a *Authenticator }

// principal returns the principal of an RPC: from ctx, or else from its
// headers.
func (i *interceptor) principal(ctx context.Context, h http.Header) (*Principal, error) {
	if p, ok := FromContext(ctx); ok {
		return p, nil
	}
	p, err := i.a.authenticate(h.Get("Authorization"))
	if err != nil {
		return nil, err
	}
	return p, nil
}

func (i *interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		p, err := i.principal(ctx, req.Header())
		if err != nil {
			return nil, err
		}
		ctx = NewContext(ctx, p)
		if i.a.opts.OnAuthenticated != nil {
			i.a.opts.OnAuthenticated(ctx, p)
		}
		if err := authorize(p, req.Any()); err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (i *interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i *interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		p, err := i.principal(ctx, conn.RequestHeader())
		if err != nil {
			return err
		}
		ctx = NewContext(ctx, p)
		if i.a.opts.OnAuthenticated != nil {
			i.a.opts.OnAuthenticated(ctx, p)
		}
		return next(ctx, &authorizedConn{StreamingHandlerConn: conn, principal: p})
	}
}

// authorizedConn checks every received message before the handler sees it.
type authorizedConn struct {
	connect.StreamingHandlerConn
	principal *Principal
}

func (c *authorizedConn) Receive(msg any) error {
	if err := c.StreamingHandlerConn.Receive(msg); err != nil {
		return err
	}
	return authorize(c.principal, msg)
}

// authenticate returns the principal of an Authorization header value.
func (a *Authenticator) authenticate(header string) (*Principal, *connect.Error) {
	if header == "" {
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("missing bearer token: send the header authorization: Bearer TOKEN"))
	}
	scheme, secret, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || secret == "" {
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("the authorization header must be: Bearer TOKEN"))
	}
	p, ok := a.tokens.Authenticate(strings.TrimSpace(secret))
	if !ok {
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("invalid token"))
	}
	return p, nil
}

// acquire takes one of p's upload slots, or fails with ResourceExhausted
// when all are taken. release gives it back.
func (a *Authenticator) acquire(p *Principal) (release func(), err *connect.Error) {
	limit := int64(p.MaxUploads)
	if limit == 0 {
		limit = int64(a.opts.MaxUploads)
	}
	if n := p.uploads.Add(1); limit > 0 && n > limit {
		p.uploads.Add(-1)
		return nil, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("token %q already has %d upload requests in flight, the most allowed; retry when one ends", p.Name, limit))
	}
	return func() { p.uploads.Add(-1) }, nil
}

// authorize checks one request message against p's rights (see the
// package doc); any message it does not know is refused.
func authorize(p *Principal, msg any) error {
	switch m := msg.(type) {
	case *ferryv1.UploadRequest:
		if spec := m.GetHeader().GetCreate(); spec != nil {
			return check(p, p.CanWrite, "write", spec.GetKey())
		}
		return nil // chunks, finish, or a header naming an upload ID: the service checks the manifest's key
	case *ferryv1.CreateUploadRequest:
		return check(p, p.CanWrite, "write", m.GetSpec().GetKey())
	case *ferryv1.PutChunkRequest, *ferryv1.GetUploadRequest, *ferryv1.CompleteUploadRequest, *ferryv1.AbortUploadRequest:
		return nil // the service checks the manifest's key
	case *ferryv1.DownloadRequest:
		return check(p, p.CanRead, "read", m.GetKey())
	case *ferryv1.StatObjectRequest:
		return check(p, p.CanRead, "read", m.GetKey())
	case *ferryv1.ListObjectsRequest:
		if !p.CanList(m.GetPrefix()) {
			return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("token %q may not list %q: give a prefix under one of %s", p.Name, m.GetPrefix(), quoteList(p.Read)))
		}
		return nil
	case *ferryv1.DeleteObjectRequest:
		return check(p, p.CanWrite, "delete", m.GetKey())
	}
	return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("token %q: request %T is not covered by token rights", p.Name, msg))
}

func check(p *Principal, can func(string) bool, verb, key string) error {
	if can(key) {
		return nil
	}
	return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("token %q may not %s %q", p.Name, verb, key))
}

func quoteList(prefixes []string) string {
	if len(prefixes) == 0 {
		return "(none: the token may not read)"
	}
	q := make([]string, len(prefixes))
	for i, p := range prefixes {
		q[i] = fmt.Sprintf("%q", p)
	}
	return strings.Join(q, ", ")
}
