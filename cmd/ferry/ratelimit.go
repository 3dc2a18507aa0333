package main

import (
	"context"
	"io"
	"net/http"

	"golang.org/x/time/rate"
)

// rateLimitBurst is the most bytes a rate-limited body reads at once, and
// so how far ahead of the limit a transfer may run.
const rateLimitBurst = 256 << 10

// rateLimited is an HTTP transport whose request bodies (uploads) and
// response bodies (downloads) share one limit of bytes per second
// (--limit-rate), over every request a command makes at once: the same
// place rclone's --bwlimit and curl's --limit-rate act, so a command's
// transfer rate is at most the limit whatever its concurrency. Bytes are
// counted as the HTTP body carries them (protocol framing of a few bytes
// per message included).
type rateLimited struct {
	next    http.RoundTripper
	limiter *rate.Limiter
}

// newRateLimited returns next limited to bytesPerSecond (> 0).
func newRateLimited(next http.RoundTripper, bytesPerSecond int64) *rateLimited {
	burst := int(min(bytesPerSecond, rateLimitBurst))
	return &rateLimited{next: next, limiter: rate.NewLimiter(rate.Limit(bytesPerSecond), burst)}
}

// RoundTrip implements http.RoundTripper.
func (t *rateLimited) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	if req.Body != nil && req.Body != http.NoBody {
		req = req.Clone(ctx)
		req.Body = &limitedReader{ReadCloser: req.Body, ctx: ctx, limiter: t.limiter}
	}
	res, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	res.Body = &limitedReader{ReadCloser: res.Body, ctx: ctx, limiter: t.limiter}
	return res, nil
}

// limitedReader waits, after each read, until the limiter allows the bytes
// read; reads are at most the limiter's burst.
type limitedReader struct {
	io.ReadCloser
	ctx     context.Context
	limiter *rate.Limiter
}

func (r *limitedReader) Read(p []byte) (int, error) {
	if b := r.limiter.Burst(); len(p) > b {
		p = p[:b]
	}
	n, err := r.ReadCloser.Read(p)
	if n > 0 {
		if werr := r.limiter.WaitN(r.ctx, n); werr != nil && err == nil {
			err = werr
		}
	}
	return n, err
}
