package integration

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/wire"
	"github.com/ferryhq/ferry/upload"
)

// The abuse suite attacks the real binary with the worst requests we could
// think of, class by class (docs/security.md lists them with what ferry
// does), and checks that the server's peak RSS stays within the bound that
// docs/security.md states for its flags:
//
//	peak RSS <= 64 MiB + 3 × max-inflight-bytes + 4 MiB × max-streams
//	            + 1 MiB × max-connections
//
// Each server here runs with small limits, so that the bound is tight and
// an attack that escaped the limits would cross it by far: every attack
// below, unbounded, would take the server past 500 MiB.
const (
	abuseInflight    = 32 * MiB
	abuseStreams     = 8
	abuseConnections = 48
	abuseMaxChunk    = 16 * MiB
)

// abuseBound is docs/security.md's bound on peak RSS for an abuse server
// with conns as --max-connections.
func abuseBound(conns int) int64 {
	return 64*MiB + 3*abuseInflight + 4*MiB*abuseStreams + 1*MiB*int64(conns)
}

// abuseProcedures are every RPC path the server answers: ferry's, health
// checks and reflection.
var abuseProcedures = func() []string {
	var out []string
	for _, p := range wire.Procedures {
		out = append(out, p.Name)
	}
	return append(out,
		"/grpc.health.v1.Health/Check",
		"/grpc.health.v1.Health/Watch",
		"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
		"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
	)
}()

// startAbuseServer starts a server on the disk store with the abuse
// limits, tokens (alice writes team-a/, reader reads it) and metrics, and
// returns it with its metrics address.
func startAbuseServer(t *testing.T, extra ...string) (*server, string) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("peak RSS is read from /proc")
	}
	metrics := freeLoopbackAddr(t)
	args := append([]string{"--data", t.TempDir(), "--token-file", writeTokenFile(t),
		"--max-inflight-bytes", strconv.Itoa(abuseInflight), "--max-chunk-size", strconv.Itoa(abuseMaxChunk),
		"--chunk-size", "8MiB", "--max-streams", strconv.Itoa(abuseStreams),
		"--max-connections", strconv.Itoa(abuseConnections), "--metrics-addr", metrics,
		"--limit-wait", "30s"}, extra...)
	return startServer(t, args...), metrics
}

// checkRSS fails the test when the server's peak RSS is over the bound of
// a server with conns as --max-connections (0: abuseConnections), and
// logs it.
func checkRSS(t *testing.T, srv *server, what string, conns int) int64 {
	t.Helper()
	bound := abuseBound(cmp.Or(conns, abuseConnections))
	rss := peakRSS(t, srv.cmd.Process.Pid)
	t.Logf("%s: server peak RSS %.1f MiB (bound %d MiB)", what, float64(rss)/MiB, bound/MiB)
	if rss > bound {
		t.Errorf("%s: server peak RSS %.1f MiB is over the documented bound of %d MiB", what, float64(rss)/MiB, bound/MiB)
	}
	return rss
}

// gzipBomb returns a gzip stream (several members, as gzip allows) of n
// zero bytes, about n/1000 bytes long.
func gzipBomb(t testing.TB, n int) []byte {
	t.Helper()
	var member bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&member, gzip.BestCompression)
	if _, err := zw.Write(make([]byte, MiB)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return bytes.Repeat(member.Bytes(), n/MiB)
}

// frame returns payload as one enveloped message with flags.
func frame(flags byte, payload []byte) []byte {
	return append(binary.BigEndian.AppendUint32([]byte{flags}, uint32(len(payload))), payload...)
}

// rawCall is one hand-made request and how to send it.
type rawCall struct {
	kind         string // what it is, for the answers' tally
	method, path string
	header       http.Header
	body         func() io.Reader // nil: none
	h2c          bool
}

// do sends c to base and returns a short description of the answer: its
// kind, the HTTP status and the grpc-status, or that the transport failed
// (the server cut the request off).
func (c rawCall) do(ctx context.Context, hc *http.Client, base string) string {
	var body io.Reader
	if c.body != nil {
		body = c.body()
	}
	req, err := http.NewRequestWithContext(ctx, c.method, base+c.path, body)
	if err != nil {
		return "request: " + err.Error()
	}
	for k, v := range c.header {
		req.Header[k] = v
	}
	res, err := hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL, which names the port
		}
		return c.kind + " cut off: " + err.Error()
	}
	b, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	res.Body.Close()
	if err != nil {
		return c.kind + " cut off" // mid-answer
	}
	status := res.Header.Get("Grpc-Status") + res.Trailer.Get("Grpc-Status")
	if c.kind == "connect-stream" && res.StatusCode == http.StatusOK && connectStreamFailed(b) {
		status = "error" // in the end-of-stream message
	}
	answer := fmt.Sprintf("%s %d/%s", c.kind, res.StatusCode, status)
	if succeeded(answer) {
		answer += " " + strings.SplitN(c.path, "?", 2)[0] + ": " + strings.ToValidUTF8(string(b[:min(len(b), 200)]), "?")
	}
	return answer
}

// connectStreamFailed reports whether a Connect streaming response body
// ends with an end-of-stream message (flag 2) that carries an error; it
// may be gzipped (flag 1).
func connectStreamFailed(body []byte) bool {
	for len(body) >= 5 {
		flags, size := body[0], int(binary.BigEndian.Uint32(body[1:5]))
		if len(body) < 5+size {
			return false
		}
		msg := body[5 : 5+size]
		body = body[5+size:]
		if flags&2 == 0 {
			continue
		}
		if flags&1 != 0 {
			zr, err := gzip.NewReader(bytes.NewReader(msg))
			if err != nil {
				return false
			}
			if msg, err = io.ReadAll(zr); err != nil {
				return false
			}
		}
		return bytes.Contains(msg, []byte(`"error"`))
	}
	return false
}

// succeeded reports whether an answer of rawCall.do is a success: gRPC
// status 0, or HTTP 200 of a Connect call without an error.
func succeeded(answer string) bool {
	kind, rest, _ := strings.Cut(answer, " ")
	status, _, _ := strings.Cut(rest, " ")
	return status == "200/0" || strings.HasPrefix(kind, "connect-") && status == "200/"
}

// abuseClients are the HTTP clients of the attacks: h2c and HTTP/1.1, each
// on connections of its own.
type abuseClients struct{ h2c, h1 *http.Client }

func newAbuseClients(t *testing.T) abuseClients { return newAbuseClientsN(t, abuseConnections/2) }

// newAbuseClientsN is newAbuseClients with at most h1 HTTP/1.1 connections.
func newAbuseClientsN(t *testing.T, h1 int) abuseClients {
	h2 := new(http.Protocols)
	h2.SetUnencryptedHTTP2(true)
	p1 := new(http.Protocols)
	p1.SetHTTP1(true)
	c := abuseClients{
		h2c: &http.Client{Transport: &http.Transport{Protocols: h2}},
		h1:  &http.Client{Transport: &http.Transport{Protocols: p1, MaxConnsPerHost: h1}},
	}
	t.Cleanup(func() {
		c.h2c.CloseIdleConnections()
		c.h1.CloseIdleConnections()
	})
	return c
}

// fire sends every call n times at once and waits for all answers,
// returning how many of each answer came.
func (ac abuseClients) fire(ctx context.Context, base string, n int, calls []rawCall) map[string]int {
	var mu sync.Mutex
	answers := map[string]int{}
	var wg sync.WaitGroup
	for _, c := range calls {
		hc := ac.h1
		if c.h2c {
			hc = ac.h2c
		}
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a := c.do(ctx, hc, base)
				mu.Lock()
				answers[a]++
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	return answers
}

// bombCalls are decompression bombs of 512 MiB (about 520 KB on the wire)
// for every procedure, over gRPC (h2c), gRPC-Web and Connect, with the
// given token ("" for none): gzip-flagged enveloped messages, unary Connect
// bodies with Content-Encoding: gzip, and Connect GET requests carrying a
// gzip message in the URL.
func bombCalls(t *testing.T, token string) []rawCall {
	bomb := gzipBomb(t, 512*MiB)
	small := gzipBomb(t, 16*MiB) // fits in a URL
	var calls []rawCall
	for _, path := range abuseProcedures {
		auth := http.Header{}
		if token != "" {
			auth.Set("Authorization", "Bearer "+token)
		}
		with := func(kv ...string) http.Header {
			h := auth.Clone()
			for i := 0; i < len(kv); i += 2 {
				h.Set(kv[i], kv[i+1])
			}
			return h
		}
		enveloped := func() io.Reader { return bytes.NewReader(frame(1, bomb)) }
		calls = append(calls,
			rawCall{kind: "grpc", method: "POST", path: path, h2c: true, body: enveloped,
				header: with("Content-Type", "application/grpc", "Grpc-Encoding", "gzip", "Te", "trailers")},
			rawCall{kind: "grpcweb", method: "POST", path: path, body: enveloped,
				header: with("Content-Type", "application/grpc-web+proto", "Grpc-Encoding", "gzip")},
			rawCall{kind: "connect-stream", method: "POST", path: path, body: enveloped,
				header: with("Content-Type", "application/connect+proto", "Connect-Content-Encoding", "gzip")},
			rawCall{kind: "connect-unary", method: "POST", path: path, body: func() io.Reader { return bytes.NewReader(bomb) },
				header: with("Content-Type", "application/proto", "Content-Encoding", "gzip")},
			rawCall{kind: "connect-get", method: "GET", path: path + "?" + url.Values{
				"encoding": {"proto"}, "compression": {"gzip"}, "base64": {"1"},
				"message": {base64.RawURLEncoding.EncodeToString(small)},
			}.Encode(), header: auth},
		)
	}
	return calls
}

// TestAbuseDecompressionBombs: gzip bombs of 512 MiB on every procedure,
// every protocol, with no token and with a valid one, 2 at a time each:
// all refused (unauthenticated, resource_exhausted, or a URL too long),
// and the server's memory stays within its bound.
func TestAbuseDecompressionBombs(t *testing.T) {
	t.Parallel()
	srv, _ := startAbuseServer(t)
	ac := newAbuseClients(t)
	ctx := t.Context()
	for _, token := range []string{"", aliceToken} {
		answers := ac.fire(ctx, srv.url, 2, bombCalls(t, token))
		t.Logf("token %q: answers %v", token, answers)
		for a := range answers {
			if succeeded(a) {
				t.Errorf("token %q: a bomb was answered %q: success", token, a)
			}
		}
	}
	checkRSS(t, srv, "decompression bombs", 0)
	assertStillServes(t, srv)
}

// assertStillServes uploads an object of two chunks through srv as bob
// (no attack uses bob's token) and stats it: the server still does its
// job, for others, during or after the attack.
func assertStillServes(t *testing.T, srv *server) {
	t.Helper()
	cl := newSecClients(secHTTPClient(t, "grpc"), srv.url, "grpc", bobToken)
	data := patternReader{seed: 77, size: 9 * MiB}
	obj, err := upload.NewUploader(cl.upload, upload.UploaderOptions{ChunkSize: 8 * MiB}).Upload(t.Context(), "team-b/still-served", data, data.size, upload.ObjectOptions{})
	if err != nil || obj.GetSize() != data.size || obj.GetCrc32C() != data.crc() {
		t.Fatalf("an upload beside or after the attack: %v", err)
	}
	if _, err := cl.objects.StatObject(t.Context(), connect.NewRequest(&ferryv1.StatObjectRequest{Key: "team-b/still-served"})); err != nil {
		t.Fatalf("stat beside or after the attack: %v", err)
	}
}

// zeros is an endless reader of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestAbuseLargeBodies: bodies of 300 MB, sent as fast as loopback goes, to
// every procedure, to health checks and reflection, to an unknown path, to
// the page, and to the metrics port: with no token and a valid one, as one
// message, as a prefix that declares 4 GiB, and as a body of unknown length
// (HTTP/1.1 chunked). The server reads at most each procedure's limit of
// each, and its memory stays within its bound.
func TestAbuseLargeBodies(t *testing.T) {
	t.Parallel()
	srv, metrics := startAbuseServer(t)
	ac := newAbuseClients(t)
	ctx := t.Context()
	const size = 300e6
	body := func() io.Reader { return io.LimitReader(zeros{}, size) }
	lying := func() io.Reader {
		return io.MultiReader(bytes.NewReader([]byte{0, 0xff, 0xff, 0xff, 0xff}), io.LimitReader(zeros{}, size))
	}
	var calls []rawCall
	for _, token := range []string{"", aliceToken} {
		h := func(ct string) http.Header {
			hd := http.Header{"Content-Type": {ct}}
			if token != "" {
				hd.Set("Authorization", "Bearer "+token)
			}
			return hd
		}
		for _, path := range append(abuseProcedures, "/", "/app.js", "/ferry.v9.Nothing/Here", "/no/such/path") {
			calls = append(calls,
				rawCall{kind: "grpc-lying", method: "POST", path: path, h2c: true, body: lying, header: h("application/grpc")},
				rawCall{kind: "connect-unary", method: "POST", path: path, body: body, header: h("application/proto")},
				// Unknown length (chunked): the zeros read as empty messages.
				rawCall{kind: "grpcweb-chunked", method: "POST", path: path, body: func() io.Reader { return struct{ io.Reader }{body()} }, header: h("application/grpc-web+proto")},
			)
		}
	}
	answers := ac.fire(ctx, srv.url, 1, calls)
	t.Logf("answers: %v", answers)
	metricsAnswers := ac.fire(ctx, "http://"+metrics, 2, []rawCall{
		{kind: "metrics-post", method: "POST", path: "/metrics", body: body},
		{kind: "metrics-get", method: "GET", path: "/metrics", body: body},
		{kind: "pprof-put", method: "PUT", path: "/debug/pprof/", body: body},
	})
	t.Logf("metrics port answers: %v", metricsAnswers)
	checkRSS(t, srv, "large bodies", 0)
	assertStillServes(t, srv)
}

// TestAbuseHoldingStreams: clients that hold what they can: as many
// connections as the server allows (and more), each with streams opening
// an Upload whose chunk prefix declares the largest message and then
// sending nothing, or trickling, all with headers near the largest allowed
// size; with every token, and none. Another token's upload is still
// served meanwhile (connections without a request in progress give their
// place to new ones), and memory stays within its bound. (That a token
// holding its share cannot hold back another's uploads is
// TestAbuseFairShare.)
func TestAbuseHoldingStreams(t *testing.T) {
	t.Parallel()
	srv, metrics := startAbuseServer(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	header, err := proto.Marshal(headerMsg("team-a/held", 10*MiB))
	if err != nil {
		t.Fatal(err)
	}
	opened := atomic.Int64{}
	var wg sync.WaitGroup
	padding := strings.Repeat("x", 24<<10) // with the rest, just under the 32 KiB header limit
	for conn := range abuseConnections + 8 {
		token := []string{"", aliceToken, readerToken}[conn%3]
		p := new(http.Protocols)
		p.SetUnencryptedHTTP2(true)
		hc := &http.Client{Transport: &http.Transport{Protocols: p}}
		defer hc.CloseIdleConnections()
		for stream := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pr, pw := io.Pipe()
				defer pw.Close()
				req, err := http.NewRequestWithContext(ctx, "POST", srv.url+"/ferry.v1.UploadService/Upload", pr)
				if err != nil {
					return
				}
				req.Header.Set("Content-Type", "application/grpc")
				req.Header.Set("X-Padding", padding)
				if token != "" {
					req.Header.Set("Authorization", "Bearer "+token)
				}
				go func() {
					prefix := binary.BigEndian.AppendUint32([]byte{0}, abuseMaxChunk+1<<20)
					if _, err := pw.Write(append(frame(0, header), prefix...)); err != nil {
						return
					}
					opened.Add(1)
					if stream%2 == 0 {
						return // then nothing: stalled
					}
					for ctx.Err() == nil { // trickle
						if _, err := pw.Write([]byte{0}); err != nil {
							return
						}
						select {
						case <-ctx.Done():
						case <-time.After(100 * time.Millisecond):
						}
					}
				}()
				if res, err := hc.Do(req); err == nil {
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
				}
			}()
		}
	}
	// Until alice's uploads in flight (--max-uploads-per-token, 16) have
	// sent their prefixes; the others are refused from their headers (no
	// token, or reader's, which may not write). Then another token's upload
	// still gets a connection (idle ones give up their place) and is
	// served.
	waitFor(t, nil, time.Minute, "alice's held streams to open", func() bool { return opened.Load() >= 16 })
	assertStillServes(t, srv)
	checkRSS(t, srv, "held streams", 0)
	// More connections were opened than the server serves: the metrics
	// say it stayed at its limit and made room by closing idle ones.
	m := scrapeMetrics(t, metrics)
	if n := m.sum("ferry_http_connections"); n > abuseConnections {
		t.Errorf("ferry_http_connections = %v, over --max-connections %d", n, abuseConnections)
	}
	if n := m.sum("ferry_http_connections_evicted_total"); n == 0 {
		t.Errorf("no connection counted as evicted, with %d connections opened against --max-connections %d", abuseConnections+8, abuseConnections)
	}
	cancel()
	wg.Wait()
}

// TestAbuseFairShare: one token (alice) opens as many uploads as it may
// (--max-uploads-per-token), each announcing the largest chunk and then
// stalling, so that it holds every stream place and byte of the budget it
// can; a read-only token (reader) tries the same and is refused from its
// headers. Another token's upload (bob) still goes through beside them:
// alice's share of the stream places and of the budget is below the
// server's whole.
func TestAbuseFairShare(t *testing.T) {
	t.Parallel()
	srv, _ := startAbuseServer(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	header, err := proto.Marshal(headerMsg("team-a/held", 10*MiB))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var refused atomic.Int64
	for i := range 2 * 16 { // --max-uploads-per-token is 16
		token := []string{aliceToken, readerToken}[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			pw, done := rawGRPCUpload(t, ctx, srv.url, token)
			defer pw.Close()
			prefix := binary.BigEndian.AppendUint32([]byte{0}, abuseMaxChunk+1<<20)
			_, _ = pw.Write(append(frame(0, header), prefix...))
			select {
			case r := <-done:
				if r.status == strconv.Itoa(int(connect.CodePermissionDenied)) || r.status == strconv.Itoa(int(connect.CodeResourceExhausted)) {
					refused.Add(1)
				}
			case <-ctx.Done():
			}
		}()
	}
	waitFor(t, nil, time.Minute, "the reader's uploads to be refused", func() bool { return refused.Load() >= 16 })
	assertStillServes(t, srv)
	checkRSS(t, srv, "one token holding its share", 0)
	cancel()
	wg.Wait()
}

// TestAbuseMix: everything at once on one server, while two tokens upload
// in earnest: decompression bombs and 300 MB bodies on every path, lying
// prefixes, stalled and trickling uploads, read-only and invalid tokens,
// and raw HTTP/2 connections that make the server read the largest frames
// it allows. The legitimate uploads all succeed (the attacks cost them
// time, not data), and the server's peak RSS stays within its bound.
func TestAbuseMix(t *testing.T) {
	t.Parallel()
	srv, _ := startAbuseServer(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ac := newAbuseClients(t)
	var wg sync.WaitGroup
	run := func(f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	// The legitimate work: 4 uploads of 3 chunks each by two tokens.
	errs := make(chan error, 8)
	for i := range 8 {
		token, key := aliceToken, fmt.Sprintf("team-a/mix-%d", i)
		if i%2 == 1 {
			token, key = bobToken, fmt.Sprintf("team-b/mix-%d", i)
		}
		run(func() {
			cl := newSecClients(secHTTPClient(t, "grpc"), srv.url, "grpc", token)
			data := patternReader{seed: uint64(100 + i), size: 20 * MiB}
			obj, err := upload.NewUploader(cl.upload, upload.UploaderOptions{ChunkSize: 8 * MiB}).Upload(ctx, key, data, data.size, upload.ObjectOptions{})
			if err == nil && (obj.GetSize() != data.size || obj.GetCrc32C() != data.crc()) {
				err = fmt.Errorf("stored %d bytes, crc32c %08x; want %d, %08x", obj.GetSize(), obj.GetCrc32C(), data.size, data.crc())
			}
			if err != nil {
				err = fmt.Errorf("%s: %w", key, err)
			}
			errs <- err
		})
	}
	// The attacks.
	for _, token := range []string{"", aliceToken, readerToken, wrongToken} {
		run(func() { ac.fire(ctx, srv.url, 1, bombCalls(t, token)) })
	}
	body := func() io.Reader { return io.LimitReader(zeros{}, 300e6) }
	var large []rawCall
	for _, path := range abuseProcedures {
		large = append(large,
			rawCall{kind: "grpc", method: "POST", path: path, h2c: true, body: body, header: http.Header{"Content-Type": {"application/grpc"}, "Authorization": {"Bearer " + aliceToken}}},
			rawCall{kind: "connect-unary", method: "POST", path: path, body: body, header: http.Header{"Content-Type": {"application/proto"}}})
	}
	run(func() { ac.fire(ctx, srv.url, 1, large) })
	for range 8 {
		run(func() { h2Frames(ctx, srv.addr) })
	}
	var legit []error
	for range 8 {
		legit = append(legit, <-errs)
	}
	checkRSS(t, srv, "everything at once", 0)
	cancel()
	wg.Wait()
	for _, err := range legit {
		if err != nil {
			t.Errorf("a legitimate upload during the attacks: %v", err)
		}
	}
}

// h2Frames opens a raw HTTP/2 connection to addr and sends frames of an
// unknown type of 256 KiB (the largest the server reads, which it must
// ignore) until ctx ends or the server closes the connection: the server
// holds a frame buffer of that size for the connection.
func h2Frames(ctx context.Context, addr string) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return
	}
	defer c.Close()
	go func() { <-ctx.Done(); c.Close() }()
	go func() { _, _ = io.Copy(io.Discard, c) }()
	if _, err := io.WriteString(c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"); err != nil {
		return
	}
	frameHeader := func(length int, typ byte) []byte {
		return []byte{byte(length >> 16), byte(length >> 8), byte(length), typ, 0, 0, 0, 0, 0}
	}
	if _, err := c.Write(frameHeader(0, 0x4)); err != nil { // empty SETTINGS
		return
	}
	payload := make([]byte, 256<<10)
	for ctx.Err() == nil {
		if _, err := c.Write(append(frameHeader(len(payload), 0xfe), payload...)); err != nil {
			return
		}
	}
}

// TestAbuseHeaderFlood: headers as large as allowed on many requests at
// once, headers over the limit (refused with 431, or the stream reset),
// and HTTP/2 connections that send a HEADERS frame followed by
// CONTINUATION frames without end (the server must stop reading them once
// they pass the limit): memory stays within its bound, and the server then
// serves.
func TestAbuseHeaderFlood(t *testing.T) {
	t.Parallel()
	// Room for every connection the clients here open (Go's HTTP/2 client
	// opens several for many requests at once): at the limit, the server
	// closes idle ones to make room (TestAbuseHoldingStreams), and only
	// requests marked idempotent (below) are retried on a new one.
	srv, metrics := startAbuseServer(t, "--max-connections", "128")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ac := newAbuseClients(t)
	// StatObject is idempotent, and saying so lets Go's transport retry a
	// request that found its keep-alive connection closed by the server
	// (RFC 9110 §9.2.2), as a client of a server at --max-connections
	// must: on a busy machine the clients here have opened more
	// connections than counted above, and the server then closed idle
	// ones (5 of 64 requests were cut off so in one CI run; the eviction
	// count is logged below).
	near := http.Header{"Content-Type": {"application/proto"}, "Authorization": {"Bearer " + aliceToken},
		"Idempotency-Key": {"header-flood"}}
	for i := range 6 {
		near.Set(fmt.Sprintf("X-Pad-%d", i), strings.Repeat("p", 4<<10))
	}
	over := near.Clone()
	over.Set("X-Pad-Big", strings.Repeat("q", 64<<10))
	msg, err := proto.Marshal(&ferryv1.StatObjectRequest{Key: "team-a/none"})
	if err != nil {
		t.Fatal(err)
	}
	stat := func() io.Reader { return bytes.NewReader(msg) }
	call := func(kind string, h2 bool, h http.Header) rawCall {
		return rawCall{kind: kind, method: "POST", path: "/ferry.v1.ObjectService/StatObject", h2c: h2, header: h, body: stat}
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() { defer wg.Done(); h2Continuations(ctx, srv.addr) }()
	}
	// Requests over the limit on clients of their own: a refusal may close
	// their connection.
	overClients := newAbuseClientsN(t, 4)
	var overAnswers map[string]int
	wg.Add(1)
	go func() {
		defer wg.Done()
		overAnswers = overClients.fire(ctx, srv.url, 4, []rawCall{call("over-h1", false, over), call("over-h2", true, over)})
	}()
	answers := ac.fire(ctx, srv.url, 64, []rawCall{call("near-h1", false, near), call("near-h2", true, near)})
	t.Logf("answers: %v; connections evicted: %v", answers,
		scrapeMetrics(t, metrics).sum("ferry_http_connections_evicted_total"))
	for _, kind := range []string{"near-h1", "near-h2"} {
		if n := answers[kind+" 404/"]; n != 64 { // StatObject of a missing key
			t.Errorf("%d of 64 requests %s with headers near the limit were answered not_found: %v", n, kind, answers)
		}
	}
	checkRSS(t, srv, "header flood", 128)
	cancel()
	wg.Wait()
	t.Logf("answers over the limit: %v", overAnswers)
	for a, n := range overAnswers {
		if succeeded(a) || strings.Contains(a, " 404/") {
			t.Errorf("%d requests with headers over the limit were served: %q", n, a)
		}
	}
	assertStillServes(t, srv)
}

// h2Continuations opens a raw HTTP/2 connection to addr and sends the
// start of a request's headers followed by CONTINUATION frames of 16 KiB,
// never ending them, until the server closes the connection or ctx ends.
func h2Continuations(ctx context.Context, addr string) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return
	}
	defer c.Close()
	go func() { <-ctx.Done(); c.Close() }()
	go func() { _, _ = io.Copy(io.Discard, c) }()
	frameHeader := func(length int, typ, flags byte) []byte {
		return []byte{byte(length >> 16), byte(length >> 8), byte(length), typ, flags, 0, 0, 0, 1}
	}
	out := []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	out = append(out, 0, 0, 0, 0x4, 0, 0, 0, 0, 0) // empty SETTINGS on stream 0
	// HEADERS on stream 1 with a literal header field, no END_HEADERS.
	block := []byte{0x00, 0x01, 'x', 0x7f, 0x81, 0x7f} // the value's length continues below
	out = append(append(out, frameHeader(len(block), 0x1, 0)...), block...)
	if _, err := c.Write(out); err != nil {
		return
	}
	pad := bytes.Repeat([]byte{'c'}, 16<<10)
	for ctx.Err() == nil {
		if _, err := c.Write(append(frameHeader(len(pad), 0x9, 0), pad...)); err != nil {
			return
		}
	}
}
